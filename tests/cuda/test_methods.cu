// SPDX-License-Identifier: MIT
// The other methods on the CUDA policy, instantiated unchanged: L2RW, the deep-interactions
// teacher, LFM (three levels), LFM-CW (three levels, synthetic data), learned class weights and
// DARTS in both orders, each run for three iterations against the same run on the Eigen
// policy (method_cases.hpp).
#include <doctest/doctest.h>

#include <bilevel/policy/cuda.hpp>

#include <string>
#include <vector>

#include "host_reference.hpp"
#include "method_cases.hpp"

TEST_CASE("cuda methods<double>: three iterations of each agree with the Eigen policy's") {
  using C64 = bilevel::policy::cuda<double>;
  constexpr std::size_t iterations = 3;
  for (auto k : cuda_test::all_methods) {
    CAPTURE(std::string(cuda_test::name(k)));
    const auto want = cuda_test::eigen_reference::method_parameters(k, iterations);
    const std::size_t maps = C64::host_transforms();
    std::vector<std::size_t> marks;  // array downloads after the first and after the last iteration
    const auto got = cuda_test::method_run<C64>(k, iterations, [&] { marks.push_back(C64::array_downloads()); });
    REQUIRE(marks.size() == 2);
    const std::size_t in_steps = marks[1] - marks[0];
    MESSAGE(std::string(cuda_test::name(k)) << ": " << in_steps << " array downloads in iterations 2-" << iterations);
    CHECK(C64::host_transforms() == maps);
    // Every method's weighting (L2RW's table and rule, the teacher, LFM's mistake weights,
    // LFM-CW's class weights, the learned class weights' softmax) and DARTS's mixed operations
    // run with the policy's operations: their steps copy no array to the host.
    CHECK(in_steps == 0);
    REQUIRE(got.size() == want.size());
    for (std::size_t level = 0; level < got.size(); ++level) {
      CAPTURE(level);
      // The same arithmetic up to summation order, through three steps of SGD and Adam
      // (DARTS's finite difference divides round-off by ε ≈ 0.01/‖v‖, still ≲ 1e-13): the
      // MWN comparison's bound, 1e-9, is far below any wrong term.
      CHECK(cuda_test::relative_error(got[level], want[level]) <= 1e-9);
    }
  }
}

TEST_CASE("cuda methods<double>: each method's steps captured as CUDA graphs give the plain launches' bits") {
  using C64 = bilevel::policy::cuda<double>;
  constexpr std::size_t iterations = 4;
  for (auto k : cuda_test::all_methods) {
    CAPTURE(std::string(cuda_test::name(k)));
    // Deferred checks (read every 100 iterations), so that no step reads back: the look-ahead,
    // virtual step, hypergradient and real step of every level are in each graph.
    const auto plain = cuda_test::method_run<C64>(k, iterations, {}, 100);
    bilevel::step_capture_report r;
    const auto launches = C64::activity().graph_launches;
    const auto captured = cuda_test::method_run<C64>(k, iterations, {}, 100, &r);
    MESSAGE(std::string(cuda_test::name(k)) << ": " << r.captured_steps << " steps captured, " << r.instantiations
                                            << " graphs instantiated, " << r.updates << " updated");
    CHECK(r.fallback == "");
    CHECK(r.captured_steps == iterations - 1);
    CHECK(C64::activity().graph_launches - launches == iterations - 1);
    CHECK(r.updates >= 1);
    CHECK(captured == plain);
  }
}
