// SPDX-License-Identifier: MIT
// Bilevel problems on the CUDA policy: the problem learners' products against central
// differences; ridge regression's hypergradient by every strategy against its closed form
// (bilevel/problems/ridge.hpp) and against the Eigen run; and a few Meta-Weight-Net
// iterations (bilevel/methods/meta_weight_net.hpp) against the same iterations on the Eigen
// policy.
#include <doctest/doctest.h>

#include <bilevel/policy/cuda.hpp>
#include <bilevel/problems/quadratic.hpp>
#include <bilevel/problems/weighted_logistic.hpp>

#include <vector>

#include "cases.hpp"
#include "derivatives.hpp"
#include "host_reference.hpp"

namespace {
using namespace cuda_test;
namespace hg = bilevel::hypergrad;
using C64 = bilevel::policy::cuda<double>;
using C32 = bilevel::policy::cuda<float>;
// The solver finds the CUDA policy's graph capture (else capture_steps would run plainly).
static_assert(bilevel::has_graph_capture<C32> && bilevel::has_graph_capture<C64>);
}  // namespace

TEST_CASE("cuda problems<double>: the problem learners' products against central differences") {
  // As tests/test_backends.cpp. Their element-wise maps (ridge.hpp's e^λ, weighted_logistic.hpp's
  // sigmoid and softplus) are core/elementwise.hpp's device-callable functors: none of them may
  // fall back to a host round trip (host_transforms() counts those).
  using P = C64;
  using namespace bilevel::problems;
  const std::size_t host_maps = P::host_transforms();
  const auto r = ridge_problem<P>::synthetic(20, 10, 5, 2, 0.5, 4);
  check_learner_derivatives(ridge_training_loss<P>(r.train), random_vector(5, 1), {random_vector(5, 2)}, {});
  check_learner_derivatives(quadratic_objective<P>(quadratic_spec::random(4, {3, 2}, 9)), random_vector(4, 1),
                            {random_vector(3, 2), random_vector(2, 3)}, {});
  const auto logistic = logistic_problem<P>::synthetic(20, 10, 4, 0.2, 6);
  auto w = random_vector(20, 2, 0.5);
  for (auto& x : w) x += 1.0;
  check_learner_derivatives(weighted_logistic_loss<P>(logistic.train, 0.05), random_vector(4, 1), {w}, {});
  CHECK(P::host_transforms() == host_maps);
}

TEST_CASE("cuda ridge<double>: implicit CG at the exact inner solution matches the closed form to 1e-8") {
  const auto prob = ridge<C64>();
  const auto lam = ridge_log_penalty();
  const auto closed = prob.hypergradient(lam);
  const auto [g, report] = ridge_hypergradient<C64>(prob, hg::implicit_cg{}, prob.solution(lam), 1);
  const double err = relative_error(g, closed);
  MESSAGE("cuda implicit_cg relative error vs closed form: " << err << "; " << report);
  // As tests/test_ridge_hypergradients.cpp: residual 1e-10 and κ ≈ 20 give ≤ 2e-9.
  CHECK(err <= 1e-8);
  CHECK(report.converged);
  CHECK(report.residual <= 1e-9);
  CHECK(report.exact_second_order);
  CHECK(report.iterations <= 8);
  // The Eigen run takes the same CG steps and differs by summation order; each stops at a
  // relative residual ≤ 1e-10, so with κ ≈ 20 each is within 2e-9 of the exact solve.
  CHECK(relative_error(g, eigen_reference::ridge_implicit_cg()) <= 5e-9);
}

