// SPDX-License-Identifier: MIT
#pragma once
// Max pooling's direct primitives (window_max_per_sample, window_max_adjoint_per_sample,
// window_max_tangent), checked for any nn_tensor_policy against naive host loops: shared by
// the CPU suite (tests/test_policy.cpp) and the GPU suite (tests/cuda/test_policy.cu).
// Padded windows, strides 1 and 2, and many ties (values drawn from four integers, all
// negative, so a padding read as 0 would win). The primitives move values or add them in
// ascending output order, so every comparison is exact.
#include <doctest/doctest.h>

#include <bilevel/core/tensor_policy.hpp>

#include <cstddef>
#include <cstdint>
#include <limits>
#include <random>
#include <stdexcept>
#include <vector>

#include "host_math.hpp"

namespace test {

/// One sample's tap map of a k × k window with stride s and padding p over an h × w image:
/// entry q · k² + kh · k + kw is the input pixel that output pixel q reads (−1: padding).
inline std::vector<std::int64_t> window_taps(std::size_t h, std::size_t w, std::size_t k, std::size_t s,
                                             std::size_t p, std::size_t& out_h, std::size_t& out_w) {
  out_h = (h + 2 * p - k) / s + 1;
  out_w = (w + 2 * p - k) / s + 1;
  std::vector<std::int64_t> taps;
  for (std::size_t oh = 0; oh < out_h; ++oh)
    for (std::size_t ow = 0; ow < out_w; ++ow)
      for (std::size_t kh = 0; kh < k; ++kh)
        for (std::size_t kw = 0; kw < k; ++kw) {
          const long ih = long(oh * s + kh) - long(p), iw = long(ow * s + kw) - long(p);
          const bool inside = ih >= 0 && iw >= 0 && ih < long(h) && iw < long(w);
          taps.push_back(inside ? std::int64_t(ih * long(w) + iw) : -1);
        }
  return taps;
}

template <class P>
void check_window_max() {
  using S = bilevel::scalar_t<P>;
  using matrix = typename P::matrix;
  const auto as_matrix = device_matrix<P>;
  const auto values = host_matrix<P>;
  constexpr std::size_t batch = 2, H = 5, W = 4, C = 3, in_pixels = H * W;
  std::mt19937 gen(7);
  std::uniform_int_distribution<int> level(1, 4);
  std::normal_distribution<double> normal;
  std::vector<double> x_h(batch * in_pixels * C), x_dot_h(x_h.size()), gx0_h(x_h.size());
  for (auto& v : x_h) v = -double(level(gen));  // four values: ties in nearly every window
  for (auto& v : x_dot_h) v = double(S(normal(gen)));
  for (auto& v : gx0_h) v = double(S(normal(gen)));
  const matrix x = as_matrix(batch * in_pixels, C, x_h), x_dot = as_matrix(batch * in_pixels, C, x_dot_h);

  struct tap_map { std::vector<std::int64_t> taps; std::size_t kk; };
  std::vector<tap_map> maps;
  struct window { std::size_t k, s, p; };
  for (const window win : {window{3, 1, 1}, window{3, 2, 1}, window{2, 2, 0}, window{2, 1, 1}}) {
    std::size_t out_h = 0, out_w = 0;
    maps.push_back({window_taps(H, W, win.k, win.s, win.p, out_h, out_w), win.k * win.k});
  }
  // A user's map may name one pixel twice in a window: it is one element, selected once, and
  // the adjoint adds gy to it once (a device back end summing over the map's inverse sees the
  // pixel once per tap, and must count the window once).
  maps.push_back({{0, 0, 1, 2, -1, 2, 7, 19, 7, 5, 5, 5}, 3});
  for (std::size_t m = 0; m < maps.size(); ++m) {
    CAPTURE(m);
    const auto& taps = maps[m].taps;
    const std::size_t kk = maps[m].kk, out_pixels = taps.size() / kk, n = batch * out_pixels * C;

    // The naive reference: the largest real element, then the first tap that holds it.
    std::vector<double> y_ref(n);
    std::vector<std::int64_t> arg_ref(n);
    for (std::size_t b = 0; b < batch; ++b)
      for (std::size_t q = 0; q < out_pixels; ++q)
        for (std::size_t c = 0; c < C; ++c) {
          const auto at = [&](std::size_t t) { return ((b * in_pixels + std::size_t(taps[q * kk + t])) * C + c); };
          double mx = -std::numeric_limits<double>::infinity();
          for (std::size_t t = 0; t < kk; ++t)
            if (taps[q * kk + t] >= 0) mx = std::max(mx, x_h[at(t)]);
          const std::size_t o = (b * out_pixels + q) * C + c;
          y_ref[o] = mx;
          for (std::size_t t = 0; t < kk; ++t)
            if (taps[q * kk + t] >= 0 && x_h[at(t)] == mx) {
              arg_ref[o] = std::int64_t(at(t));
              break;
            }
        }

    matrix y;
    typename P::index_vector argmax;
    P::window_max_per_sample(x, taps, batch, kk, y, argmax);
    REQUIRE(P::rows(y) == batch * out_pixels);
    REQUIRE(P::cols(y) == C);
    CHECK(values(y) == y_ref);
    CHECK(P::indices_to_host(argmax) == arg_ref);

    // The adjoint adds onto gx's contents, in ascending output order.
    std::vector<double> gy_h(n);
    for (auto& v : gy_h) v = double(S(normal(gen)));
    std::vector<S> gx_ref(gx0_h.begin(), gx0_h.end());
    for (std::size_t o = 0; o < n; ++o) gx_ref[std::size_t(arg_ref[o])] += S(gy_h[o]);
    matrix gx = as_matrix(batch * in_pixels, C, gx0_h);
    P::window_max_adjoint_per_sample(as_matrix(batch * out_pixels, C, gy_h), taps, batch, kk, argmax, gx);
    CHECK(values(gx) == std::vector<double>(gx_ref.begin(), gx_ref.end()));

    // The tangent reads ẋ at the selection.
    std::vector<double> y_dot_ref(n);
    for (std::size_t o = 0; o < n; ++o) y_dot_ref[o] = x_dot_h[std::size_t(arg_ref[o])];
    matrix y_dot;
    P::window_max_tangent(x_dot, argmax, y_dot);
    REQUIRE(P::rows(y_dot) == batch * out_pixels);
    CHECK(values(y_dot) == y_dot_ref);
  }

  // A window of padding alone has no maximum; shapes that do not match are named.
  std::vector<std::int64_t> padded = {0, 1, -1, -1};
  matrix y;
  typename P::index_vector argmax;
  CHECK_THROWS_WITH_AS(P::window_max_per_sample(x, padded, batch, 2, y, argmax),
                       doctest::Contains("window_max_per_sample: the window of output pixel 1 is all padding"),
                       std::invalid_argument);
  CHECK_THROWS_AS(P::window_max_per_sample(x, padded, batch, 3, y, argmax), std::invalid_argument);
  CHECK_THROWS_WITH_AS(P::window_max_per_sample(x, {0, std::int64_t(in_pixels)}, batch, 2, y, argmax),
                       doctest::Contains("is out of range"), std::invalid_argument);
  P::window_max_per_sample(x, {0, 1, 2, 3}, batch, 2, y, argmax);  // two output pixels: 12 selections
  matrix gx = P::matrix_zeros(batch * in_pixels, C);
  CHECK_THROWS_WITH_AS(P::window_max_adjoint_per_sample(P::matrix_zeros(batch, C), {0, 1}, batch, 2, argmax, gx),
                       doctest::Contains("window_max_adjoint_per_sample: a selection of 12 outputs for 6 elements"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(P::window_max_tangent(P::matrix_zeros(batch * in_pixels, 5), argmax, y),
                       doctest::Contains("window_max_tangent: a selection of 12 outputs is not rows of 5 channels"),
                       std::invalid_argument);
}

}  // namespace test
