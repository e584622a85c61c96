// SPDX-License-Identifier: MIT
// What a training step reads on the host, counted on the recording policy (the Eigen policy
// counting every call whose result is a host value, with content stamps as the CUDA policy
// has them): each such read is a wait for the queue on a device back end. With deferred
// checks (failure_policy::check_every) a step of Meta-Weight-Net, the teacher, LFM, LFM-CW,
// the learned class weights, L2RW and DARTS in both orders reads nothing. And how many
// operations (a device's kernels, cuBLAS calls and copies) a step asks for, and that every
// iteration asks for the same sequence.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstddef>
#include <map>
#include <string>
#include <vector>

#include <bilevel/methods/meta_weight_net.hpp>

#include "cuda/method_cases.hpp"
#include "host_math.hpp"
#include "recording_policy.hpp"
#include "toy_data.hpp"

namespace {

using R = test::recording_policy;
static_assert(bilevel::has_graph_capture<R>);
static_assert(!bilevel::has_graph_capture<bilevel::policy::eigen<double>>);

auto small_mwn() {
  return bilevel::methods::meta_weight_net<R>(
      test::toy_classes(200, 1).data, test::toy_classes(30, 2).data,
      {.widths = {8, 6, 3}, .batch = 10, .validation_batch = 10, .lr = 0.05, .hidden = 5, .seed = 3});
}

}  // namespace

TEST_CASE("host reads: a Meta-Weight-Net step reads nothing with deferred checks; one read every check_every") {
  auto immediate = small_mwn(), deferred = small_mwn();
  deferred.on_failure({.check_every = 4});
  immediate.run(2);
  deferred.run(2);  // the end of run() reads what is pending
  test::host_reads().clear();
  immediate.iterate();
  const std::size_t immediate_reads = test::total_host_reads();
  // Immediate checks read the finiteness of the response, of both levels' (hyper)gradients
  // and parameters, and the losses of both steps.
  CHECK(test::host_reads()["all_finite"] == 5);
  CHECK(test::host_reads()["dot"] == 2);
  // Content stamps keep the networks' caches from comparing θ, batches and weights by value
  // (15 comparisons per step without them).
  CHECK(test::host_reads()["equal"] == 0);
  CHECK(immediate_reads == 7);
  test::host_reads().clear();
  deferred.iterate();  // outer iteration 2: no read due
  CHECK(test::total_host_reads() == 0);
  deferred.iterate();  // iteration 3 completes four: one read of the log
  CHECK(test::host_reads()["to_host"] == 1);
  CHECK(test::total_host_reads() == 1);
  MESSAGE("host reads per Meta-Weight-Net outer iteration: " << immediate_reads << " with immediate checks, 0 deferred");
}

TEST_CASE("operations: the fused primitives keep a Meta-Weight-Net step to its count") {
  auto mwn = small_mwn();
  mwn.on_failure({.check_every = 100});
  mwn.run(2);
  test::operations().clear();
  mwn.iterate();
  auto ops = test::operations();
  // The look-ahead (virtual) step, its VJP and the real step are one zip_apply each, both
  // heads' value passes one softmax_cross_entropy each, and each bias before an activation (the
  // classifier's hidden layer, the weighting net's two layers) is added in that activation's
  // pass, its gradient summed in the pass of that activation's adjoint; the hypergradient's
  // mixed product is written into its output, not added to a zero fill, and a network without
  // mixed operations asks for no empty ∂L/∂α. The same iteration with the composed forms (the
  // library before these primitives) asked for 193 operations.
  CHECK(ops["zip_apply"] >= 3);
  CHECK(ops["softmax_cross_entropy"] == 2);
  CHECK(ops["segment"] == 0);  // no bias or weight copied out of θ
  CHECK(ops["add_segment_row_map"] >= 6);
  CHECK(ops["add_segment_row"] <= 3);             // the classifier's output layer, once per value pass
  CHECK(ops["map_column_sums_into_segment"] >= 4);  // both weighting-net layers' VJPs, the hidden layer's backward passes
  CHECK(ops["column_sums_into_segment"] <= 3);    // the output layer's, once per backward pass
  CHECK(ops["axpy"] <= 1);
  CHECK(test::total_operations() <= 85);
  std::string breakdown;
  for (const auto& [name, count] : ops) breakdown += " " + name + " " + std::to_string(count);
  MESSAGE("operations per Meta-Weight-Net outer iteration: " << test::total_operations()
                                                             << " (193 before the fused primitives):" << breakdown);
}

