// SPDX-License-Identifier: MIT
// convolution (padding, stride, dilation, groups, depthwise) and factorized_reduce, layers of
// the open concept: their forward maps against direct loops, each layer's four passes alone
// against central differences, a small network of them through every exact product, and
// their error messages.
#include <doctest/doctest.h>

#include <bilevel/learners/layers/convolution.hpp>
#include <bilevel/learners/layers/factorized_reduce.hpp>
#include <bilevel/learners/layers/linear.hpp>
#include <bilevel/learners/layers/nonlinearity.hpp>
#include <bilevel/learners/sequential.hpp>

#include "batches.hpp"
#include "derivative_checks.hpp"
#include "policies.hpp"

namespace {
using namespace bilevel::learners;

template <class P>
typename P::matrix to_matrix(const std::vector<double>& h, std::size_t rows, std::size_t cols) {
  const std::vector<bilevel::scalar_t<P>> s(h.begin(), h.end());
  return P::matrix_from_host(rows, cols, s);
}
template <class P>
std::vector<double> from_matrix(const typename P::matrix& m) {
  const auto s = P::matrix_to_host(m);
  return {s.begin(), s.end()};
}

/// Sets patch_chunk_elements() for a scope (1: one sample per chunk).
struct chunk_budget {
  std::size_t saved = patch_chunk_elements();
  explicit chunk_budget(std::size_t elements) { patch_chunk_elements() = elements; }
  chunk_budget(const chunk_budget&) = delete;
  chunk_budget& operator=(const chunk_budget&) = delete;
  ~chunk_budget() { patch_chunk_elements() = saved; }
};

/// y of a convolution by direct loops over NHWC data, with the documented parameter layout:
/// per group a (kh, kw, c_in in group) × (c_out in group) row-major block, then the bias.
std::vector<double> direct_convolution(const std::vector<double>& x, const std::vector<double>& theta, geometry in,
                                       const conv_options& o, geometry out, std::size_t batch) {
  const std::size_t k = o.kernel, cig = in.channels / o.groups, cog = o.channels / o.groups;
  const std::size_t fan_in = k * k * cig, weights = o.groups * fan_in * cog;
  std::vector<double> y(batch * out.features());
  for (std::size_t b = 0; b < batch; ++b)
    for (std::size_t oh = 0; oh < out.height; ++oh)
      for (std::size_t ow = 0; ow < out.width; ++ow)
        for (std::size_t co = 0; co < o.channels; ++co) {
          const std::size_t g = co / cog;
          double s = o.bias ? theta[weights + co] : 0.0;
          for (std::size_t kh = 0; kh < k; ++kh)
            for (std::size_t kw = 0; kw < k; ++kw)
              for (std::size_t c = 0; c < cig; ++c) {
                const long ih = long(oh * o.stride + kh * o.dilation) - long(o.padding);
                const long iw = long(ow * o.stride + kw * o.dilation) - long(o.padding);
                if (ih < 0 || iw < 0 || ih >= long(in.height) || iw >= long(in.width)) continue;
                const double w = theta[g * fan_in * cog + ((kh * k + kw) * cig + c) * cog + (co - g * cog)];
                s += w * x[((b * in.height + std::size_t(ih)) * in.width + std::size_t(iw)) * in.channels + g * cig + c];
              }
          y[((b * out.height + oh) * out.width + ow) * o.channels + co] = s;
        }
  return y;
}

/// A layer alone: y = layer(θ, x) and L(θ, x) = ⟨R, y⟩ + ½‖y‖² (R fixed and random; the square
/// makes the second derivatives non-trivial for a bilinear layer), so ∂L/∂y = R + y. Checks
/// backward (∂L/∂θ, ∂L/∂x) against central differences of L, tangent_forward against those of
/// y, and tangent_backward (with ġ = ẏ) against those of the backward pass, along (v, ẋ) and
/// along (v, 0) (a null x_dot). The maps are polynomials of degree ≤ 4 in (θ, x) with O(1)
/// inputs: central differences with h = 1e-5 are exact to ~1e-10 relative.
template <class P, class L>
void check_layer(const L& layer, std::size_t batch, unsigned seed, double tolerance = 1e-7) {
  using matrix = typename P::matrix;
  using vector = bilevel::vector_t<P>;
  constexpr double h = 1e-5;
  const geometry in = layer.input_shape(), out = layer.output_shape();
  const std::size_t n = layer.num_parameters(), rows_in = batch * in.pixels(), rows_out = batch * out.pixels();
  const auto theta_h = test::random_vector(n, seed), x_h = test::random_vector(rows_in * in.channels, seed + 1);
  const auto r_h = test::random_vector(rows_out * out.channels, seed + 2);
  const auto v_h = test::random_vector(n, seed + 3), xd_h = test::random_vector(x_h.size(), seed + 4);
  const matrix r = to_matrix<P>(r_h, rows_out, out.channels);

  const auto join = [](std::vector<double> a, const std::vector<double>& b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
  };
  const auto value = [&](const std::vector<double>& t, const std::vector<double>& x, matrix& y,
                         typename L::cache& c) {
    const vector theta = test::device<P>(t);
    layer.forward(pass_context<P>{.theta = theta, .offset = 0, .batch = batch}, to_matrix<P>(x, rows_in, in.channels),
                  y, c);
  };
  const auto loss = [&](const std::vector<double>& t, const std::vector<double>& x) {
    matrix y;
    typename L::cache c;
    value(t, x, y, c);
    const auto yh = from_matrix<P>(y);
    double s = 0;
    for (std::size_t i = 0; i < yh.size(); ++i) s += r_h[i] * yh[i] + 0.5 * yh[i] * yh[i];
    return s;
  };
  // [∂L/∂θ, ∂L/∂x] at z = [θ, x]
  const auto gradients = [&](const std::vector<double>& z) {
    const std::vector<double> t(z.begin(), z.begin() + long(n)), x(z.begin() + long(n), z.end());
    matrix y, gx;
    typename L::cache c;
    value(t, x, y, c);
    P::axpy(bilevel::scalar_t<P>(1), r, y);  // g = R + y
    const vector theta = test::device<P>(t);
    vector grad = P::zeros(n);
    layer.backward(pass_context<P>{.theta = theta, .offset = 0, .batch = batch}, to_matrix<P>(x, rows_in, in.channels),
                   y, c, &gx, grad);
    return join(test::host<P>(grad), from_matrix<P>(gx));
  };
  const auto outputs = [&](const std::vector<double>& z) {
    matrix y;
    typename L::cache c;
    value({z.begin(), z.begin() + long(n)}, {z.begin() + long(n), z.end()}, y, c);
    return from_matrix<P>(y);
  };

  // backward against central differences of L
  const auto g = gradients(join(theta_h, x_h));
  const std::vector<double> grad(g.begin(), g.begin() + long(n)), gx(g.begin() + long(n), g.end());
  CHECK(test::relative_error(grad, test::central_gradient([&](const auto& t) { return loss(t, x_h); }, theta_h, h)) <=
        tolerance);
  CHECK(test::relative_error(gx, test::central_gradient([&](const auto& x) { return loss(theta_h, x); }, x_h, h)) <=
        tolerance);

  // the tangent passes along (v, ẋ), then along (v, 0)
  for (const bool with_x_dot : {true, false}) {
    CAPTURE(with_x_dot);
    const vector theta = test::device<P>(theta_h), v = test::device<P>(v_h);
    const matrix x = to_matrix<P>(x_h, rows_in, in.channels), x_dot = to_matrix<P>(xd_h, rows_in, in.channels);
    const matrix* xd = with_x_dot ? &x_dot : nullptr;
    const tangent_context<P> t{{.theta = theta, .offset = 0, .batch = batch}, v};
    matrix y, gx_unused, y_dot, gx_dot;
    typename L::cache c;
    layer.forward(t, x, y, c);
    P::axpy(bilevel::scalar_t<P>(1), r, y);  // g = R + y, ġ = ẏ
    vector grad_v = P::zeros(n), grad_dot = P::zeros(n);
    layer.backward(t, x, y, c, &gx_unused, grad_v);
    layer.tangent_forward(t, x, xd, c, y_dot);
    layer.tangent_backward(t, x, xd, y, y_dot, c, &gx_dot, grad_dot);
    const auto dir = join(v_h, with_x_dot ? xd_h : std::vector<double>(xd_h.size(), 0.0));
    const auto z = join(theta_h, x_h);
    CHECK(test::relative_error(from_matrix<P>(y_dot), test::central_directional(outputs, z, dir, h)) <= tolerance);
    CHECK(test::relative_error(join(test::host<P>(grad_dot), from_matrix<P>(gx_dot)),
                               test::central_directional(gradients, z, dir, h)) <= tolerance);
  }
}

struct conv_case {
  std::string name;
  geometry in;
  conv_options options;
  geometry out;
};
const std::vector<conv_case>& conv_cases() {
  static const std::vector<conv_case> cases = {
      {"plain", {5, 5, 3}, {.channels = 2, .kernel = 3}, {3, 3, 2}},
      {"padded and strided", {6, 6, 2}, {.channels = 3, .kernel = 3, .stride = 2, .padding = 1}, {3, 3, 3}},
      {"dilated", {6, 5, 2}, {.channels = 2, .kernel = 3, .padding = 2, .dilation = 2}, {6, 5, 2}},
      // On a host policy (dense_conv_maps): 75 output rows (a partial block of rows), 13
      // output channels (whole, half and single-lane column blocks at every SIMD width), and
      // 11 and 9 input channels: the weight adjoint's tiles of 6 or 8 input channels leave 5
      // or 3 (tiles of 4 and 1, of 2 and 1) with 6, and 3 or 1 with 8.
      {"wide (every block shape of the direct loops)", {5, 5, 11}, {.channels = 13, .kernel = 3, .padding = 1},
       {5, 5, 13}},
      {"wide, other tails", {4, 3, 9}, {.channels = 5, .kernel = 3, .padding = 1}, {4, 3, 5}},
      {"grouped", {5, 5, 4}, {.channels = 6, .kernel = 3, .stride = 2, .padding = 1, .groups = 2}, {3, 3, 6}},
      {"pointwise (the identity patch map)", {3, 4, 3}, {.channels = 2, .kernel = 1}, {3, 4, 2}},
      {"depthwise", {5, 5, 3}, {.channels = 3, .kernel = 3, .padding = 1, .groups = 3, .bias = false}, {5, 5, 3}},
      {"depthwise, dilated and strided", {6, 6, 2},
       {.channels = 2, .kernel = 3, .stride = 2, .padding = 2, .dilation = 2, .groups = 2}, {3, 3, 2}},
  };
  return cases;
}

}  // namespace

