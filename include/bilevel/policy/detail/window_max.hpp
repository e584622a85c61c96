// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// Max pooling as three direct primitives, written once for the host policies (Eigen,
/// xtensor), with the shape checks the CUDA policy shares.
///
/// The windows come as a per-sample tap map, as the depthwise primitives take theirs:
/// index[p · taps + t] is the input pixel that output pixel p reads at tap t, −1 for padding,
/// and channels map one to one. x is batch · in_pixels rows of C channels, y batch ·
/// out_pixels rows.
///   window_max:          y[o] = the largest of o's window, argmax[o] = its position in x
///   window_max_adjoint:  gx[argmax[o]] += gy[o]
///   window_max_tangent:  ẏ[o] = ẋ[argmax[o]]
/// Padding counts as −∞: it is never selected, and every window must hold an input pixel.
/// Ties go to the first maximum in tap order (a later element must be strictly larger), so a
/// window whose first element is NaN keeps it. The selection is one index per output, where
/// a gathered window matrix with a one-hot row per output would be `taps` values per output.
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "bilevel/policy/detail/depthwise_maps.hpp"

namespace bilevel::policy::detail {

/// Throws unless x (rows_x × C) and y (rows_y × C) are `batch` samples of the tap map's
/// shapes (depthwise_shapes) and every window holds an input pixel; gives x's pixels per
/// sample.
inline std::size_t window_max_shapes(const char* policy, const char* op, std::size_t rows_x, std::size_t cols_x,
                                     std::size_t rows_y, std::size_t cols_y, const std::vector<std::int64_t>& index,
                                     std::size_t taps, std::size_t batch) {
  const std::size_t in_pixels = depthwise_shapes(policy, op, rows_x, cols_x, rows_y, cols_y, index, taps, batch);
  for (std::size_t p = 0; p < index.size() / taps; ++p) {
    bool real = false;
    for (std::size_t t = 0; t < taps; ++t) real = real || index[p * taps + t] >= 0;
    if (!real)
      throw std::invalid_argument(std::string("bilevel::policy::") + policy + "::" + op +
                                  ": the window of output pixel " + std::to_string(p) + " is all padding");
  }
  return in_pixels;
}

/// Throws unless the selection has one entry per output element (of the adjoint gy).
inline void require_selection_of(const char* policy, const char* op, std::size_t selected, std::size_t elements) {
  if (selected != elements)
    throw std::invalid_argument(std::string("bilevel::policy::") + policy + "::" + op + ": a selection of " +
                                std::to_string(selected) + " outputs for " + std::to_string(elements) + " elements");
}

/// y and argmax (batch · out_pixels · C each) from x through the tap map. The loop runs over
/// channels innermost, contiguous in x, y and argmax alike, and selects without a branch or a
/// conditional store (a ternary there became masked stores, several times slower), so it
/// vectorises; the first real tap starts each window, as the −∞ padding implies.
template <class S>
void window_max_forward(const S* x, std::size_t in_pixels, std::size_t channels, const std::vector<std::int64_t>& index,
                        std::size_t taps, std::size_t batch, S* y, std::int64_t* argmax) {
  const std::size_t C = channels, out_pixels = index.size() / taps;
  for (std::size_t b = 0; b < batch; ++b)
    for (std::size_t p = 0; p < out_pixels; ++p) {
      const std::int64_t* w = index.data() + p * taps;
      S* __restrict yr = y + (b * out_pixels + p) * C;
      std::int64_t* __restrict ar = argmax + (b * out_pixels + p) * C;
      std::size_t t = 0;
      while (w[t] < 0) ++t;  // window_max_shapes: there is a real tap
      std::int64_t from = std::int64_t((b * in_pixels + std::size_t(w[t])) * C);
      for (std::size_t c = 0; c < C; ++c) {
        yr[c] = x[std::size_t(from) + c];
        ar[c] = from + std::int64_t(c);
      }
      for (++t; t < taps; ++t) {
        if (w[t] < 0) continue;
        from = std::int64_t((b * in_pixels + std::size_t(w[t])) * C);
        const S* __restrict xr = x + from;
        for (std::size_t c = 0; c < C; ++c) {
          const S v = xr[c], current = yr[c];
          const std::int64_t a = ar[c], keep = -std::int64_t(v > current);  // all ones where v wins (strictly)
          yr[c] = v > current ? v : current;
          ar[c] = a ^ ((a ^ (from + std::int64_t(c))) & keep);
        }
      }
    }
}

/// gx[argmax[o]] += gy[o], in ascending o (the order the CUDA policy reproduces).
template <class S>
void window_max_adjoint(const S* gy, const std::int64_t* argmax, std::size_t n, S* gx) {
  for (std::size_t o = 0; o < n; ++o) gx[argmax[o]] += gy[o];
}

/// The three primitives for a host policy `Policy` (its rows/cols/matrix_zeros, `name`, and
/// `index_vector` = std::vector<std::int64_t>), inherited by it.
template <class Policy>
struct host_window_max {
  /// y ((batch · out_pixels) × C) = each window's maximum; argmax = the position in x's
  /// storage of the element it took (the first maximum; padding never).
  template <class Matrix>
  static void window_max_per_sample(const Matrix& x, const std::vector<std::int64_t>& index, std::size_t batch,
                                    std::size_t taps, Matrix& y, std::vector<std::int64_t>& argmax) {
    if (&x == &y) {
      Matrix tmp;
      window_max_per_sample(x, index, batch, taps, tmp, argmax);
      y = std::move(tmp);
      return;
    }
    const std::size_t out_rows = batch * (taps ? index.size() / taps : 0), C = Policy::cols(x);
    const std::size_t in_pixels =
        window_max_shapes(Policy::name, "window_max_per_sample", Policy::rows(x), C, out_rows, C, index, taps, batch);
    if (Policy::rows(y) != out_rows || Policy::cols(y) != C) y = Policy::matrix_zeros(out_rows, C);
    argmax.resize(out_rows * C);
    window_max_forward(x.data(), in_pixels, C, index, taps, batch, y.data(), argmax.data());
  }
  /// gx += the adjoint at the selection: gx[argmax[o]] += gy[o]. The tap map is only checked
  /// here; a device back end sums through its inverse, so that it needs no atomics.
  template <class Matrix>
  static void window_max_adjoint_per_sample(const Matrix& gy, const std::vector<std::int64_t>& index,
                                            std::size_t batch, std::size_t taps,
                                            const std::vector<std::int64_t>& argmax, Matrix& gx) {
    const char* op = "window_max_adjoint_per_sample";
    window_max_shapes(Policy::name, op, Policy::rows(gx), Policy::cols(gx), Policy::rows(gy), Policy::cols(gy), index,
                      taps, batch);
    require_selection_of(Policy::name, op, argmax.size(), std::size_t(gy.size()));
    window_max_adjoint(gy.data(), argmax.data(), argmax.size(), gx.data());
  }
  /// y_dot (x_dot's columns, one element per selected one) = x_dot read at the selection.
  template <class Matrix>
  static void window_max_tangent(const Matrix& x_dot, const std::vector<std::int64_t>& argmax, Matrix& y_dot) {
    const std::size_t C = Policy::cols(x_dot);
    if (C == 0 || argmax.size() % C != 0)
      throw std::invalid_argument(std::string("bilevel::policy::") + Policy::name +
                                  "::window_max_tangent: a selection of " + std::to_string(argmax.size()) +
                                  " outputs is not rows of " + std::to_string(C) + " channels");
    if (&x_dot == &y_dot) {
      Matrix tmp;
      window_max_tangent(x_dot, argmax, tmp);
      y_dot = std::move(tmp);
      return;
    }
    if (Policy::rows(y_dot) != argmax.size() / C || Policy::cols(y_dot) != C)
      y_dot = Policy::matrix_zeros(argmax.size() / C, C);
    const auto* s = x_dot.data();
    auto* o = y_dot.data();
    for (std::size_t i = 0; i < argmax.size(); ++i) o[i] = s[argmax[i]];
  }
};

}  // namespace bilevel::policy::detail