#ifndef BILEVEL_TEST_SOLVERS_ON_EIGEN_ONLY  // every method once more: the release pass only (tests/policies.hpp)
TEST_CASE("operations: each method's outer iteration asks for the same sequence every time") {
  // What a captured CUDA graph would replay: the host code takes the same path through the
  // policy every iteration (no data-dependent branch), so two iterations' logs are equal.
  for (auto k : cuda_test::all_methods) {
    CAPTURE(std::string(cuda_test::name(k)));
    std::vector<std::string> log;
    int marks = 0;
    cuda_test::method_run<R>(
        k, 3,
        [&] {
          if (marks++ == 0) {
            test::operation_log().clear();
            test::log_operations() = true;
          } else {
            test::log_operations() = false;
            log = test::operation_log();
          }
        },
        100);
    REQUIRE(log.size() % 2 == 0);
    const auto half = std::ptrdiff_t(log.size() / 2);
    CHECK(std::equal(log.begin(), log.begin() + half, log.begin() + half));
    MESSAGE(std::string(cuda_test::name(k)) << ": " << half << " operations per outer iteration");
  }
}


TEST_CASE("host reads: every method's deferred steps read nothing, with the host policies' results") {
  for (auto k : cuda_test::all_methods) {
    CAPTURE(std::string(cuda_test::name(k)));
    std::map<std::string, std::size_t> reads;
    int marks = 0;
    // Three iterations, the checks read every 100: the two after the first read nothing.
    // L2RW's weight rule normalises by a sum, and second-order DARTS's finite difference sizes
    // its step by ‖v‖: both kept in one-entry vectors here (core/entry_scalars.hpp).
    const auto device = cuda_test::method_run<R>(
        k, 3,
        [&] {
          if (marks++ == 0) test::host_reads().clear();
          else reads = test::host_reads();
        },
        100);
    std::size_t total = 0;
    for (const auto& [name, count] : reads) total += count;
    CHECK(total == 0);
    // Captured as graphs (solver::capture_steps): the first iteration is the probe, the other
    // two are captured, and a read inside them would have thrown; the results are the same.
    bilevel::step_capture_report report;
    const auto captured = cuda_test::method_run<R>(k, 3, {}, 100, &report);
    CHECK(report.fallback == "");
    CHECK(report.plain_steps == 1);
    CHECK(report.captured_steps == 2);
    CHECK(report.instantiations == 1);
    CHECK(report.updates == 1);
    CHECK(captured == device);
    // The same run on the Eigen policy, whose reads are free and whose scalars are host
    // doubles: the same arithmetic up to the order of a sum (1e-9: tests/cuda's bound for
    // these runs against Eigen; the finite difference divides round-off by ε ≈ 1e-4/‖v‖).
    // Capture requested there too: the Eigen policy has no graphs, and says so.
    const auto host = cuda_test::method_run<bilevel::policy::eigen<double>>(k, 3, {}, 1, &report);
    CHECK(report.fallback.find("no device graph") != std::string::npos);
    CHECK(report.plain_steps == 3);
    REQUIRE(device.size() == host.size());
    for (std::size_t level = 0; level < host.size(); ++level) {
      CAPTURE(level);
      CHECK(test::relative_error(device[level], host[level]) <= 1e-9);
    }
  }
}
#endif

TEST_CASE("capture_steps: a step that reads back runs plainly and says why") {
  auto immediate = small_mwn(), plain = small_mwn();
  immediate.capture_steps();
  immediate.run(3);
  plain.run(3);
  const auto& r = immediate.capture_report();
  CHECK(r.requested);
  CHECK(r.captured_steps == 0);
  CHECK(r.plain_steps == 3);
  CHECK(r.fallback.find("waits for the device 7 times") != std::string::npos);
  CHECK(r.fallback.find("check_every") != std::string::npos);
  CHECK(R::to_host(immediate.level<0>().theta) == R::to_host(plain.level<0>().theta));
  // Deferred checks now: the next step is probed again, then captured.
  immediate.on_failure({.check_every = 4});
  immediate.run(3);
  CHECK(r.fallback == "");
  CHECK(r.plain_steps == 4);
  CHECK(r.captured_steps == 2);
}

TEST_CASE("step_capture: a read that appears after the probe throws from the capture, which is ended") {
  bilevel::step_capture<R> capture;
  bilevel::detail::no_stream stream;
  const auto v = R::zeros(3);
  int step = 0;
  auto reads_from_the_third_step = [&] {
    if (++step >= 3) (void)R::sum(v);
  };
  capture.request(true);
  capture.run(stream, reads_from_the_third_step);  // the probe: no read
  capture.run(stream, reads_from_the_third_step);  // captured
  CHECK(capture.report().captured_steps == 1);
  CHECK_THROWS_WITH_AS(capture.run(stream, reads_from_the_third_step),
                       doctest::Contains("read back inside a captured step"), std::logic_error);
  CHECK_FALSE(test::capturing());  // the capture was ended (aborted)
  CHECK(capture.report().captured_steps == 1);
  capture.request(false);
  capture.run(stream, reads_from_the_third_step);  // off: plain, the read allowed
  CHECK(step == 4);
}
