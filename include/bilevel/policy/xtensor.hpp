// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// The xtensor tensor policy: a second CPU back end. Storage and element-wise work are
/// xtensor containers (row-major xt::xtensor); GEMM and GEMV go to CBLAS (OpenBLAS from
/// Debian), the way the CUDA policy pairs its own kernels with cuBLAS. Opt-in: include this header and
/// link bilevel::xtensor. Everything above the policy layer runs on it unchanged.
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include <xtensor/xtensor.hpp>

#include "bilevel/core/tensor_policy.hpp"
#include "bilevel/policy/detail/column_maps.hpp"
#include "bilevel/policy/detail/dense_conv_maps.hpp"
#include "bilevel/policy/detail/fused_maps.hpp"
#include "bilevel/policy/detail/depthwise_maps.hpp"
#include "bilevel/policy/detail/per_sample_maps.hpp"
#include "bilevel/policy/detail/window_max.hpp"

namespace bilevel::policy {

template <std::floating_point Scalar>
struct xtensor : detail::host_depthwise<xtensor<Scalar>>,
                detail::host_dense_conv<xtensor<Scalar>>,
                detail::host_column_maps<xtensor<Scalar>>,
                detail::host_fused_maps<xtensor<Scalar>>,
                detail::host_window_max<xtensor<Scalar>> {
  using scalar = Scalar;
  static constexpr const char* name = "xtensor";  ///< in error messages
  using vector = xt::xtensor<Scalar, 1>;
  using matrix = xt::xtensor<Scalar, 2>;
  /// Positions in a matrix's storage that a primitive chose (window_max_per_sample's argmax).
  using index_vector = std::vector<std::int64_t>;

  static vector zeros(std::size_t n) { return vector(std::array<std::size_t, 1>{n}, Scalar(0)); }
  static void resize(vector& v, std::size_t n) {
    if (v.size() != n) v.resize({n});
  }
  static std::size_t size(const vector& v) { return v.size(); }
  static std::size_t rows(const matrix& m) { return m.shape()[0]; }
  static std::size_t cols(const matrix& m) { return m.shape()[1]; }

  static void copy(const vector& src, vector& dst) { dst = src; }
  static void fill(vector& v, scalar s) { std::fill(v.begin(), v.end(), s); }
  static void axpy(scalar a, const vector& x, vector& y) {
    same(x.size(), y.size(), "axpy");
    const scalar* xp = x.data();
    scalar* yp = y.data();
    for (std::size_t i = 0; i < x.size(); ++i) yp[i] += a * xp[i];
  }
  static void scale(vector& v, scalar s) {
    for (auto& e : v) e *= s;
  }
  /// Accumulated in double, whatever the scalar.
  static double dot(const vector& x, const vector& y) {
    same(x.size(), y.size(), "dot");
    double t = 0;
    for (std::size_t i = 0; i < x.size(); ++i) t += double(x.data()[i]) * double(y.data()[i]);
    return t;
  }
  static double norm(const vector& x) { return std::sqrt(dot(x, x)); }
  static double sum(const vector& x) {
    double t = 0;
    for (auto e : x) t += double(e);
    return t;
  }
  static bool all_finite(const vector& x) {
    return std::all_of(x.begin(), x.end(), [](scalar e) { return std::isfinite(e); });
  }
  static void hadamard(const vector& x, const vector& y, vector& out) {
    same(x.size(), y.size(), "hadamard");
    out = x * y;
  }
  template <class F>
  static void transform(const vector& x, vector& out, F f) {
    resize(out, x.size());
    std::transform(x.begin(), x.end(), out.begin(), f);
  }
  template <class F>
  static void transform(const vector& x, const vector& y, vector& out, F f) {
    same(x.size(), y.size(), "transform");
    resize(out, x.size());
    std::transform(x.begin(), x.end(), y.begin(), out.begin(), f);
  }

  static void gemv(scalar alpha, const matrix& a, bool transpose, const vector& x, scalar beta, vector& y) {
    const std::size_t in = transpose ? rows(a) : cols(a), out = transpose ? cols(a) : rows(a);
    if (x.size() != in)
      throw std::invalid_argument("bilevel::policy::xtensor::gemv: matrix is " + shape(a) +
                                  (transpose ? " (transposed)" : "") + " but x has " + std::to_string(x.size()) +
                                  " elements");
    if (beta == scalar(0)) y = zeros(out);
    else if (y.size() != out)
      throw std::invalid_argument("bilevel::policy::xtensor::gemv: y has " + std::to_string(y.size()) +
                                  " elements, expected " + std::to_string(out));
    if (rows(a) == 0 || cols(a) == 0) return;
    if constexpr (std::is_same_v<Scalar, float>)
      cblas_sgemv(CblasRowMajor, transpose ? CblasTrans : CblasNoTrans, int(rows(a)), int(cols(a)), alpha, a.data(),
                  int(cols(a)), x.data(), 1, beta, y.data(), 1);
    else
      cblas_dgemv(CblasRowMajor, transpose ? CblasTrans : CblasNoTrans, int(rows(a)), int(cols(a)), alpha, a.data(),
                  int(cols(a)), x.data(), 1, beta, y.data(), 1);
  }
  static void gemm(scalar alpha, const matrix& a, bool trans_a, const matrix& b, bool trans_b, scalar beta,
                   matrix& c) {
    const std::size_t m = trans_a ? cols(a) : rows(a), n = trans_b ? rows(b) : cols(b);
    if (beta == scalar(0)) c = matrix_zeros(m, n);
    else if (rows(c) != m || cols(c) != n)
      throw std::invalid_argument("bilevel::policy::xtensor::gemm: C is " + shape(c) + ", expected " +
                                  std::to_string(m) + "x" + std::to_string(n));
    product(alpha, a, trans_a, b, trans_b, beta, c.data());
  }

  static std::vector<scalar> to_host(const vector& v) { return {v.begin(), v.end()}; }
  static vector from_host(std::span<const scalar> host) {
    vector v = zeros(host.size());
    std::copy(host.begin(), host.end(), v.begin());
    return v;
  }
  static matrix matrix_from_host(std::size_t r, std::size_t c, std::span<const scalar> host) {
    if (host.size() != r * c)
      throw std::invalid_argument("bilevel::policy::xtensor::matrix_from_host: " + std::to_string(host.size()) +
                                  " values cannot fill a " + std::to_string(r) + "x" + std::to_string(c) + " matrix");
    matrix m = matrix_zeros(r, c);
    std::copy(host.begin(), host.end(), m.data());
    return m;
  }

  // ---- matrix operations for layers (nn_tensor_policy) ----
  static matrix matrix_zeros(std::size_t r, std::size_t c) { return matrix(std::array<std::size_t, 2>{r, c}, Scalar(0)); }
  static void unflatten(const vector& theta, std::size_t offset, std::size_t r, std::size_t c, matrix& out) {
    range(theta.size(), offset, r * c, "unflatten");
    out = matrix_zeros(r, c);
    std::copy(theta.data() + offset, theta.data() + offset + r * c, out.data());
  }
  static void segment(const vector& theta, std::size_t offset, std::size_t n, vector& out) {
    range(theta.size(), offset, n, "segment");
    out = zeros(n);
    std::copy(theta.data() + offset, theta.data() + offset + n, out.data());
  }
  static void flatten_into(const matrix& m, vector& dst, std::size_t offset) {
    range(dst.size(), offset, m.size(), "flatten_into");
    std::copy(m.data(), m.data() + m.size(), dst.data() + offset);
  }
  static void gemm_into_segment(scalar alpha, const matrix& a, bool trans_a, const matrix& b, bool trans_b, scalar beta,
                                vector& dst, std::size_t offset) {
    const std::size_t m = trans_a ? cols(a) : rows(a), n = trans_b ? rows(b) : cols(b);
    range(dst.size(), offset, m * n, "gemm_into_segment");
    product(alpha, a, trans_a, b, trans_b, beta, dst.data() + offset);
  }
  /// C = alpha op(A) op(S) + beta C, S the r × c row-major matrix at theta[offset, ...), in place.
  static void gemm_by_segment(scalar alpha, const matrix& a, bool trans_a, const vector& theta, std::size_t offset,
                              std::size_t r, std::size_t c, bool trans_b, scalar beta, matrix& out) {
    range(theta.size(), offset, r * c, "gemm_by_segment");
    const std::size_t m = trans_a ? cols(a) : rows(a), n = trans_b ? r : c;
    if (beta == scalar(0)) out = matrix_zeros(m, n);
    else if (rows(out) != m || cols(out) != n)
      throw std::invalid_argument("bilevel::policy::xtensor::gemm_by_segment: C is " + shape(out) + ", expected " +
                                  std::to_string(m) + "x" + std::to_string(n));
    product(alpha, a, trans_a, theta.data() + offset, r, c, trans_b, beta, out.data());
  }
  static void set_segment(const vector& v, vector& dst, std::size_t offset) {
    range(dst.size(), offset, v.size(), "set_segment");
    std::copy(v.begin(), v.end(), dst.data() + offset);
  }
  static void axpy(scalar a, const matrix& x, matrix& y) {
    same_shape(x, y, "axpy");
    for (std::size_t i = 0; i < x.size(); ++i) y.data()[i] += a * x.data()[i];
  }
  static void scale(matrix& m, scalar s) {
    for (auto& e : m) e *= s;
  }
  /// y += s · c_i · x.
  static void axpy_entry(scalar s, const vector& c, std::size_t i, const matrix& x, matrix& y) {
    same_shape(x, y, "axpy_entry");
    range(c.size(), i, 1, "axpy_entry");
    const scalar f = s * c(i);
    for (std::size_t k = 0; k < x.size(); ++k) y.data()[k] += f * x.data()[k];
  }
  /// out_i += ⟨a, b⟩ (Frobenius), accumulated in double.
  static void add_dot_into(const matrix& a, const matrix& b, vector& out, std::size_t i) {
    same_shape(a, b, "add_dot_into");
    range(out.size(), i, 1, "add_dot_into");
    double acc = 0.0;
    for (std::size_t k = 0; k < a.size(); ++k) acc += double(a.data()[k]) * double(b.data()[k]);
    out(i) += scalar(acc);
  }
  /// out_i = 1 when x has a NaN or Inf, left as it is otherwise (tensor_policy.hpp: deferred_checks).
  static void mark_nonfinite(const vector& x, vector& out, std::size_t i) {
    range(out.size(), i, 1, "mark_nonfinite");
    if (!all_finite(x)) out(i) = scalar(1);
  }
  static void hadamard(const matrix& x, const matrix& y, matrix& out) {
    same_shape(x, y, "hadamard");
    out = x * y;
  }
  template <class F>
  static void transform(const matrix& x, matrix& out, F f) {
    if (out.shape() != x.shape()) out = matrix_zeros(rows(x), cols(x));
    std::transform(x.begin(), x.end(), out.begin(), f);
  }
  template <class F>
  static void transform(const matrix& x, const matrix& y, matrix& out, F f) {
    same_shape(x, y, "transform");
    if (out.shape() != x.shape()) out = matrix_zeros(rows(x), cols(x));
    std::transform(x.begin(), x.end(), y.begin(), out.begin(), f);
  }
  static void add_row(matrix& m, const vector& b) {
    if (b.size() != cols(m))
      throw std::invalid_argument("bilevel::policy::xtensor::add_row: matrix is " + shape(m) + " but the row has " +
                                  std::to_string(b.size()) + " elements");
    for (std::size_t i = 0; i < rows(m); ++i)
      for (std::size_t j = 0; j < cols(m); ++j) m(i, j) += b(j);
  }
  // column_sums: host_column_maps's (policy/detail/column_maps.hpp), shared with eigen.
  static void gather_per_sample(const matrix& src, const std::vector<std::int64_t>& index, std::size_t batch,
                                std::size_t r, std::size_t c, matrix& out) {
    const std::size_t block = detail::per_sample_block("xtensor", "gather_per_sample", src.size(), index, batch, r * c);
    detail::require_inside_sample("xtensor", "gather_per_sample", detail::largest_entry(index), block);
    matrix tmp = matrix_zeros(batch * r, c);
    detail::gather_per_sample(src.data(), block, index, batch, tmp.data());
    out = std::move(tmp);
  }
  static void scatter_add_per_sample(const matrix& src, const std::vector<std::int64_t>& index, std::size_t batch,
                                     matrix& out) {
    detail::require_samples_of("xtensor", "scatter_add_per_sample", src.size(), batch, index.size());
    const std::size_t block =
        detail::per_sample_block("xtensor", "scatter_add_per_sample", out.size(), index, batch, index.size());
    detail::require_inside_sample("xtensor", "scatter_add_per_sample", detail::largest_entry(index), block);
    detail::scatter_add_per_sample(src.data(), index, batch, out.data(), block);
  }
  static void row_max_onehot(const matrix& m, vector& max, matrix& onehot) {
    detail::require_columns_for_max(name, "row_max_onehot", rows(m), cols(m));
    max = zeros(rows(m));
    onehot = matrix_zeros(rows(m), cols(m));
    detail::row_max_onehot(m.data(), rows(m), cols(m), max.data(), onehot.data());
  }
  static void row_sums(const matrix& m, vector& out) {
    out = zeros(rows(m));
    for (std::size_t i = 0; i < rows(m); ++i)
      for (std::size_t j = 0; j < cols(m); ++j) out(i) += m(i, j);
  }
  /// out = m's columns [first, first + n).
  static void columns(const matrix& m, std::size_t first, std::size_t n, matrix& out) {
    column_range(m, first, n, "columns");
    out = matrix_zeros(rows(m), n);
    for (std::size_t i = 0; i < rows(m); ++i)
      std::copy(m.data() + i * cols(m) + first, m.data() + i * cols(m) + first + n, out.data() + i * n);
  }
  /// dst's columns [first, first + src.cols) = src.
  static void set_columns(const matrix& src, matrix& dst, std::size_t first) {
    column_range(dst, first, cols(src), "set_columns");
    if (rows(src) != rows(dst))
      throw std::invalid_argument("bilevel::policy::xtensor::set_columns: " + shape(src) + " into " + shape(dst) +
                                  ": the row counts differ");
    const std::size_t n = cols(src);
    for (std::size_t i = 0; i < rows(src); ++i)
      std::copy(src.data() + i * n, src.data() + (i + 1) * n, dst.data() + i * cols(dst) + first);
  }
  /// out = m's rows [first, first + n) (contiguous in row-major storage).
  static void row_block(const matrix& m, std::size_t first, std::size_t n, matrix& out) {
    row_range(m, first, n, "row_block");
    out = matrix_zeros(n, cols(m));
    std::copy(m.data() + first * cols(m), m.data() + (first + n) * cols(m), out.data());
  }
  /// dst's rows [first, first + src.rows) = src.
  static void set_row_block(const matrix& src, matrix& dst, std::size_t first) {
    row_range(dst, first, rows(src), "set_row_block");
    if (cols(src) != cols(dst))
      throw std::invalid_argument("bilevel::policy::xtensor::set_row_block: " + shape(src) + " into " + shape(dst) +
                                  ": the column counts differ");
    std::copy(src.data(), src.data() + src.size(), dst.data() + first * cols(dst));
  }
  static void row_range(const matrix& m, std::size_t first, std::size_t n, const char* op) {
    if (first + n > rows(m))
      throw std::invalid_argument(std::string("bilevel::policy::xtensor::") + op + ": rows [" + std::to_string(first) +
                                  ", " + std::to_string(first + n) + ") exceed a " + shape(m) + " matrix");
  }
  /// m_ij *= c_j.
  static void scale_columns(matrix& m, const vector& c) {
    if (c.size() != cols(m))
      throw std::invalid_argument("bilevel::policy::xtensor::scale_columns: matrix is " + shape(m) +
                                  " but there are " + std::to_string(c.size()) + " factors");
    for (std::size_t i = 0; i < rows(m); ++i)
      for (std::size_t j = 0; j < cols(m); ++j) m(i, j) *= c(j);
  }
  static void column_range(const matrix& m, std::size_t first, std::size_t n, const char* op) {
    if (first + n > cols(m))
      throw std::invalid_argument(std::string("bilevel::policy::xtensor::") + op + ": columns [" +
                                  std::to_string(first) + ", " + std::to_string(first + n) + ") exceed a " + shape(m) +
                                  " matrix");
  }
  static void row_dots(const matrix& a, const matrix& b, vector& out) {
    same_shape(a, b, "row_dots");
    out = zeros(rows(a));
    for (std::size_t i = 0; i < rows(a); ++i)
      for (std::size_t j = 0; j < cols(a); ++j) out(i) += a(i, j) * b(i, j);
  }
  static void scale_rows(matrix& m, const vector& c) {
    if (c.size() != rows(m))
      throw std::invalid_argument("bilevel::policy::xtensor::scale_rows: matrix is " + shape(m) + " but there are " +
                                  std::to_string(c.size()) + " factors");
    for (std::size_t i = 0; i < rows(m); ++i)
      for (std::size_t j = 0; j < cols(m); ++j) m(i, j) *= c(i);
  }
  static void row_softmax(const matrix& z, matrix& p) {
    p = matrix_zeros(rows(z), cols(z));
    for (std::size_t i = 0; i < rows(z); ++i) {
      scalar mx = z(i, 0);
      for (std::size_t j = 1; j < cols(z); ++j) mx = std::max(mx, z(i, j));
      scalar s = 0;
      for (std::size_t j = 0; j < cols(z); ++j) s += p(i, j) = std::exp(z(i, j) - mx);
      for (std::size_t j = 0; j < cols(z); ++j) p(i, j) /= s;
    }
  }
  static void row_logsumexp(const matrix& z, vector& out) {
    out = zeros(rows(z));
    for (std::size_t i = 0; i < rows(z); ++i) {
      scalar mx = z(i, 0);
      for (std::size_t j = 1; j < cols(z); ++j) mx = std::max(mx, z(i, j));
      scalar s = 0;
      for (std::size_t j = 0; j < cols(z); ++j) s += std::exp(z(i, j) - mx);
      out(i) = mx + std::log(s);
    }
  }
  static void gather(const matrix& src, const std::vector<std::int64_t>& index, std::size_t r, std::size_t c,
                     matrix& out) {
    if (index.size() != r * c)
      throw std::invalid_argument("bilevel::policy::xtensor::gather: " + std::to_string(index.size()) +
                                  " indices for a " + std::to_string(r) + "x" + std::to_string(c) + " result");
    out = matrix_zeros(r, c);
    for (std::size_t i = 0; i < index.size(); ++i)
      if (index[i] >= 0) out.data()[i] = src.data()[index[i]];
  }
  static void scatter_add(const matrix& src, const std::vector<std::int64_t>& index, matrix& out) {
    if (index.size() != src.size())
      throw std::invalid_argument("bilevel::policy::xtensor::scatter_add: " + std::to_string(index.size()) +
                                  " indices for " + std::to_string(src.size()) + " values");
    for (std::size_t i = 0; i < index.size(); ++i)
      if (index[i] >= 0) out.data()[index[i]] += src.data()[i];
  }
  static void reshape(const matrix& in, std::size_t r, std::size_t c, matrix& out) {
    if (in.size() != r * c)
      throw std::invalid_argument("bilevel::policy::xtensor::reshape: " + shape(in) + " cannot become " +
                                  std::to_string(r) + "x" + std::to_string(c));
    matrix tmp = matrix_zeros(r, c);
    std::copy(in.data(), in.data() + in.size(), tmp.data());
    out = std::move(tmp);
  }
  static void reshape(const vector& in, std::size_t r, std::size_t c, matrix& out) {
    if (in.size() != r * c)
      throw std::invalid_argument("bilevel::policy::xtensor::reshape: " + std::to_string(in.size()) +
                                  " elements cannot become " + std::to_string(r) + "x" + std::to_string(c));
    out = matrix_zeros(r, c);
    std::copy(in.data(), in.data() + in.size(), out.data());
  }
  static void row_max(const matrix& m, vector& max, std::vector<std::int64_t>& arg) {
    detail::require_columns_for_max(name, "row_max", rows(m), cols(m));
    max = zeros(rows(m));
    arg.assign(rows(m), 0);
    for (std::size_t i = 0; i < rows(m); ++i) {
      std::size_t best = 0;
      for (std::size_t j = 1; j < cols(m); ++j)
        if (m(i, j) > m(i, best)) best = j;
      max(i) = m(i, best);
      arg[i] = std::int64_t(best);
    }
  }
  static bool equal(const vector& a, const vector& b) {
    return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin());
  }
  static bool equal(const matrix& a, const matrix& b) {
    return a.shape() == b.shape() && std::equal(a.begin(), a.end(), b.begin());
  }
  static std::vector<scalar> matrix_to_host(const matrix& m) { return {m.data(), m.data() + m.size()}; }
  static std::vector<std::int64_t> indices_to_host(const index_vector& i) { return i; }

