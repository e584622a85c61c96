// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// The host policies' (Eigen, xtensor) fused element-wise primitives, written once for both on
/// raw storage; the CUDA policy runs the same arithmetic as one kernel each:
///   zip_apply:                      f(a_i, b_i, ...) over several vectors at once, writable
///                                   ones by reference: an optimizer's update, its VJP or its
///                                   JVP in one pass instead of 5 to 20 BLAS-1 calls;
///   softmax_cross_entropy:          a classifier head's losses and logit adjoint in one pass
///                                   over each row (8 primitives composed);
///   softmax_cross_entropy_tangent:  the tangent of that adjoint, weighted (9 primitives);
///   scale_rows_into:                out = diag(factor·c)·src, a weighted adjoint in one pass
///                                   (a copy, a scaled copy of c and scale_rows);
///   scale_entry:                    y = (s·c_i)·x, a weighted sum's first term (a fill and
///                                   axpy_entry);
///   add_scaled_dot_into:            out_i += s·⟨x, y⟩ for vectors (a scaled copy and two
///                                   reshapes before add_dot_into);
///   add_segment_row, column_sums_into_segment: a layer's bias row read from, and its
///                                   gradient written into, the flat parameter vector in place
///                                   (no segment copy out and back);
///   add_segment_row_map:            that bias row added and the activation after it applied
///                                   in one pass (and their tangents);
///   map_column_sums_into_segment:   the activation's adjoint (or its tangent) and the bias
///                                   gradient of the layer before it in one pass.
/// On a host policy a fused pass saves memory traffic; on a device it saves launches, which
/// dominate a small network's step (docs/gpu.md).
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>

#include "bilevel/policy/detail/column_maps.hpp"

namespace bilevel::policy::detail {

/// One row of the cross-entropy head: mass = Σ t, loss = mass·lse(z) − ⟨t, z⟩,
/// d = mass·softmax(z) − t (d may be z's storage: each entry is read before it is written).
template <class S>
void softmax_cross_entropy_row(const S* z, const S* t, std::size_t cols, S& mass, S& loss, S* d) {
  S mx = -std::numeric_limits<S>::infinity();
  for (std::size_t j = 0; j < cols; ++j) mx = std::max(mx, z[j]);
  S s = S(0), m = S(0), tz = S(0);
  for (std::size_t j = 0; j < cols; ++j) {
    s += std::exp(z[j] - mx);
    m += t[j];
    tz += t[j] * z[j];
  }
  mass = m;
  loss = m * (std::log(s) + mx) - tz;
  for (std::size_t j = 0; j < cols; ++j) d[j] = m * (std::exp(z[j] - mx) / s) - t[j];
}

/// One row of its tangent: g = c·mass·(p ⊙ ż − p·⟨p, ż⟩), p = softmax(z).
template <class S>
void softmax_cross_entropy_tangent_row(const S* z, const S* z_dot, std::size_t cols, S mass, S c, S* g) {
  S mx = -std::numeric_limits<S>::infinity();
  for (std::size_t j = 0; j < cols; ++j) mx = std::max(mx, z[j]);
  S s = S(0);
  for (std::size_t j = 0; j < cols; ++j) s += std::exp(z[j] - mx);
  S pdz = S(0);
  for (std::size_t j = 0; j < cols; ++j) {
    g[j] = std::exp(z[j] - mx) / s;  // p, overwritten below
    pdz += g[j] * z_dot[j];
  }
  const S f = c * mass;
  for (std::size_t j = 0; j < cols; ++j) g[j] = f * (g[j] * z_dot[j] - g[j] * pdz);
}

/// V is Policy's vector type, const or not.
template <class V, class Policy>
concept vector_of = std::is_same_v<std::remove_const_t<V>, typename Policy::vector>;

/// The fused primitives for a host policy `Policy` (its rows/cols/size/matrix_zeros/zeros and
/// `name`), inherited by it.
template <class Policy>
struct host_fused_maps : private host_messages<Policy> {
  /// f(a_i, b_i, ...) for i < n over vectors of one length n: a non-const vector is passed to
  /// f by reference (f writes it), a const one by value. Element i of every vector is read
  /// and written by call i alone, so a vector may be read by one call and written by it.
  template <class F, class... V>
    requires(sizeof...(V) > 0 && (vector_of<V, Policy> && ...))
  static void zip_apply(F f, V&... v) {
    const std::size_t n = first_size(v...);
    if (((Policy::size(v) != n) || ...))
      fail("zip_apply", "the vectors' lengths differ (" + lengths(v...) + ")");
    zip_loop(n, f, v.data()...);
  }

