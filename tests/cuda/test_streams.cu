// SPDX-License-Identifier: MIT
// A stream per solver (policy/cuda/stream.cuh, core/policy_stream.hpp): each solver queues its
// work on its own stream, or on one the caller lends it; entering and leaving a stream orders
// it after and before the thread's other work; solvers on two threads at once give the
// results they give alone.
#include <doctest/doctest.h>

#include <bilevel/policy/cuda.hpp>

#include <cstddef>
#include <exception>
#include <set>
#include <thread>
#include <vector>

#include "cases.hpp"
#include "host_reference.hpp"
#include "method_cases.hpp"

namespace {
using C64 = bilevel::policy::cuda<double>;
using bilevel::policy::cuda_stream;
using bilevel::policy::cuda_stream_scope;
namespace cd = bilevel::policy::cuda_detail;

/// Every stream the solver's steps ran on, seen from its on_step callback.
template <class Solver>
std::set<cudaStream_t> streams_of_run(Solver& s, std::size_t iterations) {
  std::set<cudaStream_t> seen;
  s.run(iterations, {.on_step = [&](const bilevel::step_event&) { seen.insert(cd::stream()); }});
  return seen;
}
}  // namespace

static_assert(std::is_same_v<bilevel::policy_stream_t<C64>, cuda_stream>);
static_assert(std::is_same_v<bilevel::policy_stream_scope_t<C64>, cuda_stream_scope>);

TEST_CASE("cuda solver: each solver runs on a stream of its own, or on one it is lent") {
  auto a = cuda_test::toy_meta_weight_net<C64>();
  auto b = a;  // a copy: the same state, a stream of its own
  REQUIRE(cd::stream() == cudaStreamPerThread);
  const auto on_a = streams_of_run(a, 2);
  const auto on_b = streams_of_run(b, 2);
  REQUIRE(on_a.size() == 1);
  REQUIRE(on_b.size() == 1);
  CHECK(*on_a.begin() == a.stream().get());
  CHECK(*on_b.begin() == b.stream().get());
  CHECK(*on_a.begin() != *on_b.begin());
  CHECK(*on_a.begin() != cudaStreamPerThread);
  CHECK(cd::stream() == cudaStreamPerThread);  // the thread's own stream again after run()
  // Same state, same arithmetic on another stream: the same parameters.
  CHECK(cuda_test::relative_error(cuda_test::host<C64>(a.level<0>().theta), cuda_test::host<C64>(b.level<0>().theta)) <= 1e-12);

  cudaStream_t mine = nullptr;
  REQUIRE(cudaStreamCreate(&mine) == cudaSuccess);
  {
    auto c = cuda_test::toy_meta_weight_net<C64>();
    c.stream() = cuda_stream::borrow(mine);
    const auto on_c = streams_of_run(c, 1);
    REQUIRE(on_c.size() == 1);
    CHECK(*on_c.begin() == mine);
    CHECK_FALSE(c.stream().owned());
  }  // the solver goes; the lent stream stays the caller's
  CHECK(cudaStreamQuery(mine) != cudaErrorInvalidResourceHandle);
  CHECK(cudaStreamDestroy(mine) == cudaSuccess);
}

TEST_CASE("cuda_stream_scope: work on another stream is ordered after and before the thread's") {
  // Large enough that an unordered scale could overlap the fill (16 M doubles, ~100 µs each);
  // that a missing order does fail here has not been shown.
  constexpr std::size_t n = std::size_t(1) << 24;
  auto v = C64::zeros(n);
  cuda_stream other;
  for (int round = 0; round < 3; ++round) {
    C64::fill(v, 1.0);  // the thread's stream
    {
      const cuda_stream_scope on_other(other);
      CHECK(cd::stream() == other.get());
      C64::scale(v, 2.0);  // after the fill
      auto w = C64::zeros(n);  // made inside, freed inside: stream-ordered on `other`
      C64::axpy(1.0, v, w);
      C64::axpy(1.0, w, v);  // v = 4
      {
        const cuda_stream_scope again(other);  // nested, same stream: nothing changes
        CHECK(cd::stream() == other.get());
      }
      CHECK(cd::stream() == other.get());
    }
    CHECK(cd::stream() == cudaStreamPerThread);
    C64::scale(v, 0.5);  // after the scope's work: v = 2
    CHECK(C64::sum(v) == 2.0 * double(n));  // sums of small integers in double: exact in any order
  }
}

TEST_CASE("cuda solvers on two threads at once agree with the Eigen policy") {
  // Each thread has its own context (cuBLAS handle, scratch) and each solver its own stream.
  constexpr std::size_t iterations = 3;
  const cuda_test::method_kind kinds[] = {cuda_test::method_kind::lfm, cuda_test::method_kind::darts_second_order};
  std::vector<std::vector<std::vector<double>>> got(2);
  std::exception_ptr failed[2];
  {
    std::vector<std::thread> threads;
    for (int t = 0; t < 2; ++t)
      threads.emplace_back([&, t] {
        try {
          got[t] = cuda_test::method_run<C64>(kinds[t], iterations);
        } catch (...) {
          failed[t] = std::current_exception();
        }
      });
    for (auto& th : threads) th.join();
  }
  for (int t = 0; t < 2; ++t) {
    CAPTURE(std::string(cuda_test::name(kinds[t])));
    REQUIRE_FALSE(failed[t]);
    const auto want = cuda_test::eigen_reference::method_parameters(kinds[t], iterations);
    REQUIRE(got[t].size() == want.size());
    // As test_methods.cu: the same arithmetic up to summation order.
    for (std::size_t level = 0; level < want.size(); ++level) CHECK(cuda_test::relative_error(got[t][level], want[level]) <= 1e-9);
  }
}
