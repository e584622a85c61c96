// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// Direct (im2col-free) dense convolution through a per-sample tap map, the host policies'
/// (Eigen, xtensor) optional dense-convolution primitives, written once for both.
///
/// index[p · taps + t] is the input pixel that output pixel p reads at tap t (−1: padding);
/// x is batch · in_pixels rows of K channels, y batch · out_pixels rows of N channels, and the
/// weights are taps blocks of K × N, row-major: w[(t · K + k) · N + n] (a patch map's weight
/// matrix with rows in (tap, channel) order). Then
///   value:          y[p]  = Σ_t x[pixel(p, t)] W_t
///   input adjoint:  gx[q] = Σ_t gy[p(q, t)] W_tᵀ, p(q, t) the output pixel that reads q at tap t
///   weight adjoint: G_t   = Σ_{b, p} x[pixel(p, t)]ᵀ gy[p]
///
/// Why: a convolution with few output channels (16 to 64 in a CIFAR ResNet) as im2col + GEMM
/// copies its k²-times-the-input patches once to gather them and again for the GEMM's packing,
/// for only N multiply-adds per copied element; the copies cost as much as the arithmetic.
/// These loops read the input rows in place and keep a block of outputs in registers: for a
/// block of PB output rows and V SIMD vectors of output channels, each weight vector loaded is
/// used PB times and each input element broadcast V times. The input adjoint runs the same
/// loop over the inverse map (each (input pixel, tap) is read by at most one output pixel in a
/// convolution's map, which the primitive checks), so it gathers instead of scattering. The
/// weight adjoint keeps a KB × V tile of G_t in registers over a block of rows that stays in
/// cache.
///
/// Every sum runs in a fixed order (taps, then channels; rows in order for the weights), so
/// results do not depend on anything but the inputs.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "bilevel/policy/detail/per_sample_maps.hpp"