  /// mass_i = Σ_j t_ij, losses_i = mass_i·lse(z_i) − ⟨t_i, z_i⟩, d = diag(mass)·softmax(z) − t:
  /// a cross-entropy head's per-sample losses and ∂ℓ_i/∂z_i, targets given as rows of
  /// (soft) class weights.
  template <class Matrix, class Vector>
  static void softmax_cross_entropy(const Matrix& z, const Matrix& t, Vector& mass, Vector& losses, Matrix& d) {
    const std::size_t r = Policy::rows(z), c = Policy::cols(z);
    if (Policy::rows(t) != r || Policy::cols(t) != c)
      fail("softmax_cross_entropy", "logits " + shape(z) + " and targets " + shape(t) + " differ in shape");
    if (Policy::size(mass) != r) mass = Policy::zeros(r);
    if (Policy::size(losses) != r) losses = Policy::zeros(r);
    if (Policy::rows(d) != r || Policy::cols(d) != c) d = Policy::matrix_zeros(r, c);
    for (std::size_t i = 0; i < r; ++i)
      softmax_cross_entropy_row(z.data() + i * c, t.data() + i * c, c, mass.data()[i], losses.data()[i],
                                d.data() + i * c);
  }

  /// g_i = factor·w_i·mass_i·(p_i ⊙ ż_i − p_i·⟨p_i, ż_i⟩), p = softmax(z): the tangent of the
  /// head's adjoint along ż, weighted per sample (w) and overall (factor, e.g. 1/batch).
  template <class Matrix, class Vector, class Factor>
  static void softmax_cross_entropy_tangent(const Matrix& z, const Matrix& z_dot, const Vector& mass,
                                            const Vector& w, Factor factor, Matrix& g) {
    using S = typename Policy::scalar;
    const std::size_t r = Policy::rows(z), c = Policy::cols(z);
    const char* op = "softmax_cross_entropy_tangent";
    if (Policy::rows(z_dot) != r || Policy::cols(z_dot) != c)
      fail(op, "logits " + shape(z) + " and their tangent " + shape(z_dot) + " differ in shape");
    if (Policy::size(mass) != r || Policy::size(w) != r)
      fail(op, std::to_string(r) + " rows, " + std::to_string(Policy::size(mass)) + " target masses and " +
                   std::to_string(Policy::size(w)) + " weights");
    if (&g == &z || &g == &z_dot) fail(op, "the output is an input");
    if (Policy::rows(g) != r || Policy::cols(g) != c) g = Policy::matrix_zeros(r, c);
    for (std::size_t i = 0; i < r; ++i)
      softmax_cross_entropy_tangent_row(z.data() + i * c, z_dot.data() + i * c, c, mass.data()[i],
                                        S(S(factor) * w.data()[i]), g.data() + i * c);
  }

  /// out_ij = src_ij·(c_i·factor); out may be src.
  template <class Matrix, class Vector, class Factor>
  static void scale_rows_into(const Matrix& src, const Vector& c, Factor factor, Matrix& out) {
    using S = typename Policy::scalar;
    const std::size_t r = Policy::rows(src), k = Policy::cols(src);
    if (Policy::size(c) != r)
      fail("scale_rows_into", "matrix is " + shape(src) + " but there are " + std::to_string(Policy::size(c)) +
                                  " row factors");
    if (&out != &src && (Policy::rows(out) != r || Policy::cols(out) != k)) out = Policy::matrix_zeros(r, k);
    for (std::size_t i = 0; i < r; ++i) {
      const S f = c.data()[i] * S(factor);
      const S* x = src.data() + i * k;
      S* o = out.data() + i * k;
      for (std::size_t j = 0; j < k; ++j) o[j] = x[j] * f;
    }
  }

  /// out_i += s·⟨x, y⟩ for vectors, the dot accumulated in double.
  template <class Vector, class Scalar>
  static void add_scaled_dot_into(const Vector& x, const Vector& y, Scalar s, Vector& out, std::size_t i) {
    using S = typename Policy::scalar;
    if (Policy::size(x) != Policy::size(y))
      fail("add_scaled_dot_into", "the vectors have " + std::to_string(Policy::size(x)) + " and " +
                                      std::to_string(Policy::size(y)) + " entries");
    require_range(out, i, 1, "add_scaled_dot_into");
    const S* a = x.data();
    const S* b = y.data();
    double acc = 0.0;
    for (std::size_t k = 0; k < Policy::size(x); ++k) acc += double(a[k]) * double(b[k]);
    out.data()[i] += S(double(s) * acc);
  }

  /// y = (s·c_i)·x, y shaped like x; y may be x.
  template <class Matrix, class Vector, class Scalar>
  static void scale_entry(Scalar s, const Vector& c, std::size_t i, const Matrix& x, Matrix& y) {
    using S = typename Policy::scalar;
    require_range(c, i, 1, "scale_entry");
    const std::size_t r = Policy::rows(x), k = Policy::cols(x);
    if (&y != &x && (Policy::rows(y) != r || Policy::cols(y) != k)) y = Policy::matrix_zeros(r, k);
    const S f = S(s) * c.data()[i];
    const S* in = x.data();
    S* out = y.data();
    for (std::size_t e = 0; e < r * k; ++e) out[e] = f * in[e];
  }

