// SPDX-License-Identifier: MIT
// Pooling layers of the open layer concept (layers/pooling.hpp): max and average pooling with
// PyTorch's padding rules (−∞ for max, excluded from the count for average) and global
// average pooling, against direct loops; each layer's four passes against central
// differences; a network built from them through every exact product; the error messages.
#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <limits>
#include <numeric>
#include <random>

#include <bilevel/learners/layers/linear.hpp>
#include <bilevel/learners/layers/nonlinearity.hpp>
#include <bilevel/learners/layers/pooling.hpp>
#include <bilevel/learners/sequential.hpp>

#include "batches.hpp"
#include "derivative_checks.hpp"
#include "policies.hpp"

namespace {
using namespace bilevel::learners;

constexpr std::size_t batch = 2;
const geometry shape{5, 5, 2};

/// batch · 5 · 5 · 2 distinct values spaced 0.1 apart, in a shuffled order, all negative (so a
/// zero padding would win every border window of a max pooling); element
/// ((b·H + h)·W + w)·C + c of the (batch · pixels) × C activation.
std::vector<double> distinct_negative(std::size_t n, unsigned seed) {
  std::vector<double> v(n);
  std::iota(v.begin(), v.end(), 1.0);
  std::shuffle(v.begin(), v.end(), std::mt19937(seed));
  for (auto& e : v) e *= -0.1;
  return v;
}

template <class P>
typename P::matrix as_matrix(const std::vector<double>& x_h, geometry g, std::size_t n) {
  std::vector<bilevel::scalar_t<P>> s(x_h.begin(), x_h.end());
  return P::matrix_from_host(n * g.pixels(), g.channels, s);
}

template <class P>
std::vector<double> host_matrix(const typename P::matrix& m) {
  const auto h = P::matrix_to_host(m);
  return {h.begin(), h.end()};
}

/// The layer's value pass on a fresh cache, as a host vector.
template <class P, class L>
std::vector<double> forward_of(const L& layer, const std::vector<double>& x_h) {
  const auto theta = P::zeros(0);
  const pass_context<P> ctx{theta, 0, batch};
  typename L::cache c;
  typename P::matrix y;
  layer.forward(ctx, as_matrix<P>(x_h, layer.input_shape(), batch), y, c);
  return host_matrix<P>(y);
}

/// PyTorch's pooling by direct loops: max over the window's real elements (padding −∞), or
/// their mean (padding excluded from the count).
std::vector<double> direct_pool(const std::vector<double>& x, geometry in, pooling kind, std::size_t k, std::size_t s,
                                std::size_t p) {
  const std::size_t oh_n = (in.height + 2 * p - k) / s + 1, ow_n = (in.width + 2 * p - k) / s + 1;
  std::vector<double> y;
  for (std::size_t b = 0; b < batch; ++b)
    for (std::size_t oh = 0; oh < oh_n; ++oh)
      for (std::size_t ow = 0; ow < ow_n; ++ow)
        for (std::size_t c = 0; c < in.channels; ++c) {
          double mx = -std::numeric_limits<double>::infinity(), sum = 0;
          std::size_t count = 0;
          for (std::size_t kh = 0; kh < k; ++kh)
            for (std::size_t kw = 0; kw < k; ++kw) {
              const long ih = long(oh * s + kh) - long(p), iw = long(ow * s + kw) - long(p);
              if (ih < 0 || iw < 0 || ih >= long(in.height) || iw >= long(in.width)) continue;
              const double v = x[((b * in.height + std::size_t(ih)) * in.width + std::size_t(iw)) * in.channels + c];
              mx = std::max(mx, v);
              sum += v;
              ++count;
            }
          y.push_back(kind == pooling::max ? mx : sum / double(count));
        }
  return y;
}

/// One layer in isolation, with L(x) = ⟨R, f(x)⟩ + ½‖f(x)‖² (R fixed and random), so that
/// ∂L/∂y = R + y. Checks backward (∇L) against central differences of L, tangent_forward
/// against central differences of forward, and tangent_backward (with g = R + y, ġ = ẏ: the
/// HVP of L) against central differences of backward, all along a random input direction u.
/// L is quadratic in x wherever the layer is linear (every pooling, at a fixed max selection),
/// so central differences carry round-off only, O(ε |L| / h): with |L| up to a few hundred
/// (inputs down to −10) that is ≲ 3e-9 relative at h = 1e-5 (measured), so the tolerance
/// 1e-7 keeps a wide margin and still catches a wrong term (a 0.1% error fails it).
template <class P, class L>
void check_layer(const L& layer, const std::vector<double>& x_h, double tolerance) {
  using M = typename P::matrix;
  using V = bilevel::vector_t<P>;
  constexpr double h = 1e-5;
  const geometry out = layer.output_shape();
  const auto r_h = test::random_vector(batch * out.features(), 31);
  const auto u_h = test::random_vector(x_h.size(), 37);
  const V theta = P::zeros(0), v = P::zeros(0);
  const pass_context<P> ctx{theta, 0, batch};
  const tangent_context<P> tctx{{theta, 0, batch}, v};
  V grad = P::zeros(0), grad_dot = P::zeros(0);

  // g = R + f(x): the layer's backward then gives ∇L.
  auto upstream = [&](const M& y) {
    M g = as_matrix<P>(r_h, out, batch);
    P::axpy(bilevel::scalar_t<P>(1), y, g);
    return g;
  };
  auto loss = [&](const std::vector<double>& x) {
    const auto y = forward_of<P>(layer, x);
    double s = 0;
    for (std::size_t i = 0; i < y.size(); ++i) s += r_h[i] * y[i] + 0.5 * y[i] * y[i];
    return s;
  };
  auto gradient = [&](const std::vector<double>& x) {
    typename L::cache c;
    const M xm = as_matrix<P>(x, layer.input_shape(), batch);
    M y, gx;
    layer.forward(ctx, xm, y, c);
    layer.backward(ctx, xm, upstream(y), c, &gx, grad);
    return host_matrix<P>(gx);
  };

  // The four passes in order on one cache.
  typename L::cache c;
  const M x = as_matrix<P>(x_h, layer.input_shape(), batch), u = as_matrix<P>(u_h, layer.input_shape(), batch);
  M y, gx, y_dot, gx_dot;
  layer.forward(ctx, x, y, c);
  const M g = upstream(y);
  layer.backward(ctx, x, g, c, &gx, grad);
  layer.tangent_forward(tctx, x, &u, c, y_dot);
  layer.tangent_backward(tctx, x, &u, g, y_dot, c, &gx_dot, grad_dot);
  CHECK(P::rows(y) == batch * out.pixels());
  CHECK(P::cols(y) == out.channels);

  CHECK(test::relative_error(host_matrix<P>(gx), test::central_gradient(loss, x_h, h)) <= tolerance);
  CHECK(test::relative_error(host_matrix<P>(y_dot),
                             test::central_directional([&](const auto& z) { return forward_of<P>(layer, z); }, x_h,
                                                       u_h, h)) <= tolerance);
  CHECK(test::relative_error(host_matrix<P>(gx_dot), test::central_directional(gradient, x_h, u_h, h)) <= tolerance);

  // A network that releases its adjoints (pass_context::keep_adjoints false) and then asks for
  // second-order products gets the same passes: the value pass keeps what they need.
  pass_context<P> lean = ctx;
  lean.keep_adjoints = false;
  typename L::cache lc;
  M ly, lgx, ly_dot, lgx_dot;
  layer.forward(lean, x, ly, lc);
  layer.backward(lean, x, g, lc, &lgx, grad);
  layer.tangent_forward(tctx, x, &u, lc, ly_dot);
  layer.tangent_backward(tctx, x, &u, g, ly_dot, lc, &lgx_dot, grad_dot);
  CHECK(P::equal(ly, y));
  CHECK(P::equal(lgx, gx));
  CHECK(P::equal(ly_dot, y_dot));
  CHECK(P::equal(lgx_dot, gx_dot));

  // A tangent without an input direction is zero.
  M zero_dot;
  layer.tangent_forward(tctx, x, nullptr, c, zero_dot);
  CHECK(test::norm(host_matrix<P>(zero_dot)) == 0.0);
}

}  // namespace

