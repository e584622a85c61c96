// SPDX-License-Identifier: MIT
// Networks on the CUDA policy: every exact product (gradient, HVP, both mixed products, the
// input gradient) of MLPs, a CNN and a DARTS cell against central differences computed on
// the device, and against the Eigen policy's values for the same network, point and batch
// (computed by the same code, cases.hpp, in the host translation unit host_reference.cpp).
#include <doctest/doctest.h>

#include <bilevel/policy/cuda.hpp>

#include <string>
#include <vector>

#include "cases.hpp"
#include "derivatives.hpp"
#include "host_reference.hpp"

namespace {
using namespace cuda_test;
using C64 = bilevel::policy::cuda<double>;
using C32 = bilevel::policy::cuda<float>;

const net_kind all_networks[] = {net_kind::mlp_relu, net_kind::mlp_tanh, net_kind::mlp_sigmoid_squared_error,
                                 net_kind::cnn};

void compare(const products& got, const products& ref, double tolerance, const char* what) {
  CAPTURE(what);
  CHECK(relative_error(got.theta, ref.theta) <= tolerance);  // the same seeded values (rounded to S)
  CHECK(std::abs(got.loss - ref.loss) <= tolerance * std::abs(ref.loss));
  CHECK(relative_error(got.gradient, ref.gradient) <= tolerance);
  CHECK(relative_error(got.hvp, ref.hvp) <= tolerance);
  CHECK(relative_error(got.input_gradient, ref.input_gradient) <= tolerance);
  CHECK(relative_error(got.mixed_vjp, ref.mixed_vjp) <= tolerance);
  CHECK(relative_error(got.mixed_jvp, ref.mixed_jvp) <= tolerance);
}
}  // namespace

TEST_CASE("cuda learners<double>: every product against central differences on the device") {
  using P = C64;
  // Tolerances as the CPU suite's (tests/test_mlp.cpp, tests/test_backends.cpp): 1e-6 for
  // networks (ReLU kinks and max-pool ties are not within h of these random points; one
  // crossed would give an O(1) error).
  for (auto k : all_networks) {
    CAPTURE(std::string(name(k)));
    const auto net = make_network<P>(k);
    auto w = random_vector(batch_rows, 5, 0.5);
    for (auto& x : w) x += 1.0;
    check_learner_derivatives(net, host<P>(net.initial_parameters(7)), {w}, random_batch<P>(batch_rows, features(k), 3, 3),
                              1e-6);
  }
  using namespace bilevel::learners;
  // Softmax regression with per-class weights (sample_weights' sibling: a table read by label).
  const mlp<P, class_weights> softmax_regression({5, 3}, activation::identity, loss_kind::cross_entropy,
                                                 class_weights{3});
  check_learner_derivatives(softmax_regression, host<P>(softmax_regression.initial_parameters(2)), {{0.5, 1.0, 2.0}},
                            random_batch<P>(6, 5, 3, 4), 1e-6);
  // A DARTS cell: a mixed operation reading the architecture vector (input slot 0: no weighting).
  const sequential<P> darts({1, 1, 4}, {layer::dense{5}, layer::act{activation::tanh},
                                        layer::mixed{{layer::candidate{{layer::dense{5}, layer::act{activation::tanh}}},
                                                      layer::skip(), layer::zero_op()}},
                                        layer::dense{3}});
  check_learner_derivatives(darts, host<P>(darts.initial_parameters(2)), {{0.2, -0.1, 0.3}}, random_batch<P>(5, 4, 3, 1),
                            1e-6);
}