TEST_CASE("cuda ridge<double>: every strategy against the closed form") {
  // Same setups and bounds as tests/test_backends.cpp.
  const auto prob = ridge<C64>();
  const auto lam = ridge_log_penalty();
  const auto closed = prob.hypergradient(lam);
  CHECK(relative_error(ridge_hypergradient<C64>(prob, hg::neumann{.iterations = 64}, prob.solution(lam), 1).first,
                       closed) <= 1e-8);
  CHECK(relative_error(ridge_hypergradient<C64>(prob, hg::fixed_point{}, prob.solution(lam), 1).first, closed) <= 1e-8);
  CHECK(relative_error(ridge_hypergradient<C64>(prob, hg::unrolled{}, std::vector<double>(8, 0.0), 640).first,
                       closed) <= 1e-8);
  CHECK(relative_error(ridge_hypergradient<C64>(prob, hg::forward_mode{}, std::vector<double>(8, 0.0), 640).first,
                       closed) <= 1e-8);
}

TEST_CASE("cuda ridge<float>: CG with exact products reaches float accuracy") {
  const auto prob = ridge<C32>();
  const auto lam = ridge_log_penalty();
  const auto [g, report] = ridge_hypergradient<C32>(prob, hg::implicit_cg{}, prob.solution(lam), 1);
  const double err = relative_error(g, prob.hypergradient(lam));
  MESSAGE("cuda<float> implicit_cg error: " << err << "; " << report);
  // As the CPU suite: κ·ε ≈ 1.2e-6 plus a few ε from the products.
  CHECK(err <= 1e-5);
}

TEST_CASE("cuda<float> with TF32 and BF16 GEMMs: each hypergradient's error against full float") {
  using bilevel::policy::gemm_precision;
  using bilevel::policy::gemm_precision_scope;
  // Ridge: its products are GEMVs, which stay FP32 under every setting: the same bits, for the
  // CG solve and for the unrolled steps alike.
  const auto prob = ridge<C32>();
  const auto lam = ridge_log_penalty();
  const auto cg = ridge_hypergradient<C32>(prob, hg::implicit_cg{}, prob.solution(lam), 1).first;
  const auto unrolled = ridge_hypergradient<C32>(prob, hg::unrolled{}, std::vector<double>(8, 0.0), 64).first;
  for (const auto p : {gemm_precision::tf32, gemm_precision::bf16}) {
    const gemm_precision_scope reduced(p);
    CHECK(C32::current_gemm_precision() == p);
    CHECK(ridge_hypergradient<C32>(prob, hg::implicit_cg{}, prob.solution(lam), 1).first == cg);
    CHECK(ridge_hypergradient<C32>(prob, hg::unrolled{}, std::vector<double>(8, 0.0), 64).first == unrolled);
  }
  CHECK(C32::current_gemm_precision() == gemm_precision::full);  // the scopes restored it
  // Meta-Weight-Net: the look-ahead hypergradient at the states of three full-float
  // iterations, computed there with full and with reduced-precision GEMMs (so that the error is
  // the hypergradient's own, not a drift of the run). Bound: 32 units of the format's rounding
  // (TF32 2^-11, BF16 2^-8, per input element), relative to the hypergradient's norm. A GEMM of
  // K terms with both inputs rounded is off by up to 2u Σ|a_ik b_kj| per entry; here K ≤ 20 (the
  // weight gradients sum over the batch), the hypergradient chains a forward pass, a backward
  // pass and the look-ahead step's second-order products through them, and its norm is smaller
  // than its terms' by cancellation. An emulation on the CPU (both operands rounded, to nearest
  // or truncated, the run drifting under reduced precision) stayed within 16 units.
  constexpr std::size_t iterations = 3;
  auto s = toy_meta_weight_net<C32>();
  const auto hypergradient_at = [&](gemm_precision p) {
    const gemm_precision_scope scope(p);
    auto copy = s;  // the same state and samplers
    return host<C32>(copy.hypergradient(1).gradient);
  };
  for (std::size_t t = 0; t < iterations; ++t) {
    CAPTURE(t);
    const auto full = hypergradient_at(gemm_precision::full);
    const double e_tf32 = relative_error(hypergradient_at(gemm_precision::tf32), full);
    const double e_bf16 = relative_error(hypergradient_at(gemm_precision::bf16), full);
    MESSAGE("Meta-Weight-Net hypergradient, iteration " << t << ": TF32 GEMMs " << e_tf32 << ", BF16 GEMMs " << e_bf16
                                                         << " relative to full float");
    CHECK(e_tf32 <= 32 * 0x1p-11);
    CHECK(e_bf16 <= 32 * 0x1p-8);
    s.run(1);
  }
}