TEST_CASE_TEMPLATE("convolution: forward equals direct loops; the four passes match central differences", P,
                   BILEVEL_DOUBLE_POLICIES) {
  static_assert(check_network_layer<convolution<P>, P>());
  const std::size_t batch = 3;
  unsigned seed = 10;
  // Once with the whole batch in one chunk, once one sample per chunk (a host back end's
  // passes then gather, multiply and write sample by sample, and add up the weight gradients).
  for (const std::size_t elements : {patch_chunk_elements(), std::size_t(1)})
  for (const auto& cc : conv_cases()) {
    const chunk_budget budget(elements);
    CAPTURE(cc.name);
    CAPTURE(elements);
    const convolution<P> conv(cc.in, cc.options);
    CHECK(conv.output_shape() == cc.out);
    const std::size_t cig = cc.in.channels / cc.options.groups;
    CHECK(conv.num_parameters() == cc.options.kernel * cc.options.kernel * cig * cc.options.channels +
                                       (cc.options.bias ? cc.options.channels : 0));
    const auto theta_h = test::random_vector(conv.num_parameters(), seed);
    const auto x_h = test::random_vector(batch * cc.in.features(), seed + 1);
    const auto theta = test::device<P>(theta_h);
    typename P::matrix y;
    typename convolution<P>::cache c;
    conv.forward(pass_context<P>{.theta = theta, .offset = 0, .batch = batch},
                 to_matrix<P>(x_h, batch * cc.in.pixels(), cc.in.channels), y, c);
    CHECK(test::relative_error(from_matrix<P>(y), direct_convolution(x_h, theta_h, cc.in, cc.options, cc.out, batch)) <=
          1e-14);
    check_layer<P>(conv, batch, seed + 2);
    seed += 10;
  }
}