TEST_CASE("cuda learners: the same products as the Eigen policy") {
  for (auto k : all_networks) {
    CAPTURE(std::string(name(k)));
    // double: only the order of summation differs (cuBLAS vs Eigen kernels, warp vs serial
    // row reductions): agreement to round-off, ~1e-15 relative; 1e-12 as between the CPU back
    // ends (tests/test_backends.cpp).
    const auto e64 = eigen_reference::learner_products(k, false);
    const auto c64 = learner_products<C64>(k);
    compare(c64, e64, 1e-12, "cuda<double> vs eigen<double>");
    // float: eigen<float> is within 0.3e-6 of eigen<double> on every product here (measured:
    // 2.5e-8 to 2.3e-7 relative); the device differs from the host by summation order and by
    // ≤ 2 ulp in tanh and exp, errors of the same size. 1e-5 leaves a factor 40 and fails on
    // any wrong term (O(1)).
    const auto e32 = eigen_reference::learner_products(k, true);
    const auto c32 = learner_products<C32>(k);
    MESSAGE(name(k) << ": cuda<float> vs eigen<float> gradient " << relative_error(c32.gradient, e32.gradient)
                    << ", hvp " << relative_error(c32.hvp, e32.hvp) << "; vs eigen<double> gradient "
                    << relative_error(c32.gradient, e64.gradient) << ", hvp " << relative_error(c32.hvp, e64.hvp));
    compare(c32, e32, 1e-5, "cuda<float> vs eigen<float>");
    compare(c32, e64, 1e-5, "cuda<float> vs eigen<double>");
  }
}

TEST_CASE("cuda learners: the forward cache (keyed on content stamps) never serves stale values") {
  using P = C64;
  const auto net = make_network<P>(net_kind::mlp_tanh);
  const auto b1 = random_batch<P>(batch_rows, 5, 3, 1), b2 = random_batch<P>(batch_rows, 5, 3, 2);
  const P::vector t1 = net.initial_parameters(1), t2 = net.initial_parameters(2);
  const P::vector w1 = device<P>(std::vector<double>(batch_rows, 1.0)), w2 = device<P>(random_vector(batch_rows, 3));
  const P::vector v = device<P>(random_vector(net.num_parameters(), 9));
  auto hvp = [&](const network<P>& n, const P::vector& t, const P::vector& w, const auto& b) {
    const P::vector* in[] = {&w};
    P::vector out;
    n.hvp(t, in, b, v, out);
    return host<P>(out);
  };
  auto fresh = [&](const P::vector& t, const P::vector& w, const auto& b) {
    return hvp(make_network<P>(net_kind::mlp_tanh), t, w, b);
  };
  CHECK(hvp(net, t1, w1, b1) == fresh(t1, w1, b1));
  CHECK(hvp(net, t2, w1, b1) == fresh(t2, w1, b1));  // new point
  CHECK(hvp(net, t2, w2, b1) == fresh(t2, w2, b1));  // new weights
  CHECK(hvp(net, t2, w2, b2) == fresh(t2, w2, b2));  // new batch
  CHECK(hvp(net, t1, w1, b1) == fresh(t1, w1, b1));  // back to the first
  // The same objects written in place (as an optimizer step writes θ, a solve its direction):
  // each write renews the stamp, so the cache recomputes.
  P::vector t = t1, w = w2;
  CHECK(hvp(net, t, w, b1) == fresh(t, w, b1));
  P::axpy(0.5, v, t);
  CHECK(hvp(net, t, w, b1) == fresh(t, w, b1));
  P::scale(w, 2.0);
  CHECK(hvp(net, t, w, b1) == fresh(t, w, b1));
  // A copy keeps its source's stamp (same values): served from the cache, and right.
  const P::vector t_copy = t;
  CHECK(P::content_stamp(t_copy) == P::content_stamp(t));
  CHECK(hvp(net, t_copy, w, b1) == fresh(t, w, b1));
  P::vector t_into;  // so does P::copy
  P::copy(t, t_into);
  CHECK(P::content_stamp(t_into) == P::content_stamp(t));
  P::scale(t_into, 2.0);
  CHECK(P::content_stamp(t_into) != P::content_stamp(t));
  CHECK(hvp(net, t_into, w, b1) == fresh(t_into, w, b1));
}