TEST_CASE("cuda Meta-Weight-Net, deferred checks: a step waits for nothing, and the run is the same bit for bit") {
  auto now = toy_meta_weight_net<C32>(), later = toy_meta_weight_net<C32>();
  later.on_failure({.check_every = 4});
  now.run(2);
  later.run(2);  // first use (index plans, workspaces); the end of run() reads the log
  const auto before = C32::activity();
  later.iterate();  // outer iteration 2: no read due
  const auto between = C32::activity();
  later.iterate();  // iteration 3 completes four: one read
  const auto after = C32::activity();
  MESSAGE("Meta-Weight-Net step with deferred checks: " << between.kernels - before.kernels << " kernels, "
                                                        << between.blas_calls - before.blas_calls << " cuBLAS calls, "
                                                        << between.host_waits - before.host_waits << " host waits");
  CHECK(between.host_waits == before.host_waits);
  CHECK(after.host_waits == between.host_waits + 1);
  now.run(2);
  CHECK(host<C32>(now.level<0>().theta) == host<C32>(later.level<0>().theta));
  CHECK(host<C32>(now.level<1>().theta) == host<C32>(later.level<1>().theta));
}

TEST_CASE("cuda Meta-Weight-Net, captured steps: one graph launch a step, the plain launches' bits") {
  auto plain = toy_meta_weight_net<C32>(), captured = toy_meta_weight_net<C32>();
  plain.on_failure({.check_every = 4});
  captured.on_failure({.check_every = 4});
  captured.capture_steps();
  plain.run(2);
  captured.run(2);  // the probe, then the first capture
  const auto before = C32::activity();
  captured.iterate();  // outer iteration 2: captured, no read due
  const auto after = C32::activity();
  MESSAGE("Meta-Weight-Net step captured: " << after.kernels - before.kernels << " kernels and "
                                            << after.blas_calls - before.blas_calls << " cuBLAS calls captured, "
                                            << after.graph_launches - before.graph_launches << " graph launch, "
                                            << after.host_waits - before.host_waits << " host waits");
  CHECK(after.graph_launches == before.graph_launches + 1);
  CHECK(after.host_waits == before.host_waits);
  captured.run(3);
  plain.run(4);
  const auto& r = captured.capture_report();
  MESSAGE("captured " << r.captured_steps << " steps: " << r.instantiations << " graphs instantiated, " << r.updates
                      << " updated in place");
  CHECK(r.fallback == "");
  CHECK(r.plain_steps == 1);
  CHECK(r.captured_steps == 5);
  CHECK(r.instantiations + r.updates == r.captured_steps);
  CHECK(r.updates >= 3);  // one shape: made once (twice at most, if the first graph's blocks differ), then updated
  CHECK(host<C32>(plain.level<0>().theta) == host<C32>(captured.level<0>().theta));
  CHECK(host<C32>(plain.level<1>().theta) == host<C32>(captured.level<1>().theta));

  // Immediate checks read back in every step: those run plainly, saying why, with the same bits.
  auto immediate = toy_meta_weight_net<C32>(), reference = toy_meta_weight_net<C32>();
  immediate.capture_steps().run(3);
  reference.run(3);
  CHECK(immediate.capture_report().captured_steps == 0);
  CHECK(immediate.capture_report().fallback.find("waits for the device") != std::string::npos);
  CHECK(host<C32>(immediate.level<0>().theta) == host<C32>(reference.level<0>().theta));
}