TEST_CASE_TEMPLATE("convolution in float: the four passes equal double precision's", P,
                   bilevel::policy::eigen<float>) {
  // The direct loops run float SIMD vectors (twice double's lanes) with their own tails; the
  // double layer is checked against central differences above. (The loops are one source for
  // both host policies, on raw storage: one float policy covers them.) Every output here is a sum of
  // at most 9 · 11 · 2 = 198 products of O(1) terms (two for the tangents), so float rounding
  // leaves a relative error of about √198 · 6e-8 ≈ 9e-7 on the whole vector; 1e-5 allows 11x that.
  using D = bilevel::policy::eigen<double>;
  const std::size_t batch = 3;
  for (const auto& cc : conv_cases()) {
    CAPTURE(cc.name);
    const convolution<P> conv(cc.in, cc.options);
    const convolution<D> reference(cc.in, cc.options);
    const std::size_t n = conv.num_parameters(), rows_in = batch * cc.in.pixels(), rows_out = batch * cc.out.pixels();
    const auto theta_h = test::random_vector(n, 3), v_h = test::random_vector(n, 4);
    const auto x_h = test::random_vector(rows_in * cc.in.channels, 5), xd_h = test::random_vector(x_h.size(), 6);
    const auto g_h = test::random_vector(rows_out * cc.out.channels, 7), gd_h = test::random_vector(g_h.size(), 8);
    // [y, ∂θ, ∂x, ẏ, ġθ, ġx] of one layer on one policy
    const auto passes = [&]<class Q>(const auto& layer) {
      using M = typename Q::matrix;
      const auto theta = test::device<Q>(theta_h), v = test::device<Q>(v_h);
      const M x = to_matrix<Q>(x_h, rows_in, cc.in.channels), x_dot = to_matrix<Q>(xd_h, rows_in, cc.in.channels);
      const M g = to_matrix<Q>(g_h, rows_out, cc.out.channels), g_dot = to_matrix<Q>(gd_h, rows_out, cc.out.channels);
      M y, gx, y_dot, gx_dot;
      auto grad = Q::zeros(n), grad_dot = Q::zeros(n);
      typename convolution<Q>::cache c;
      const pass_context<Q> p{.theta = theta, .offset = 0, .batch = batch};
      const tangent_context<Q> t{p, v};
      layer.forward(p, x, y, c);
      layer.backward(p, x, g, c, &gx, grad);
      layer.tangent_forward(t, x, &x_dot, c, y_dot);
      layer.tangent_backward(t, x, &x_dot, g, g_dot, c, &gx_dot, grad_dot);
      return std::vector<std::vector<double>>{from_matrix<Q>(y),     test::host<Q>(grad),     from_matrix<Q>(gx),
                                              from_matrix<Q>(y_dot), test::host<Q>(grad_dot), from_matrix<Q>(gx_dot)};
    };
    const auto got = passes.template operator()<P>(conv), want = passes.template operator()<D>(reference);
    for (std::size_t i = 0; i < got.size(); ++i) {
      CAPTURE(i);
      CHECK(test::relative_error(got[i], want[i]) <= 1e-5);
    }
  }
}