  /// m_ij += v[offset + j]: a bias row added where it lies in the parameter vector.
  template <class Matrix, class Vector>
  static void add_segment_row(Matrix& m, const Vector& v, std::size_t offset) {
    const std::size_t r = Policy::rows(m), c = Policy::cols(m);
    require_range(v, offset, c, "add_segment_row");
    const auto* b = v.data() + offset;
    for (std::size_t i = 0; i < r; ++i) {
      auto* row = m.data() + i * c;
      for (std::size_t j = 0; j < c; ++j) row[j] += b[j];
    }
  }
  /// m_ij += v[offset + j], then out_ij = f(m_ij, x_ij...) for matrices x of m's shape; out
  /// may be m (or an x: entry ij is read before it is written).
  template <class Matrix, class Vector, class F, class... X>
    requires(std::is_same_v<X, Matrix> && ...)
  static void add_segment_row_map(Matrix& m, const Vector& v, std::size_t offset, Matrix& out, F f,
                                  const X&... x) {
    using S = typename Policy::scalar;
    const std::size_t r = Policy::rows(m), c = Policy::cols(m);
    require_range(v, offset, c, "add_segment_row_map");
    if (((Policy::rows(x) != r || Policy::cols(x) != c) || ...))
      fail("add_segment_row_map", "the biased matrix is " + shape(m) + ", the other operands " + shapes(x...));
    if (&out != &m && (Policy::rows(out) != r || Policy::cols(out) != c)) out = Policy::matrix_zeros(r, c);
    const S* b = v.data() + offset;
    S* y = m.data();
    S* o = out.data();
    for (std::size_t i = 0; i < r; ++i)
      for (std::size_t j = 0; j < c; ++j) {
        const std::size_t e = i * c + j;
        const S biased = y[e] + b[j];
        y[e] = biased;
        o[e] = f(biased, x.data()[e]...);
      }
  }
  /// out_ij = f(x_ij...) for one or more matrices x of one shape (out may be one of them),
  /// then v[offset + j] = Σ_i out_ij (the rest of v untouched), by column_sums's own loop: the
  /// result equals a transform and column_sums_into_segment bit for bit. (On a host one call
  /// saves nothing over the two; on a device it saves a launch.)
  template <class Matrix, class Vector, class F, class... X>
    requires(sizeof...(X) >= 1 && (std::is_same_v<X, Matrix> && ...))
  static void map_column_sums_into_segment(Matrix& out, Vector& v, std::size_t offset, F f, const X&... x) {
    const auto& first = std::get<0>(std::forward_as_tuple(x...));
    const std::size_t r = Policy::rows(first), c = Policy::cols(first);
    require_range(v, offset, c, "map_column_sums_into_segment");
    if (((Policy::rows(x) != r || Policy::cols(x) != c) || ...))
      fail("map_column_sums_into_segment", "the operands are " + shapes(x...));
    if (((&out != &x) && ...) && (Policy::rows(out) != r || Policy::cols(out) != c)) out = Policy::matrix_zeros(r, c);
    auto* o = out.data();
    for (std::size_t e = 0; e < r * c; ++e) o[e] = f(x.data()[e]...);
    detail::column_sums_pair<typename Policy::scalar>(o, nullptr, r, c, v.data() + offset, nullptr);
  }
  /// v[offset + j] = Σ_i m_ij (the rest of v untouched): a bias gradient written in place, with
  /// column_sums's blocked order and rounding.
  template <class Matrix, class Vector>
  static void column_sums_into_segment(const Matrix& m, Vector& v, std::size_t offset) {
    const std::size_t c = Policy::cols(m);
    require_range(v, offset, c, "column_sums_into_segment");
    detail::column_sums_pair<typename Policy::scalar>(m.data(), nullptr, Policy::rows(m), c, v.data() + offset,
                                                      nullptr);
  }

 private:
  template <class Vector>
  static void require_range(const Vector& v, std::size_t offset, std::size_t n, const char* op) {
    if (offset > Policy::size(v) || n > Policy::size(v) - offset)
      fail(op, "entries [" + std::to_string(offset) + ", " + std::to_string(offset + n) + ") of a vector of " +
                   std::to_string(Policy::size(v)));
  }
  template <class F, class... Ptr>
  static void zip_loop(std::size_t n, F& f, Ptr... p) {
    for (std::size_t i = 0; i < n; ++i) f(p[i]...);
  }
  template <class V0, class... V>
  static std::size_t first_size(const V0& v0, const V&...) {
    return Policy::size(v0);
  }
  template <class... M>
  static std::string shapes(const M&... m) {
    std::string s;
    ((s += (s.empty() ? "" : ", ") + shape(m)), ...);
    return s;
  }
  template <class... V>
  static std::string lengths(const V&... v) {
    std::string s;
    ((s += (s.empty() ? "" : ", ") + std::to_string(Policy::size(v))), ...);
    return s;
  }
  using host_messages<Policy>::fail;
  using host_messages<Policy>::shape;
};

}  // namespace bilevel::policy::detail