 private:
  /// C (row-major, at c) = alpha op(A) op(B) + beta C, by CBLAS.
  static void product(scalar alpha, const matrix& a, bool trans_a, const matrix& b, bool trans_b, scalar beta,
                      scalar* c) {
    product(alpha, a, trans_a, b.data(), rows(b), cols(b), trans_b, beta, c);
  }
  /// The same with B the b_rows × b_cols row-major matrix at b.
  static void product(scalar alpha, const matrix& a, bool trans_a, const scalar* b, std::size_t b_rows,
                      std::size_t b_cols, bool trans_b, scalar beta, scalar* c) {
    const std::size_t m = trans_a ? cols(a) : rows(a), k = trans_a ? rows(a) : cols(a);
    const std::size_t kb = trans_b ? b_cols : b_rows, n = trans_b ? b_rows : b_cols;
    if (k != kb)
      throw std::invalid_argument("bilevel::policy::xtensor::gemm: inner dimensions differ: A is " + shape(a) +
                                  (trans_a ? "ᵀ" : "") + ", B is " + std::to_string(b_rows) + "x" +
                                  std::to_string(b_cols) + (trans_b ? "ᵀ" : ""));
    if (m == 0 || n == 0) return;
    if (k == 0) {
      for (std::size_t i = 0; i < m * n; ++i) c[i] = beta == scalar(0) ? scalar(0) : c[i] * beta;
      return;
    }
    const auto ta = trans_a ? CblasTrans : CblasNoTrans, tb = trans_b ? CblasTrans : CblasNoTrans;
    if constexpr (std::is_same_v<Scalar, float>)
      cblas_sgemm(CblasRowMajor, ta, tb, int(m), int(n), int(k), alpha, a.data(), int(cols(a)), b, int(b_cols), beta,
                  c, int(n));
    else
      cblas_dgemm(CblasRowMajor, ta, tb, int(m), int(n), int(k), alpha, a.data(), int(cols(a)), b, int(b_cols), beta,
                  c, int(n));
  }
  static std::string shape(const matrix& m) { return std::to_string(rows(m)) + "x" + std::to_string(cols(m)); }
  static void same(std::size_t a, std::size_t b, const char* op) {
    if (a != b)
      throw std::invalid_argument(std::string("bilevel::policy::xtensor::") + op + ": vector sizes differ (" +
                                  std::to_string(a) + " vs " + std::to_string(b) + ")");
  }
  static void same_shape(const matrix& x, const matrix& y, const char* op) {
    if (x.shape() != y.shape())
      throw std::invalid_argument(std::string("bilevel::policy::xtensor::") + op + ": matrix shapes differ (" +
                                  shape(x) + " vs " + shape(y) + ")");
  }
  static void range(std::size_t size, std::size_t offset, std::size_t n, const char* op) {
    if (offset + n > size)
      throw std::invalid_argument(std::string("bilevel::policy::xtensor::") + op + ": range [" + std::to_string(offset) +
                                  ", " + std::to_string(offset + n) + ") exceeds a vector of " + std::to_string(size) +
                                  " elements");
  }
};

static_assert(nn_tensor_policy<xtensor<double>>);
static_assert(nn_tensor_policy<xtensor<float>>);

}  // namespace bilevel::policy