TEST_CASE_TEMPLATE("factorized_reduce: forward equals a direct loop; the four passes match central differences", P,
                   BILEVEL_DOUBLE_POLICIES) {
  static_assert(check_network_layer<factorized_reduce<P>, P>());
  const geometry in{6, 4, 3};
  const std::size_t batch = 2, cout = 4, half = cout / 2;
  const factorized_reduce<P> fr(in, cout);
  CHECK(fr.output_shape() == geometry{3, 2, cout});
  CHECK(fr.num_parameters() == 2 * in.channels * half);
  const auto theta_h = test::random_vector(fr.num_parameters(), 5);
  const auto x_h = test::random_vector(batch * in.features(), 6);
  const auto theta = test::device<P>(theta_h);
  typename P::matrix y;
  typename factorized_reduce<P>::cache c;
  fr.forward(pass_context<P>{.theta = theta, .offset = 0, .batch = batch},
             to_matrix<P>(x_h, batch * in.pixels(), in.channels), y, c);
  // y[:, :half] = 1x1 stride-2 conv of x with W_a; y[:, half:] = the same of x[1:, 1:] with W_b.
  std::vector<double> expected;
  for (std::size_t b = 0; b < batch; ++b)
    for (std::size_t i = 0; i < 3; ++i)
      for (std::size_t j = 0; j < 2; ++j)
        for (std::size_t co = 0; co < cout; ++co) {
          const std::size_t branch = co / half, shift = branch;
          double s = 0;
          for (std::size_t ci = 0; ci < in.channels; ++ci)
            s += theta_h[branch * in.channels * half + ci * half + co % half] *
                 x_h[((b * in.height + 2 * i + shift) * in.width + 2 * j + shift) * in.channels + ci];
          expected.push_back(s);
        }
  CHECK(test::relative_error(from_matrix<P>(y), expected) <= 1e-14);
  check_layer<P>(fr, batch, 7);
  const chunk_budget one_sample(1);
  check_layer<P>(fr, batch, 7);
}