TEST_CASE_TEMPLATE("pooling: max and average with padding, and global average, equal direct loops", P,
                   BILEVEL_DOUBLE_POLICIES) {
  const auto x = distinct_negative(batch * shape.features(), 1);
  struct window { std::size_t k, s, p, out; };
  for (const window w : {window{3, 1, 1, 5}, window{3, 2, 1, 3}, window{2, 2, 0, 2}, window{3, 2, 0, 2}})
    for (const auto kind : {pooling::max, pooling::average}) {
      CAPTURE(w.k);
      CAPTURE(w.s);
      CAPTURE(w.p);
      CAPTURE(int(kind));
      const pool<P> layer(shape, kind, w.k, w.s, w.p);
      CHECK(layer.output_shape() == geometry{w.out, w.out, 2});
      CHECK(layer.num_parameters() == 0);
      const auto y = forward_of<P>(layer, x), expected = direct_pool(x, shape, kind, w.k, w.s, w.p);
      REQUIRE(y.size() == expected.size());
      for (std::size_t i = 0; i < y.size(); ++i) CHECK(y[i] == doctest::Approx(expected[i]).epsilon(1e-14));
    }
  // With every input negative, a zero padding would give max = 0 at the border: it does not.
  const auto y = forward_of<P>(pool<P>(shape, pooling::max, 3, 1, 1), x);
  CHECK(*std::max_element(y.begin(), y.end()) < 0.0);

  const global_avg_pool<P> gap(shape);
  CHECK(gap.output_shape() == geometry{1, 1, 2});
  const auto m = forward_of<P>(gap, x);
  REQUIRE(m.size() == batch * 2);
  for (std::size_t b = 0; b < batch; ++b)
    for (std::size_t c = 0; c < 2; ++c) {
      double s = 0;
      for (std::size_t q = 0; q < shape.pixels(); ++q) s += x[(b * shape.pixels() + q) * 2 + c];
      CHECK(m[b * 2 + c] == doctest::Approx(s / 25.0).epsilon(1e-14));
    }
}

