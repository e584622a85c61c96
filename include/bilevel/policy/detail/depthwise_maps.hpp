// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// Depthwise convolution through a per-sample tap map, the host policies' (Eigen, xtensor)
/// optional depthwise primitives, written once for both: index[p · taps + t] is the input
/// pixel that output pixel p reads at tap t (−1: padding), channels map one to one, and
/// channel c's weights are w[c · taps, (c + 1) · taps). x is batch · in_pixels rows of C
/// channels, y batch · out_pixels rows.
///
/// A depthwise convolution as grouped patch products (one k²-long GEMV per channel, each on a
/// copied column block of k²-times-the-input patches) moves far more memory than it computes;
/// these loops read each input row once per tap and never build patches.
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "bilevel/policy/detail/per_sample_maps.hpp"

namespace bilevel::policy::detail {

/// The weights of C channels × taps, transposed to tap-major order (once per call: the loops
/// run over channels innermost, contiguous in activations and weights alike).
template <class S>
std::vector<S> taps_major(const S* w, std::size_t channels, std::size_t taps) {
  std::vector<S> wt(taps * channels);
  for (std::size_t c = 0; c < channels; ++c)
    for (std::size_t t = 0; t < taps; ++t) wt[t * channels + c] = w[c * taps + t];
  return wt;
}

/// Calls f(y_row, x_row, t) for every sample, output pixel and tap that reads an input pixel
/// (not padding): the offsets of the output row and of the input row it reads, in elements.
template <class F>
void for_each_tap(const std::vector<std::int64_t>& index, std::size_t taps, std::size_t batch, std::size_t in_pixels,
                  std::size_t channels, F f) {
  const std::size_t out_pixels = index.size() / taps;
  for (std::size_t b = 0; b < batch; ++b)
    for (std::size_t p = 0; p < out_pixels; ++p)
      for (std::size_t t = 0; t < taps; ++t) {
        const std::int64_t q = index[p * taps + t];
        if (q >= 0) f((b * out_pixels + p) * channels, (b * in_pixels + std::size_t(q)) * channels, t);
      }
}

/// y = beta · y + Σ_t x[pixel(p, t)] ⊙ w_t.
template <class S>
void depthwise_forward(const S* x, std::size_t in_pixels, std::size_t channels, const std::vector<std::int64_t>& index,
                       std::size_t taps, std::size_t batch, const S* w, S beta, S* y) {
  const std::size_t C = channels, n = batch * (index.size() / taps) * C;
  for (std::size_t i = 0; i < n; ++i) y[i] = beta == S(0) ? S(0) : beta * y[i];
  const auto wt = taps_major(w, C, taps);
  for_each_tap(index, taps, batch, in_pixels, C, [&](std::size_t yi, std::size_t xi, std::size_t t) {
    S* __restrict yr = y + yi;
    const S* __restrict xr = x + xi;
    const S* __restrict wr = wt.data() + t * C;
    for (std::size_t c = 0; c < C; ++c) yr[c] += xr[c] * wr[c];
  });
}

/// gx[pixel(p, t)] += gy[p] ⊙ w_t (the adjoint in x).
template <class S>
void depthwise_input_adjoint(const S* gy, std::size_t in_pixels, std::size_t channels,
                             const std::vector<std::int64_t>& index, std::size_t taps, std::size_t batch, const S* w,
                             S* gx) {
  const std::size_t C = channels;
  const auto wt = taps_major(w, C, taps);
  for_each_tap(index, taps, batch, in_pixels, C, [&](std::size_t yi, std::size_t xi, std::size_t t) {
    const S* __restrict gr = gy + yi;
    S* __restrict xr = gx + xi;
    const S* __restrict wr = wt.data() + t * C;
    for (std::size_t c = 0; c < C; ++c) xr[c] += gr[c] * wr[c];
  });
}

/// g_w[c · taps + t] = beta · g_w[...] + Σ_{b, p} x[pixel(p, t), c] · gy[p, c] (the adjoint in
/// w), summed in a fixed order.
template <class S>
void depthwise_weight_adjoint(const S* x, const S* gy, std::size_t in_pixels, std::size_t channels,
                              const std::vector<std::int64_t>& index, std::size_t taps, std::size_t batch, S beta,
                              S* gw) {
  const std::size_t C = channels;
  std::vector<S> acc(taps * C, S(0));
  for_each_tap(index, taps, batch, in_pixels, C, [&](std::size_t yi, std::size_t xi, std::size_t t) {
    const S* __restrict gr = gy + yi;
    const S* __restrict xr = x + xi;
    S* __restrict ar = acc.data() + t * C;
    for (std::size_t c = 0; c < C; ++c) ar[c] += xr[c] * gr[c];
  });
  for (std::size_t c = 0; c < C; ++c)
    for (std::size_t t = 0; t < taps; ++t)
      gw[c * taps + t] = (beta == S(0) ? S(0) : beta * gw[c * taps + t]) + acc[t * C + c];
}

/// Throws unless x (rows_x × C) and y (rows_y × C) are `batch` samples each, the tap map has
/// whole output pixels and reads inside x's samples; gives x's pixels per sample.
inline std::size_t depthwise_shapes(const char* policy, const char* op, std::size_t rows_x, std::size_t cols_x,
                                    std::size_t rows_y, std::size_t cols_y, const std::vector<std::int64_t>& index,
                                    std::size_t taps, std::size_t batch) {
  if (cols_x != cols_y)
    throw std::invalid_argument(std::string("bilevel::policy::") + policy + "::" + op + ": the input has " +
                                std::to_string(cols_x) + " channels, the output " + std::to_string(cols_y));
  return tap_map_input_pixels(policy, op, rows_x, rows_y, index, taps, batch);
}

/// The three primitives for a host policy `Policy` (its rows/cols/size/matrix_zeros and
/// `name`), inherited by it.
template <class Policy>
struct host_depthwise {
  /// y (batch · out_pixels × C) = beta · y + Σ_t x[pixel(p, t)] ⊙ w_t, w = theta[offset, +C·taps).
  template <class Matrix, class Vector, class Scalar>
  static void depthwise_per_sample(const Matrix& x, const std::vector<std::int64_t>& index, std::size_t batch,
                                   std::size_t taps, const Vector& theta, std::size_t offset, Scalar beta, Matrix& y) {
    const char* op = "depthwise_per_sample";
    const std::size_t out_rows = batch * (taps ? index.size() / taps : 0), C = Policy::cols(x);
    if (beta == Scalar(0) && (Policy::rows(y) != out_rows || Policy::cols(y) != C)) y = Policy::matrix_zeros(out_rows, C);
    const std::size_t in_pixels =
        depthwise_shapes(Policy::name, op, Policy::rows(x), C, Policy::rows(y), Policy::cols(y), index, taps, batch);
    require_weights_inside(Policy::name, op, Policy::size(theta), offset, C * taps);
    depthwise_forward(x.data(), in_pixels, C, index, taps, batch, theta.data() + offset, beta, y.data());
  }
  /// gx += the adjoint in x: gx[pixel(p, t)] += gy[p] ⊙ w_t.
  template <class Matrix, class Vector>
  static void depthwise_input_adjoint_per_sample(const Matrix& gy, const std::vector<std::int64_t>& index,
                                                 std::size_t batch, std::size_t taps, const Vector& theta,
                                                 std::size_t offset, Matrix& gx) {
    const char* op = "depthwise_input_adjoint_per_sample";
    const std::size_t C = Policy::cols(gx), in_pixels = depthwise_shapes(Policy::name, op, Policy::rows(gx), C,
                                                                         Policy::rows(gy), Policy::cols(gy), index,
                                                                         taps, batch);
    require_weights_inside(Policy::name, op, Policy::size(theta), offset, C * taps);
    depthwise_input_adjoint(gy.data(), in_pixels, C, index, taps, batch, theta.data() + offset, gx.data());
  }
  /// grad[offset + c · taps + t] = beta · grad[...] + Σ_{b, p} x[pixel(p, t), c] gy[p, c].
  template <class Matrix, class Vector, class Scalar>
  static void depthwise_weight_adjoint_per_sample(const Matrix& x, const Matrix& gy,
                                                  const std::vector<std::int64_t>& index, std::size_t batch,
                                                  std::size_t taps, Scalar beta, Vector& grad, std::size_t offset) {
    const char* op = "depthwise_weight_adjoint_per_sample";
    const std::size_t C = Policy::cols(x), in_pixels = depthwise_shapes(Policy::name, op, Policy::rows(x), C,
                                                                        Policy::rows(gy), Policy::cols(gy), index,
                                                                        taps, batch);
    require_weights_inside(Policy::name, op, Policy::size(grad), offset, C * taps);
    depthwise_weight_adjoint(x.data(), gy.data(), in_pixels, C, index, taps, batch, beta, grad.data() + offset);
  }

};

}  // namespace bilevel::policy::detail