TEST_CASE_TEMPLATE("convolutions: a depthwise-separable network through every exact product", P,
                   BILEVEL_DOUBLE_POLICIES) {
  // dil_conv-like (depthwise 3x3, dilation 2, then 1x1 without bias), tanh, factorized
  // reduction 6x6 → 3x3, tanh, grouped 3x3 convolution, tanh, 3x3 convolution to 1x1x3.
  const geometry in{6, 6, 2};
  const convolution<P> dw(in, {.channels = 2, .kernel = 3, .padding = 2, .dilation = 2, .groups = 2, .bias = false});
  const linear<P> pw(dw.output_shape(), 4, false);
  const factorized_reduce<P> fr(pw.output_shape(), 4);
  const convolution<P> grouped(fr.output_shape(), {.channels = 4, .kernel = 3, .padding = 1, .groups = 2});
  const convolution<P> last(grouped.output_shape(), {.channels = 3, .kernel = 3});
  CHECK(last.output_shape() == geometry{1, 1, 3});
  const sequential<P, sample_weights> net(
      in,
      {dw, pw, nonlinearity<P>(pw.output_shape(), activation::tanh), fr,
       nonlinearity<P>(fr.output_shape(), activation::tanh), grouped,
       nonlinearity<P>(grouped.output_shape(), activation::tanh), last},
      loss_kind::cross_entropy, sample_weights{4});
  CHECK(net.num_parameters() == 2 * 9 + 2 * 4 + 2 * 4 * 2 + (2 * 18 * 2 + 4) + (36 * 3 + 3));
  // He-uniform weights within √(6 / fan_in), zero biases (the last layer's three).
  const auto theta0 = test::host<P>(net.initial_parameters(3));
  for (std::size_t i = 0; i < 18; ++i) CHECK(std::abs(theta0[i]) <= std::sqrt(6.0 / 9.0));
  for (std::size_t i = theta0.size() - 3; i < theta0.size(); ++i) CHECK(theta0[i] == 0.0);
  CHECK(std::abs(theta0[0]) > 0.0);
  test::check_learner_derivatives(net, theta0, {{0.5, 1.0, 1.5, 0.7}}, test::random_batch<P>(4, in.features(), 3, 2),
                                  1e-6);
  const chunk_budget one_sample(1);  // the same products, sample by sample
  test::check_learner_derivatives(net, theta0, {{0.5, 1.0, 1.5, 0.7}}, test::random_batch<P>(4, in.features(), 3, 2),
                                  1e-6);
}