TEST_CASE_TEMPLATE("pooling: each layer's four passes against central differences", P, BILEVEL_DOUBLE_POLICIES) {
  // Window maxima 0.1 apart and steps h·|u| <= 1e-5: no difference crosses a tie.
  const auto x = distinct_negative(batch * shape.features(), 2);
  for (const auto kind : {pooling::max, pooling::average})
    for (const auto [k, s, p] : {std::array<std::size_t, 3>{3, 1, 1}, {3, 2, 1}, {2, 1, 0}, {3, 2, 0}}) {
      CAPTURE(int(kind));
      CAPTURE(k);
      CAPTURE(s);
      CAPTURE(p);
      check_layer<P>(pool<P>(shape, kind, k, s, p), x, 1e-7);
    }
  check_layer<P>(global_avg_pool<P>(shape), test::random_vector(batch * shape.features(), 3), 1e-7);
}

TEST_CASE_TEMPLATE("pooling: a network of pooling layers, every exact product", P, BILEVEL_DOUBLE_POLICIES) {
  // 5x5x2 → average 3x3/1 pad 1 → 1x1 convolution to 3 channels → tanh → max 3x3/2 pad 1 (3x3)
  // → 1x1 convolution → global average (1x1x3) → linear to 3 classes.
  const sequential<P, sample_weights> net(
      shape,
      {pool<P>(shape, pooling::average, 3, 1, 1), linear<P>(shape, 3), nonlinearity<P>({5, 5, 3}, activation::tanh),
       pool<P>({5, 5, 3}, pooling::max, 3, 2, 1), linear<P>({3, 3, 3}, 2), global_avg_pool<P>({3, 3, 2}),
       linear<P>({1, 1, 2}, 3)},
      loss_kind::cross_entropy, sample_weights{4});
  CHECK(net.num_parameters() == (2 * 3 + 3) + (3 * 2 + 2) + (2 * 3 + 3));
  test::check_learner_derivatives(net, test::host<P>(net.initial_parameters(5)), {{0.5, 1.0, 1.5, 0.7}},
                                  test::random_batch<P>(4, shape.features(), 3, 4), 1e-6);
  // The same network releasing its adjoints: gradient first, then the second-order products.
  auto lean = net;
  lean.keep_adjoints(false);
  test::check_learner_derivatives(lean, test::host<P>(lean.initial_parameters(5)), {{0.5, 1.0, 1.5, 0.7}},
                                  test::random_batch<P>(4, shape.features(), 3, 4), 1e-6);
}

TEST_CASE_TEMPLATE("pooling: errors are named", P, BILEVEL_DOUBLE_POLICIES) {
  CHECK_THROWS_WITH_AS(pool<P>({2, 2, 1}, pooling::max, 3, 1), doctest::Contains("a 3x3 window does not fit a 2x2 input"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(pool<P>({1, 4, 1}, pooling::average, 4, 1, 1),
                       doctest::Contains("a 4x4 window does not fit a 1x4 input padded by 1"), std::invalid_argument);
  CHECK_NOTHROW(pool<P>({1, 1, 1}, pooling::max, 3, 1, 1));  // padding makes it fit
  CHECK_THROWS_WITH_AS(pool<P>({5, 5, 1}, pooling::max, 3, 1, 2), doctest::Contains("padding 2 exceeds half the 3x3"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(pool<P>({5, 5, 1}, pooling::average, 2, 1, 2), doctest::Contains("pad <= kernel/2"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(pool<P>({5, 5, 1}, pooling::max, 3, 0, 1), doctest::Contains("kernel and stride must be >= 1"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(pool<P>({5, 5, 1}, pooling::average, 0, 1), doctest::Contains("kernel and stride must be >= 1"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(global_avg_pool<P>({5, 5, 0}), doctest::Contains("is empty"), std::invalid_argument);
}