namespace bilevel::policy::detail {

/// The widest SIMD register the compiler targets, in bytes, and how many there are: the
/// register blocks below are sized to fill, not spill, them.
#if defined(__AVX512F__)
inline constexpr std::size_t simd_bytes = 64, simd_registers = 32;
#elif defined(__AVX__)
inline constexpr std::size_t simd_bytes = 32, simd_registers = 16;
#else
inline constexpr std::size_t simd_bytes = 16, simd_registers = 16;
#endif

/// A SIMD vector of S, `Bytes` wide, through the GCC/Clang vector extension (the compiler
/// picks the instructions for the target: one register on AVX-512 for 16 floats, halves on
/// AVX2); one lane (plain S) for other compilers and for Bytes == sizeof(S).
template <class S, std::size_t Bytes = simd_bytes>
struct simd {
#if defined(__GNUC__)
  static constexpr std::size_t lanes = Bytes / sizeof(S);
  typedef S type __attribute__((vector_size(Bytes), aligned(sizeof(S))));
#else
  static constexpr std::size_t lanes = 1;
  using type = S;
#endif
};
template <class S>
struct simd<S, sizeof(S)> {
  static constexpr std::size_t lanes = 1;
  using type = S;
};
/// Vectors of half and a quarter of the widest, for the columns past the last whole vector
/// (8 output channels on AVX-512 take one half-width vector instead of 8 single lanes).
template <class S>
using half_simd = simd<S, std::max(simd_bytes / 2, sizeof(S))>;
template <class S>
using quarter_simd = simd<S, std::max(simd_bytes / 4, sizeof(S))>;
template <class S>
using scalar_lane = simd<S, sizeof(S)>;

template <class Vec, class S>
inline Vec load_vector(const S* p) {
  Vec v;
  std::memcpy(&v, p, sizeof(Vec));
  return v;
}
template <class Vec, class S>
inline void store_vector(S* p, const Vec& v) {
  std::memcpy(p, &v, sizeof(Vec));
}

/// Rows per register block of the tap product and the weight adjoint: with V = 2 vectors of
/// output columns, 2 · rows accumulators plus the loaded vectors fill about half to two thirds
/// of the register file (16 accumulators of 32 on AVX-512, 12 of 16 on AVX2).
inline constexpr std::size_t tap_rows_per_block = simd_registers >= 32 ? 8 : 6;

/// y rows [r0, r0 + PB) (`valid` of them real), columns [n0, n0 + V · lanes):
/// y = beta · y + Σ_t Σ_k x[src(r, t), k] · w[(t · K + k) · N + n]. `src(i, t)` gives row i's
/// source row pointer at tap t (null for padding or a missing row: read as zeros, and a tap
/// that only reads padding is skipped).
template <class Lane, std::size_t PB, std::size_t V, class S, class Source>
inline void tap_block(Source src, const S* zeros, std::size_t valid, std::size_t taps, std::size_t K, const S* w,
                      std::size_t N, std::size_t n0, S beta, S* y, std::size_t r0) {
  using Vec = typename Lane::type;
  constexpr std::size_t L = Lane::lanes;
  Vec acc[PB][V];
  for (std::size_t i = 0; i < PB; ++i)
    for (std::size_t j = 0; j < V; ++j) {
      acc[i][j] = Vec{};
      if (beta != S(0) && i < valid) acc[i][j] = load_vector<Vec>(y + (r0 + i) * N + n0 + j * L) * beta;
    }
  for (std::size_t t = 0; t < taps; ++t) {
    const S* xr[PB];
    bool any = false;
    for (std::size_t i = 0; i < PB; ++i) {
      xr[i] = src(i, t);
      any = any || xr[i];
    }
    if (!any) continue;  // the whole block reads padding at this tap
    for (std::size_t i = 0; i < PB; ++i)
      if (!xr[i]) xr[i] = zeros;
    const S* wt = w + t * K * N + n0;
    for (std::size_t k = 0; k < K; ++k) {
      Vec wv[V];
      for (std::size_t j = 0; j < V; ++j) wv[j] = load_vector<Vec>(wt + k * N + j * L);
      for (std::size_t i = 0; i < PB; ++i) {
        const S xv = xr[i][k];
        for (std::size_t j = 0; j < V; ++j) acc[i][j] += xv * wv[j];
      }
    }
  }
  for (std::size_t i = 0; i < valid; ++i)
    for (std::size_t j = 0; j < V; ++j) store_vector(y + (r0 + i) * N + n0 + j * L, acc[i][j]);
}

/// y (batch · dst_pixels × N) = beta · y + Σ_t x[map(q, t)] M_t, with map(q, t) =
/// index[q · taps + t] a pixel of the same sample in x (batch · src_pixels × K) or −1, and
/// M_t = m[t · K · N, (t + 1) · K · N) row-major K × N. The value pass and (on the inverse map,
/// with transposed weights) the input adjoint.
template <class S>
void tap_product(const S* x, std::size_t src_pixels, std::size_t K, const std::vector<std::int64_t>& index,
                 std::size_t taps, std::size_t batch, const S* m, std::size_t N, S beta, S* y) {
  constexpr std::size_t PB = tap_rows_per_block, L = simd<S>::lanes;
  const std::size_t dst_pixels = index.size() / taps, rows = batch * dst_pixels;
  const std::vector<S> zeros(K, S(0));
  for (std::size_t r0 = 0; r0 < rows; r0 += PB) {
    const std::size_t valid = std::min(PB, rows - r0);
    const S* base[PB];                   // each row's sample in x
    const std::int64_t* taps_of[PB];     // each row's tap map entries
    for (std::size_t i = 0; i < PB; ++i) {
      const std::size_t r = r0 + std::min(i, valid - 1), b = r / dst_pixels, q = r % dst_pixels;
      base[i] = x + b * src_pixels * K;
      taps_of[i] = index.data() + q * taps;
    }
    const auto src = [&](std::size_t i, std::size_t t) -> const S* {
      const std::int64_t s = i < valid ? taps_of[i][t] : -1;
      return s >= 0 ? base[i] + std::size_t(s) * K : nullptr;
    };
    std::size_t n0 = 0;
    for (; n0 + 2 * L <= N; n0 += 2 * L) tap_block<simd<S>, PB, 2>(src, zeros.data(), valid, taps, K, m, N, n0, beta, y, r0);
    for (; n0 + L <= N; n0 += L) tap_block<simd<S>, PB, 1>(src, zeros.data(), valid, taps, K, m, N, n0, beta, y, r0);
    for (; n0 + half_simd<S>::lanes <= N; n0 += half_simd<S>::lanes)
      tap_block<half_simd<S>, PB, 1>(src, zeros.data(), valid, taps, K, m, N, n0, beta, y, r0);
    for (; n0 + quarter_simd<S>::lanes <= N; n0 += quarter_simd<S>::lanes)
      tap_block<quarter_simd<S>, PB, 1>(src, zeros.data(), valid, taps, K, m, N, n0, beta, y, r0);
    for (; n0 < N; ++n0) tap_block<scalar_lane<S>, PB, 1>(src, zeros.data(), valid, taps, K, m, N, n0, beta, y, r0);
  }
}

/// The inverse of a convolution's tap map: inverse[q · taps + t] = the output pixel that
/// reads input pixel q at tap t, or −1. Throws if two output pixels read one input pixel at
/// the same tap (no convolution's map does).
inline std::vector<std::int64_t> inverse_tap_map(const char* policy, const char* op,
                                                 const std::vector<std::int64_t>& index, std::size_t taps,
                                                 std::size_t in_pixels) {
  std::vector<std::int64_t> inverse(in_pixels * taps, -1);
  const std::size_t out_pixels = index.size() / taps;
  for (std::size_t p = 0; p < out_pixels; ++p)
    for (std::size_t t = 0; t < taps; ++t) {
      const std::int64_t q = index[p * taps + t];
      if (q < 0) continue;
      std::int64_t& slot = inverse[std::size_t(q) * taps + t];
      if (slot >= 0)
        throw std::invalid_argument(std::string("bilevel::policy::") + policy + "::" + op + ": output pixels " +
                                    std::to_string(slot) + " and " + std::to_string(p) + " both read input pixel " +
                                    std::to_string(q) + " at tap " + std::to_string(t) +
                                    ": not a convolution's tap map");
      slot = std::int64_t(p);
    }
  return inverse;
}

/// The weights transposed tap by tap: K × N blocks to N × K.
template <class S>
std::vector<S> transposed_taps(const S* w, std::size_t taps, std::size_t K, std::size_t N) {
  std::vector<S> wt(taps * K * N);
  for (std::size_t t = 0; t < taps; ++t)
    for (std::size_t k = 0; k < K; ++k)
      for (std::size_t n = 0; n < N; ++n) wt[(t * N + n) * K + k] = w[(t * K + k) * N + n];
  return wt;
}

/// acc (the KB × V · lanes tile at rows k0, columns n0 of G_t, stored row-major K × N) +=
/// Σ over rows r of the block of x[src(r, t), k0 + i] · gy[r, n0 + j].
template <class Lane, std::size_t KB, std::size_t V, class S, class Source>
inline void weight_tile(Source src, std::size_t r_begin, std::size_t r_end, std::size_t t, std::size_t k0,
                        const S* gy, std::size_t N, std::size_t n0, S* g_t) {
  using Vec = typename Lane::type;
  constexpr std::size_t L = Lane::lanes;
  Vec acc[KB][V];
  for (std::size_t i = 0; i < KB; ++i)
    for (std::size_t j = 0; j < V; ++j) acc[i][j] = load_vector<Vec>(g_t + (k0 + i) * N + n0 + j * L);
  for (std::size_t r = r_begin; r < r_end; ++r) {
    const S* xr = src(r, t);
    if (!xr) continue;
    xr += k0;
    Vec gv[V];
    for (std::size_t j = 0; j < V; ++j) gv[j] = load_vector<Vec>(gy + r * N + n0 + j * L);
    for (std::size_t i = 0; i < KB; ++i) {
      const S xv = xr[i];
      for (std::size_t j = 0; j < V; ++j) acc[i][j] += xv * gv[j];
    }
  }
  for (std::size_t i = 0; i < KB; ++i)
    for (std::size_t j = 0; j < V; ++j) store_vector(g_t + (k0 + i) * N + n0 + j * L, acc[i][j]);
}

/// Every column tile of rows [k0, k0 + KB) of G_t: two vectors wide, then one, half, a quarter
/// and single lanes.
template <std::size_t KB, class S, class Source>
inline void column_tiles(Source src, std::size_t r0, std::size_t r1, std::size_t t, std::size_t k0, const S* gy,
                         std::size_t N, S* g_t) {
  constexpr std::size_t L = simd<S>::lanes;
  std::size_t n0 = 0;
  for (; n0 + 2 * L <= N; n0 += 2 * L) weight_tile<simd<S>, KB, 2>(src, r0, r1, t, k0, gy, N, n0, g_t);
  for (; n0 + L <= N; n0 += L) weight_tile<simd<S>, KB, 1>(src, r0, r1, t, k0, gy, N, n0, g_t);
  for (; n0 + half_simd<S>::lanes <= N; n0 += half_simd<S>::lanes)
    weight_tile<half_simd<S>, KB, 1>(src, r0, r1, t, k0, gy, N, n0, g_t);
  for (; n0 + quarter_simd<S>::lanes <= N; n0 += quarter_simd<S>::lanes)
    weight_tile<quarter_simd<S>, KB, 1>(src, r0, r1, t, k0, gy, N, n0, g_t);
  for (; n0 < N; ++n0) weight_tile<scalar_lane<S>, KB, 1>(src, r0, r1, t, k0, gy, N, n0, g_t);
}

/// gw (taps · K × N) = beta · gw + Σ_{b, p} x[pixel(p, t)]ᵀ gy[p], tap by tap.
template <class S>
void tap_weight_adjoint(const S* x, std::size_t in_pixels, std::size_t K, const S* gy, std::size_t N,
                        const std::vector<std::int64_t>& index, std::size_t taps, std::size_t batch, S beta, S* gw) {
  constexpr std::size_t KB = tap_rows_per_block;
  const std::size_t out_pixels = index.size() / taps, rows = batch * out_pixels;
  std::vector<S> g(taps * K * N, S(0));
  // Rows in blocks whose gy and x rows stay in the L2 cache while every tile passes over them;
  // each block's source rows are looked up once (rows[(r − r0) · taps + t], null for padding).
  const std::size_t block = std::max<std::size_t>(16, (std::size_t(1) << 15) / std::max<std::size_t>(K + N, 1));
  std::vector<const S*> sources(block * taps);
  for (std::size_t r0 = 0; r0 < rows; r0 += block) {
    const std::size_t r1 = std::min(rows, r0 + block);
    for (std::size_t r = r0; r < r1; ++r) {
      const std::size_t b = r / out_pixels, p = r % out_pixels;
      for (std::size_t t = 0; t < taps; ++t) {
        const std::int64_t s = index[p * taps + t];
        sources[(r - r0) * taps + t] = s >= 0 ? x + (b * in_pixels + std::size_t(s)) * K : nullptr;
      }
    }
    const auto src = [&](std::size_t r, std::size_t t) { return sources[(r - r0) * taps + t]; };
    for (std::size_t t = 0; t < taps; ++t) {
      S* g_t = g.data() + t * K * N;
      std::size_t k0 = 0;
      for (; k0 + KB <= K; k0 += KB) column_tiles<KB>(src, r0, r1, t, k0, gy, N, g_t);
      // The last K mod KB input channels in tiles of 4, 2 and 1 (K = 16 on 16-register SIMD,
      // KB = 6, leaves 4: one tile of 4 instead of four single-row tiles, each a pass over
      // the rows for 2 multiply-adds a row).
      if (k0 + 4 <= K) {
        column_tiles<4>(src, r0, r1, t, k0, gy, N, g_t);
        k0 += 4;
      }
      if (k0 + 2 <= K) {
        column_tiles<2>(src, r0, r1, t, k0, gy, N, g_t);
        k0 += 2;
      }
      if (k0 < K) column_tiles<1>(src, r0, r1, t, k0, gy, N, g_t);
    }
  }
  const std::size_t n = taps * K * N;
  for (std::size_t i = 0; i < n; ++i) gw[i] = (beta == S(0) ? S(0) : beta * gw[i]) + g[i];
}

/// The three primitives for a host policy `Policy` (its rows/cols/size/matrix_zeros and
/// `name`), inherited by it. The weights are theta[offset, + taps · K · N), K = x's columns.
template <class Policy>
struct host_dense_conv {
  /// y (batch · out_pixels × N) = beta · y + Σ_t x[pixel(p, t)] W_t.
  template <class Matrix, class Vector, class Scalar>
  static void dense_conv_per_sample(const Matrix& x, const std::vector<std::int64_t>& index, std::size_t batch,
                                    std::size_t taps, const Vector& theta, std::size_t offset, std::size_t N,
                                    Scalar beta, Matrix& y) {
    const char* op = "dense_conv_per_sample";
    const std::size_t out_rows = batch * (taps ? index.size() / taps : 0), K = Policy::cols(x);
    if (beta == Scalar(0) && (Policy::rows(y) != out_rows || Policy::cols(y) != N)) y = Policy::matrix_zeros(out_rows, N);
    columns_are(op, Policy::cols(y), N, "output");
    const std::size_t in_pixels = tap_map_input_pixels(Policy::name, op, Policy::rows(x), Policy::rows(y), index, taps, batch);
    require_weights_inside(Policy::name, op, Policy::size(theta), offset, taps * K * N);
    tap_product(x.data(), in_pixels, K, index, taps, batch, theta.data() + offset, N, beta, y.data());
  }
  /// gx (batch · in_pixels × K) = beta · gx + the adjoint in x of gy (batch · out_pixels × N).
  template <class Matrix, class Vector, class Scalar>
  static void dense_conv_input_adjoint_per_sample(const Matrix& gy, const std::vector<std::int64_t>& index,
                                                  std::size_t batch, std::size_t taps, const Vector& theta,
                                                  std::size_t offset, std::size_t in_pixels, std::size_t K,
                                                  Scalar beta, Matrix& gx) {
    const char* op = "dense_conv_input_adjoint_per_sample";
    if (beta == Scalar(0) && (Policy::rows(gx) != batch * in_pixels || Policy::cols(gx) != K))
      gx = Policy::matrix_zeros(batch * in_pixels, K);
    columns_are(op, Policy::cols(gx), K, "input adjoint");
    if (tap_map_input_pixels(Policy::name, op, Policy::rows(gx), Policy::rows(gy), index, taps, batch) != in_pixels)
      throw std::invalid_argument(std::string("bilevel::policy::") + Policy::name + "::" + op + ": the input adjoint has " +
                                  std::to_string(Policy::rows(gx)) + " rows, not " + std::to_string(batch) +
                                  " samples of " + std::to_string(in_pixels) + " pixels");
    const std::size_t N = Policy::cols(gy);
    require_weights_inside(Policy::name, op, Policy::size(theta), offset, taps * K * N);
    const auto inverse = inverse_tap_map(Policy::name, op, index, taps, in_pixels);
    const auto wt = transposed_taps(theta.data() + offset, taps, K, N);
    tap_product(gy.data(), index.size() / taps, N, inverse, taps, batch, wt.data(), K, beta, gx.data());
  }
  /// grad[offset + (t · K + k) · N + n] = beta · grad[…] + Σ_{b, p} x[pixel(p, t), k] gy[p, n].
  template <class Matrix, class Vector, class Scalar>
  static void dense_conv_weight_adjoint_per_sample(const Matrix& x, const Matrix& gy,
                                                   const std::vector<std::int64_t>& index, std::size_t batch,
                                                   std::size_t taps, Scalar beta, Vector& grad, std::size_t offset) {
    const char* op = "dense_conv_weight_adjoint_per_sample";
    const std::size_t K = Policy::cols(x), N = Policy::cols(gy);
    const std::size_t in_pixels = tap_map_input_pixels(Policy::name, op, Policy::rows(x), Policy::rows(gy), index, taps, batch);
    require_weights_inside(Policy::name, op, Policy::size(grad), offset, taps * K * N);
    tap_weight_adjoint(x.data(), in_pixels, K, gy.data(), N, index, taps, batch, beta, grad.data() + offset);
  }

 private:
  static void columns_are(const char* op, std::size_t got, std::size_t want, const char* what) {
    if (got != want)
      throw std::invalid_argument(std::string("bilevel::policy::") + Policy::name + "::" + op + ": the " + what +
                                  " has " + std::to_string(got) + " columns, not " + std::to_string(want));
  }
};

}  // namespace bilevel::policy::detail