TEST_CASE_TEMPLATE("convolutions: bad options are named", P, BILEVEL_DOUBLE_POLICIES) {
  using C = convolution<P>;
  const geometry in{5, 5, 3};
  const auto fails = [](auto make, const std::string& text) {
    CAPTURE(text);
    CHECK_THROWS_WITH_AS(make(), doctest::Contains(text.c_str()), std::invalid_argument);
  };
  fails([&] { return C(in, {.channels = 0, .kernel = 3}); }, "channels must be >= 1");
  fails([&] { return C(in, {.channels = 2, .kernel = 0}); }, "kernel must be >= 1");
  fails([&] { return C(in, {.channels = 2, .kernel = 3, .stride = 0}); }, "stride must be >= 1");
  fails([&] { return C(in, {.channels = 2, .kernel = 3, .dilation = 0}); }, "dilation must be >= 1");
  fails([&] { return C(in, {.channels = 2, .kernel = 3, .groups = 0}); }, "groups must be >= 1");
  fails([&] { return C({0, 5, 3}, {.channels = 2, .kernel = 3}); }, "the input 0x5x3 has a zero size");
  fails([&] { return C(in, {.channels = 3, .kernel = 3, .groups = 2}); },
        "2 groups do not divide 3 input and 3 output channels");
  fails([&] { return C({5, 5, 4}, {.channels = 3, .kernel = 3, .groups = 2}); },
        "2 groups do not divide 4 input and 3 output channels");
  fails([&] { return C(in, {.channels = 2, .kernel = 7, .padding = 0}); }, "a 7x7 kernel (dilation 1) does not fit a 5x5");
  fails([&] { return C({4, 4, 3}, {.channels = 2, .kernel = 3, .dilation = 2}); },
        "a 3x3 kernel (dilation 2) does not fit a 4x4 input padded by 0");
  CHECK_NOTHROW(C({4, 4, 3}, {.channels = 2, .kernel = 3, .padding = 1, .dilation = 2}));
  using F = factorized_reduce<P>;
  fails([&] { return F({6, 6, 2}, 3); }, "output channels must be even and >= 2, not 3");
  fails([&] { return F({6, 6, 2}, 0); }, "output channels must be even and >= 2, not 0");
  fails([&] { return F({5, 6, 2}, 4); }, "the input 5x6x2 has an odd height or width");
  fails([&] { return F({6, 0, 2}, 4); }, "has a zero size");

  // The depthwise primitives name a map that does not fit the activations.
  if constexpr (bilevel::depthwise_maps<P>) {
    const auto x = P::matrix_zeros(2 * 4, 3);  // 2 samples of 4 pixels, 3 channels
    const auto theta = P::zeros(3 * 2);        // 2 taps per channel
    typename P::matrix y;
    auto dw = [&](std::vector<std::int64_t> map, std::size_t batch) {
      return [&, map, batch] {
        P::depthwise_per_sample(x, map, batch, 2, theta, 0, bilevel::scalar_t<P>(0), y);
        return 0;
      };
    };
    fails(dw({0, 1, 2}, 2), "a tap map of 3 entries is not whole pixels of 2 taps");
    fails(dw({0, 4}, 2), "index 4 is out of range for samples of 4 elements");
    fails(dw({0, 1}, 3), "8 input and 3 output rows are not 3 samples");
    CHECK_THROWS_WITH_AS(P::depthwise_per_sample(x, {0, 1}, 2, 2, P::zeros(5), 0, bilevel::scalar_t<P>(0), y),
                         doctest::Contains("weights [0, 6) exceed a vector of 5 elements"), std::invalid_argument);
  }
  // The dense primitives likewise, and an input adjoint refuses a map in which two output
  // pixels read one input pixel at the same tap (its gather form needs the map's inverse).
  if constexpr (bilevel::dense_conv_maps<P>) {
    using S = bilevel::scalar_t<P>;
    const auto x = P::matrix_zeros(2 * 4, 3);  // 2 samples of 4 pixels, 3 channels
    const auto theta = P::zeros(2 * 3 * 5);    // 2 taps of 3 × 5 weights
    typename P::matrix y, gx;
    const auto forward = [&](std::vector<std::int64_t> map, std::size_t batch) {
      return [&, map, batch] {
        P::dense_conv_per_sample(x, map, batch, 2, theta, 0, 5, S(0), y);
        return 0;
      };
    };
    fails(forward({0, 1, 2}, 2), "a tap map of 3 entries is not whole pixels of 2 taps");
    fails(forward({0, 4}, 2), "index 4 is out of range for samples of 4 elements");
    fails(forward({0, 1}, 3), "8 input and 3 output rows are not 3 samples");
    CHECK_THROWS_WITH_AS(P::dense_conv_per_sample(x, {0, 1}, 2, 2, P::zeros(29), 0, 5, S(0), y),
                         doctest::Contains("weights [0, 30) exceed a vector of 29 elements"), std::invalid_argument);
    const auto gy = P::matrix_zeros(2 * 2, 5);  // 2 samples of 2 output pixels
    CHECK_THROWS_WITH_AS(P::dense_conv_input_adjoint_per_sample(gy, {0, 1, 0, 2}, 2, 2, theta, 0, 4, 3, S(0), gx),
                         doctest::Contains("output pixels 0 and 1 both read input pixel 0 at tap 0: not a convolution's "
                                           "tap map"),
                         std::invalid_argument);
    CHECK_NOTHROW(P::dense_conv_input_adjoint_per_sample(gy, {0, 1, 2, 3}, 2, 2, theta, 0, 4, 3, S(0), gx));
    auto grad = P::zeros(30);
    CHECK_THROWS_WITH_AS(
        P::dense_conv_weight_adjoint_per_sample(x, P::matrix_zeros(3, 5), {0, 1, 2, 3}, 2, 2, S(0), grad, 0),
        doctest::Contains("8 input and 3 output rows are not 2 samples"), std::invalid_argument);
  }
}