TEST_CASE("cuda Meta-Weight-Net: five iterations agree with the Eigen policy's") {
  constexpr std::size_t iterations = 5;
  const auto e64 = eigen_reference::meta_weight_net(iterations, false);
  const std::size_t host_maps = C64::host_transforms();
  const auto c64 = meta_weight_net_run<C64>(iterations);
  const auto e32 = eigen_reference::meta_weight_net(iterations, true);
  const auto c32 = meta_weight_net_run<C32>(iterations);
  // Every element-wise map of the step (activations, the weighting net, Adam, SGD) ran in a
  // kernel.
  CHECK(C64::host_transforms() == host_maps);
  {
    // And a training step copies no array to the host: the batch goes up, the weighting
    // net reads the losses where they are, and only scalars (losses, finiteness) come back.
    auto s = toy_meta_weight_net<C32>();
    s.run(1);  // first use: index plans and workspaces
    const std::size_t downloads = C32::array_downloads();
    s.run(3);
    CHECK(C32::array_downloads() == downloads);
  }
  REQUIRE(c64.hypergradients.size() == iterations);
  REQUIRE(c32.hypergradients.size() == iterations);
  for (std::size_t t = 0; t < iterations; ++t) {
    CAPTURE(t);
    MESSAGE("iteration " << t << ": hypergradient cuda<double> vs eigen<double> "
                         << relative_error(c64.hypergradients[t], e64.hypergradients[t]) << ", cuda<float> vs eigen<float> "
                         << relative_error(c32.hypergradients[t], e32.hypergradients[t]) << ", cuda<float> vs eigen<double> "
                         << relative_error(c32.hypergradients[t], e64.hypergradients[t]) << ", eigen<float> vs eigen<double> "
                         << relative_error(e32.hypergradients[t], e64.hypergradients[t]));
    // double: the same arithmetic up to summation order, through t steps of SGD and Adam
    // (contractive at these rates): round-off, ≲ 1e-13; 1e-9 leaves room for Adam's division
    // by √v on small components.
    CHECK(relative_error(c64.hypergradients[t], e64.hypergradients[t]) <= 1e-9);
    // float: eigen<float> stays within 1e-6 of eigen<double> over these iterations
    // (measured: 5e-8 to 9e-7 relative, the largest where the hypergradient is smallest);
    // the device rounds differently but as finely. 1e-4 leaves a factor 100 and is far below
    // any wrong term.
    CHECK(relative_error(c32.hypergradients[t], e32.hypergradients[t]) <= 1e-4);
  }
  CHECK(relative_error(c64.theta, e64.theta) <= 1e-9);
  CHECK(relative_error(c64.phi, e64.phi) <= 1e-9);
  CHECK(c64.validation_loss_after == doctest::Approx(e64.validation_loss_after).epsilon(1e-10));
  // float after five steps: the classifier's and the net's parameters (eigen<float> vs
  // eigen<double>: 7e-8 and 6e-8 relative, measured) and the validation loss. Adam's step is
  // ±lr where a gradient component's sign flips, but the smallest component here is 1e-2 of
  // the norm, far above float noise.
  MESSAGE("after " << iterations << " iterations: theta cuda<float> vs eigen<float> " << relative_error(c32.theta, e32.theta)
                   << ", phi " << relative_error(c32.phi, e32.phi) << "; validation loss " << c32.validation_loss_before
                   << " -> " << c32.validation_loss_after << " (eigen<float> " << e32.validation_loss_after << ")");
  CHECK(relative_error(c32.theta, e32.theta) <= 1e-4);
  CHECK(relative_error(c32.phi, e32.phi) <= 1e-4);
  CHECK(c32.validation_loss_after == doctest::Approx(e32.validation_loss_after).epsilon(1e-5));
  CHECK(c32.validation_loss_after < c32.validation_loss_before);  // five iterations already help
}
