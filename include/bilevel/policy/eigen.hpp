// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// The Eigen tensor policy: the default CPU back end. The only header that names Eigen.
#include <Eigen/Core>
#include <algorithm>
#include <cstdint>
#include <cmath>
#include <cstddef>
#include <limits>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "bilevel/core/tensor_policy.hpp"
#include "bilevel/policy/detail/column_maps.hpp"
#include "bilevel/policy/detail/dense_conv_maps.hpp"
#include "bilevel/policy/detail/fused_maps.hpp"
#include "bilevel/policy/detail/depthwise_maps.hpp"
#include "bilevel/policy/detail/per_sample_maps.hpp"
#include "bilevel/policy/detail/window_max.hpp"

namespace bilevel::policy {

/// CPU back end on Eigen 3. `vector` is a dense column vector, `matrix` is row-major so that
/// a data matrix keeps one sample a row, as IDX files and host arrays store it.
template <std::floating_point Scalar>
struct eigen : detail::host_depthwise<eigen<Scalar>>,
                detail::host_dense_conv<eigen<Scalar>>,
                detail::host_column_maps<eigen<Scalar>>,
                detail::host_fused_maps<eigen<Scalar>>,
                detail::host_window_max<eigen<Scalar>> {
  using scalar = Scalar;
  static constexpr const char* name = "eigen";  ///< in error messages
  using vector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;
  using matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  /// Positions in a matrix's storage that a primitive chose (window_max_per_sample's argmax).
  using index_vector = std::vector<std::int64_t>;

  static vector zeros(std::size_t n) { return vector::Zero(static_cast<Eigen::Index>(n)); }
  static void resize(vector& v, std::size_t n) { v.resize(static_cast<Eigen::Index>(n)); }
  static std::size_t size(const vector& v) { return static_cast<std::size_t>(v.size()); }
  static std::size_t rows(const matrix& m) { return static_cast<std::size_t>(m.rows()); }
  static std::size_t cols(const matrix& m) { return static_cast<std::size_t>(m.cols()); }

  static void copy(const vector& src, vector& dst) { dst = src; }
  static void fill(vector& v, scalar s) { v.setConstant(s); }
  static void axpy(scalar a, const vector& x, vector& y) {
    require_same_size(x, y, "axpy");
    y.noalias() += a * x;
  }
  static void scale(vector& v, scalar s) { v *= s; }

  /// Dot product accumulated in double. Blocks of 256 keep Eigen's vectorised kernel for
  /// the inner sums (each has at most 256 terms, so float keeps ~5 digits there) while
  /// the running total, where cancellation between blocks would bite, is in double.
  static double dot(const vector& x, const vector& y) {
    require_same_size(x, y, "dot");
    if constexpr (std::is_same_v<scalar, double>) {
      return x.dot(y);
    } else {
      double total = 0.0;
      const Eigen::Index n = x.size();
      for (Eigen::Index i = 0; i < n; i += block) {
        const Eigen::Index len = std::min<Eigen::Index>(block, n - i);
        total += static_cast<double>(x.segment(i, len).dot(y.segment(i, len)));
      }
      return total;
    }
  }
  static double norm(const vector& x) { return std::sqrt(dot(x, x)); }
  static double sum(const vector& x) {
    double total = 0.0;
    for (Eigen::Index i = 0; i < x.size(); i += block)
      total += static_cast<double>(x.segment(i, std::min<Eigen::Index>(block, x.size() - i)).sum());
    return total;
  }
  /// No NaN or ±Inf. |x| <= max is false for exactly those; the loop over it has no branch, so
  /// the compiler vectorises it (Eigen's allFinite() tests one element at a time).
  static bool all_finite(const vector& x) {
    const scalar* p = x.data();
    const std::size_t n = std::size_t(x.size());
    unsigned bad = 0;
    for (std::size_t i = 0; i < n; ++i) bad |= unsigned(!(std::abs(p[i]) <= std::numeric_limits<scalar>::max()));
    return bad == 0;
  }

  /// out = x ⊙ y (element-wise product), for vectors and matrices alike.
  template <class T>
    requires std::same_as<T, vector> || std::same_as<T, matrix>
  static void hadamard(const T& x, const T& y, T& out) {
    require_same_shape(x, y, "hadamard");
    out = x.cwiseProduct(y);
  }
  /// out_i = f(x_i); `f` is a plain functor so that device back ends can run the same map.
  /// A plain loop over the storage rather than Eigen's unaryExpr: with a branch-free f (the
  /// ReLU's maps) the compiler vectorises it, which it does not do through Eigen's evaluator.
  /// out may be x (each element is read before it is written).
  template <class T, class F>
    requires std::same_as<T, vector> || std::same_as<T, matrix>
  static void transform(const T& x, T& out, F f) {
    shape_like(x, out);
    const scalar* in = x.data();
    scalar* o = out.data();
    const std::size_t n = std::size_t(x.size());
    for (std::size_t i = 0; i < n; ++i) o[i] = f(in[i]);
  }
  /// out_i = f(x_i, y_i); out may be x or y.
  template <class T, class F>
    requires std::same_as<T, vector> || std::same_as<T, matrix>
  static void transform(const T& x, const T& y, T& out, F f) {
    require_same_shape(x, y, "transform");
    shape_like(x, out);
    const scalar* a = x.data();
    const scalar* b = y.data();
    scalar* o = out.data();
    const std::size_t n = std::size_t(x.size());
    for (std::size_t i = 0; i < n; ++i) o[i] = f(a[i], b[i]);
  }

  /// y = alpha op(A) x + beta y, op(A) = A or Aᵀ. With beta == 0, y is resized and its old
  /// contents ignored (so NaN left in it cannot leak through 0 * NaN).
  static void gemv(scalar alpha, const matrix& a, bool transpose, const vector& x, scalar beta,
                   vector& y) {
    const Eigen::Index in = transpose ? a.rows() : a.cols();
    const Eigen::Index out = transpose ? a.cols() : a.rows();
    if (x.size() != in)
      throw std::invalid_argument("bilevel::policy::eigen::gemv: matrix is " + shape(a) +
                                  (transpose ? " (transposed)" : "") + " but x has " +
                                  std::to_string(x.size()) + " elements");
    if (beta == scalar(0)) {
      y.resize(out);
      if (transpose) y.noalias() = alpha * (a.transpose() * x);
      else y.noalias() = alpha * (a * x);
      return;
    }
    if (y.size() != out)
      throw std::invalid_argument("bilevel::policy::eigen::gemv: y has " + std::to_string(y.size()) +
                                  " elements, expected " + std::to_string(out));
    y *= beta;
    if (transpose) y.noalias() += alpha * (a.transpose() * x);
    else y.noalias() += alpha * (a * x);
  }

  /// C = alpha op(A) op(B) + beta C.
  static void gemm(scalar alpha, const matrix& a, bool trans_a, const matrix& b, bool trans_b,
                   scalar beta, matrix& c) {
    const Eigen::Index inner_a = trans_a ? a.rows() : a.cols();
    const Eigen::Index inner_b = trans_b ? b.cols() : b.rows();
    if (inner_a != inner_b)
      throw std::invalid_argument("bilevel::policy::eigen::gemm: inner dimensions differ: A is " +
                                  shape(a) + (trans_a ? "ᵀ" : "") + ", B is " + shape(b) +
                                  (trans_b ? "ᵀ" : ""));
    const Eigen::Index m = trans_a ? a.cols() : a.rows();
    const Eigen::Index n = trans_b ? b.rows() : b.cols();
    if (beta == scalar(0)) c.resize(m, n);
    else if (c.rows() != m || c.cols() != n)
      throw std::invalid_argument("bilevel::policy::eigen::gemm: C is " + shape(c) + ", expected " +
                                  std::to_string(m) + "x" + std::to_string(n));
    product_into(alpha, a, trans_a, b, trans_b, beta, c);
  }

  // ---- matrix operations for layers (the nn_tensor_policy refinement) ----

  static matrix matrix_zeros(std::size_t r, std::size_t c) {
    return matrix::Zero(static_cast<Eigen::Index>(r), static_cast<Eigen::Index>(c));
  }
  /// out = the rows×cols matrix stored row-major in theta[offset, offset + rows·cols).
  static void unflatten(const vector& theta, std::size_t offset, std::size_t r, std::size_t c, matrix& out) {
    require_range(theta, offset, r * c, "unflatten");
    out = Eigen::Map<const matrix>(theta.data() + offset, static_cast<Eigen::Index>(r), static_cast<Eigen::Index>(c));
  }
  /// out = theta[offset, offset + n).
  static void segment(const vector& theta, std::size_t offset, std::size_t n, vector& out) {
    require_range(theta, offset, n, "segment");
    out = theta.segment(static_cast<Eigen::Index>(offset), static_cast<Eigen::Index>(n));
  }
  /// dst[offset, ...) = m, row-major.
  static void flatten_into(const matrix& m, vector& dst, std::size_t offset) {
    require_range(dst, offset, std::size_t(m.size()), "flatten_into");
    Eigen::Map<matrix>(dst.data() + offset, m.rows(), m.cols()) = m;
  }
  /// dst[offset, offset + m·n) = alpha op(A) op(B) (+ beta · what is there), written in place
  /// as a row-major m×n matrix: weight gradients go straight into the flat gradient.
  static void gemm_into_segment(scalar alpha, const matrix& a, bool trans_a, const matrix& b, bool trans_b,
                                scalar beta, vector& dst, std::size_t offset) {
    const Eigen::Index m = trans_a ? a.cols() : a.rows();
    const Eigen::Index n = trans_b ? b.rows() : b.cols();
    if ((trans_a ? a.rows() : a.cols()) != (trans_b ? b.cols() : b.rows()))
      throw std::invalid_argument("bilevel::policy::eigen::gemm_into_segment: inner dimensions differ: A is " +
                                  shape(a) + ", B is " + shape(b));
    require_range(dst, offset, std::size_t(m * n), "gemm_into_segment");
    Eigen::Map<matrix> c(dst.data() + offset, m, n);
    product_into(alpha, a, trans_a, b, trans_b, beta, c);
  }
  /// C = alpha op(A) op(S) + beta C, S the rows×cols matrix stored row-major in
  /// theta[offset, offset + rows·cols), read in place: a layer's weights enter its products
  /// without being unflattened into a copy first. With beta == 0, C is resized and its old
  /// contents ignored.
  static void gemm_by_segment(scalar alpha, const matrix& a, bool trans_a, const vector& theta, std::size_t offset,
                              std::size_t r, std::size_t c, bool trans_b, scalar beta, matrix& out) {
    require_range(theta, offset, r * c, "gemm_by_segment");
    const Eigen::Map<const matrix> b(theta.data() + offset, static_cast<Eigen::Index>(r), static_cast<Eigen::Index>(c));
    if ((trans_a ? a.rows() : a.cols()) != (trans_b ? b.cols() : b.rows()))
      throw std::invalid_argument("bilevel::policy::eigen::gemm_by_segment: inner dimensions differ: A is " + shape(a) +
                                  (trans_a ? "ᵀ" : "") + ", the segment is " + std::to_string(r) + "x" +
                                  std::to_string(c) + (trans_b ? "ᵀ" : ""));
    const Eigen::Index m = trans_a ? a.cols() : a.rows();
    const Eigen::Index n = trans_b ? b.rows() : b.cols();
    if (beta == scalar(0)) out.resize(m, n);
    else if (out.rows() != m || out.cols() != n)
      throw std::invalid_argument("bilevel::policy::eigen::gemm_by_segment: C is " + shape(out) + ", expected " +
                                  std::to_string(m) + "x" + std::to_string(n));
    product_into(alpha, a, trans_a, b, trans_b, beta, out);
  }
  /// dst[offset, offset + |v|) = v.
  static void set_segment(const vector& v, vector& dst, std::size_t offset) {
    require_range(dst, offset, std::size_t(v.size()), "set_segment");
    dst.segment(static_cast<Eigen::Index>(offset), v.size()) = v;
  }
  static void axpy(scalar a, const matrix& x, matrix& y) {
    require_same_shape(x, y, "axpy");
    y.noalias() += a * x;
  }
  static void scale(matrix& m, scalar s) { m *= s; }
  /// y += s · c_i · x: an AXPY whose factor is an entry of a vector (on a device back end it
  /// is read where it lies, not on the host).
  static void axpy_entry(scalar s, const vector& c, std::size_t i, const matrix& x, matrix& y) {
    require_same_shape(x, y, "axpy_entry");
    require_range(c, i, 1, "axpy_entry");
    y.noalias() += (s * c(static_cast<Eigen::Index>(i))) * x;
  }
  /// out_i += ⟨a, b⟩ (Frobenius), accumulated in double.
  static void add_dot_into(const matrix& a, const matrix& b, vector& out, std::size_t i) {
    require_same_shape(a, b, "add_dot_into");
    require_range(out, i, 1, "add_dot_into");
    const scalar* pa = a.data();
    const scalar* pb = b.data();
    double acc = 0.0;
    for (Eigen::Index k = 0; k < a.size(); ++k) acc += double(pa[k]) * double(pb[k]);
    out(static_cast<Eigen::Index>(i)) += scalar(acc);
  }
  /// out_i = 1 when x has a NaN or Inf, left as it is otherwise (tensor_policy.hpp: deferred_checks).
  static void mark_nonfinite(const vector& x, vector& out, std::size_t i) {
    require_range(out, i, 1, "mark_nonfinite");
    if (!all_finite(x)) out(static_cast<Eigen::Index>(i)) = scalar(1);
  }
  /// m_ij += b_j (a bias added to every row).
  static void add_row(matrix& m, const vector& b) {
    if (b.size() != m.cols()) throw std::invalid_argument("bilevel::policy::eigen::add_row: matrix is " + shape(m) +
                                                          " but the row has " + std::to_string(b.size()) + " elements");
    m.rowwise() += b.transpose();
  }
  // column_sums: host_column_maps's (policy/detail/column_maps.hpp), shared with xtensor.
  /// out_i = Σ_j a_ij b_ij.
  static void row_dots(const matrix& a, const matrix& b, vector& out) {
    require_same_shape(a, b, "row_dots");
    out = a.cwiseProduct(b).rowwise().sum();
  }
  /// m_ij *= c_i.
  static void scale_rows(matrix& m, const vector& c) {
    if (c.size() != m.rows()) throw std::invalid_argument("bilevel::policy::eigen::scale_rows: matrix is " + shape(m) +
                                                          " but there are " + std::to_string(c.size()) + " factors");
    m = c.asDiagonal() * m;
  }
  /// Row-wise softmax, stable (the row maximum is subtracted first).
  static void row_softmax(const matrix& z, matrix& p) {
    p = (z.colwise() - z.rowwise().maxCoeff()).array().exp().matrix();
    p = (p.array().colwise() / p.rowwise().sum().array()).matrix();
  }
  /// Row-wise log-sum-exp.
  static void row_logsumexp(const matrix& z, vector& out) {
    const vector mx = z.rowwise().maxCoeff();
    out = ((z.colwise() - mx).array().exp().rowwise().sum().log()).matrix() + mx;
  }
  /// out (rows × cols) with out_flat[i] = src_flat[index[i]], or 0 where index[i] < 0
  /// (padding). With scatter_add, the two linear maps behind convolution (im2col / col2im)
  /// and pooling; the index is computed once per layer shape.
  static void gather(const matrix& src, const std::vector<std::int64_t>& index, std::size_t r, std::size_t c,
                     matrix& out) {
    if (index.size() != r * c)
      throw std::invalid_argument("bilevel::policy::eigen::gather: " + std::to_string(index.size()) +
                                  " indices for a " + std::to_string(r) + "x" + std::to_string(c) + " result");
    out.resize(static_cast<Eigen::Index>(r), static_cast<Eigen::Index>(c));
    const scalar* s = src.data();
    scalar* o = out.data();
    for (std::size_t i = 0; i < index.size(); ++i) o[i] = index[i] >= 0 ? s[index[i]] : scalar(0);
  }
  /// out_flat[index[i]] += src_flat[i] for index[i] >= 0 (the adjoint of gather).
  static void scatter_add(const matrix& src, const std::vector<std::int64_t>& index, matrix& out) {
    if (index.size() != std::size_t(src.size()))
      throw std::invalid_argument("bilevel::policy::eigen::scatter_add: " + std::to_string(index.size()) +
                                  " indices for " + std::to_string(src.size()) + " values");
    const scalar* s = src.data();
    scalar* o = out.data();
    for (std::size_t i = 0; i < index.size(); ++i)
      if (index[i] >= 0) o[index[i]] += s[i];
  }
  /// The same elements, row-major, as a rows × cols matrix.
  static void reshape(const matrix& in, std::size_t r, std::size_t c, matrix& out) {
    if (std::size_t(in.size()) != r * c)
      throw std::invalid_argument("bilevel::policy::eigen::reshape: " + shape(in) + " cannot become " +
                                  std::to_string(r) + "x" + std::to_string(c));
    if (&in == &out) {
      matrix tmp = Eigen::Map<const matrix>(in.data(), static_cast<Eigen::Index>(r), static_cast<Eigen::Index>(c));
      out.swap(tmp);
      return;
    }
    out = Eigen::Map<const matrix>(in.data(), static_cast<Eigen::Index>(r), static_cast<Eigen::Index>(c));
  }
  /// A vector's elements as a rows × cols matrix, row-major.
  static void reshape(const vector& in, std::size_t r, std::size_t c, matrix& out) {
    if (std::size_t(in.size()) != r * c)
      throw std::invalid_argument("bilevel::policy::eigen::reshape: " + std::to_string(in.size()) +
                                  " elements cannot become " + std::to_string(r) + "x" + std::to_string(c));
    out = Eigen::Map<const matrix>(in.data(), static_cast<Eigen::Index>(r), static_cast<Eigen::Index>(c));
  }
  /// max_i = max_j m_ij and arg_i = the first j attaining it.
  static void row_max(const matrix& m, vector& max, std::vector<std::int64_t>& arg) {
    detail::require_columns_for_max(name, "row_max", std::size_t(m.rows()), std::size_t(m.cols()));
    max.resize(m.rows());
    arg.resize(std::size_t(m.rows()));
    for (Eigen::Index i = 0; i < m.rows(); ++i) {
      Eigen::Index j;
      max[i] = m.row(i).maxCoeff(&j);
      arg[std::size_t(i)] = j;
    }
  }
  /// The per-sample gather, for maps that are the same for every sample (convolution
  /// patches, pooling windows; policy/detail/per_sample_maps.hpp): src's elements fall into
  /// `batch` equal blocks, and block b of out ((batch·r) × c, r·c elements a block) is block b
  /// of src read through one sample's index (−1: 0).
  static void gather_per_sample(const matrix& src, const std::vector<std::int64_t>& index, std::size_t batch,
                                std::size_t r, std::size_t c, matrix& out) {
    const std::size_t block =
        detail::per_sample_block("eigen", "gather_per_sample", std::size_t(src.size()), index, batch, r * c);
    detail::require_inside_sample("eigen", "gather_per_sample", detail::largest_entry(index), block);
    if (&src == &out) {
      matrix tmp;
      gather_per_sample(src, index, batch, r, c, tmp);
      out.swap(tmp);
      return;
    }
    out.resize(static_cast<Eigen::Index>(batch * r), static_cast<Eigen::Index>(c));
    detail::gather_per_sample(src.data(), block, index, batch, out.data());
  }
  /// Its adjoint: block b of out += block b of src scattered through the map.
  static void scatter_add_per_sample(const matrix& src, const std::vector<std::int64_t>& index, std::size_t batch,
                                     matrix& out) {
    detail::require_samples_of("eigen", "scatter_add_per_sample", std::size_t(src.size()), batch, index.size());
    const std::size_t block =
        detail::per_sample_block("eigen", "scatter_add_per_sample", std::size_t(out.size()), index, batch, index.size());
    detail::require_inside_sample("eigen", "scatter_add_per_sample", detail::largest_entry(index), block);
    detail::scatter_add_per_sample(src.data(), index, batch, out.data(), block);
  }
  /// max_i = max_j m_ij and onehot (m's shape) = 1 at each row's first maximum, else 0.
  static void row_max_onehot(const matrix& m, vector& max, matrix& onehot) {
    detail::require_columns_for_max(name, "row_max_onehot", std::size_t(m.rows()), std::size_t(m.cols()));
    max.resize(m.rows());
    onehot.resize(m.rows(), m.cols());
    detail::row_max_onehot(m.data(), std::size_t(m.rows()), std::size_t(m.cols()), max.data(), onehot.data());
  }
  /// out (r × 1) = row sums of m.
  static void row_sums(const matrix& m, vector& out) { out = m.rowwise().sum(); }

  /// out = m's columns [first, first + n): a channel slice of an activation matrix.
  static void columns(const matrix& m, std::size_t first, std::size_t n, matrix& out) {
    require_columns(m, first, n, "columns");
    out = m.middleCols(static_cast<Eigen::Index>(first), static_cast<Eigen::Index>(n));
  }
  /// dst's columns [first, first + src.cols) = src (same rows): channel concatenation.
  static void set_columns(const matrix& src, matrix& dst, std::size_t first) {
    require_columns(dst, first, std::size_t(src.cols()), "set_columns");
    if (src.rows() != dst.rows())
      throw std::invalid_argument("bilevel::policy::eigen::set_columns: " + shape(src) + " into " + shape(dst) +
                                  ": the row counts differ");
    dst.middleCols(static_cast<Eigen::Index>(first), src.cols()) = src;
  }
  /// out = m's rows [first, first + n): a block of samples of an activation matrix (rows are
  /// contiguous in row-major storage).
  static void row_block(const matrix& m, std::size_t first, std::size_t n, matrix& out) {
    require_rows(m, first, n, "row_block");
    out = m.middleRows(static_cast<Eigen::Index>(first), static_cast<Eigen::Index>(n));
  }
  /// dst's rows [first, first + src.rows) = src (same columns).
  static void set_row_block(const matrix& src, matrix& dst, std::size_t first) {
    require_rows(dst, first, std::size_t(src.rows()), "set_row_block");
    if (src.cols() != dst.cols())
      throw std::invalid_argument("bilevel::policy::eigen::set_row_block: " + shape(src) + " into " + shape(dst) +
                                  ": the column counts differ");
    dst.middleRows(static_cast<Eigen::Index>(first), src.rows()) = src;
  }
  /// m_ij *= c_j (a per-channel factor).
  static void scale_columns(matrix& m, const vector& c) {
    if (c.size() != m.cols())
      throw std::invalid_argument("bilevel::policy::eigen::scale_columns: matrix is " + shape(m) + " but there are " +
                                  std::to_string(c.size()) + " factors");
    // In place, row by row (m * c.asDiagonal() went through a temporary).
    const std::size_t n = cols(m);
    const scalar* __restrict f = c.data();
    for (std::size_t i = 0, r = rows(m); i < r; ++i) {
      scalar* __restrict row = m.data() + i * n;
      for (std::size_t j = 0; j < n; ++j) row[j] *= f[j];
    }
  }

  /// Exact equality (shape and every element; NaN equals nothing): what forward-pass caches
  /// key on. Compared a block at a time with a branch-free loop the compiler vectorises
  /// (Eigen's `a == b` tests one element at a time, which made these checks ~9% of a
  /// training step), stopping after the first block that differs: a moved θ differs at once.
  static bool equal(const vector& a, const vector& b) {
    return a.size() == b.size() && same_elements(a.data(), b.data(), std::size_t(a.size()));
  }
  static bool equal(const matrix& a, const matrix& b) {
    return a.rows() == b.rows() && a.cols() == b.cols() && same_elements(a.data(), b.data(), std::size_t(a.size()));
  }
  static std::vector<scalar> matrix_to_host(const matrix& m) { return {m.data(), m.data() + m.size()}; }
  static std::vector<std::int64_t> indices_to_host(const index_vector& i) { return i; }

  /// C = alpha op(A) op(B) + beta C on any writable matrix expression (a matrix or a map of
  /// a segment); with beta == 0 the old contents are not read (no zero-fill pass, no 0·NaN).
  template <class Dst, class B = matrix>
  static void product_into(scalar alpha, const matrix& a, bool trans_a, const B& b, bool trans_b, scalar beta,
                           Dst& c) {
    if (beta == scalar(0)) {
      if (trans_a && trans_b) c.noalias() = alpha * (a.transpose() * b.transpose());
      else if (trans_a) c.noalias() = alpha * (a.transpose() * b);
      else if (trans_b) c.noalias() = alpha * (a * b.transpose());
      else c.noalias() = alpha * (a * b);
      return;
    }
    c *= beta;
    if (trans_a && trans_b) c.noalias() += alpha * (a.transpose() * b.transpose());
    else if (trans_a) c.noalias() += alpha * (a.transpose() * b);
    else if (trans_b) c.noalias() += alpha * (a * b.transpose());
    else c.noalias() += alpha * (a * b);
  }

  static std::vector<scalar> to_host(const vector& v) { return {v.data(), v.data() + v.size()}; }
  static vector from_host(std::span<const scalar> host) {
    vector v(static_cast<Eigen::Index>(host.size()));
    std::copy(host.begin(), host.end(), v.data());
    return v;
  }
  static matrix matrix_from_host(std::size_t rows, std::size_t cols, std::span<const scalar> host) {
    if (host.size() != rows * cols)
      throw std::invalid_argument("bilevel::policy::eigen::matrix_from_host: " +
                                  std::to_string(host.size()) + " values cannot fill a " +
                                  std::to_string(rows) + "x" + std::to_string(cols) + " matrix");
    matrix m(static_cast<Eigen::Index>(rows), static_cast<Eigen::Index>(cols));
    std::copy(host.begin(), host.end(), m.data());
    return m;
  }

 private:
  static constexpr Eigen::Index block = 256;
  static bool same_elements(const scalar* a, const scalar* b, std::size_t n) {
    constexpr std::size_t chunk = 512;  // 2 KB of floats: small enough to stop early, long enough to vectorise
    for (std::size_t start = 0; start < n; start += chunk) {
      const std::size_t end = std::min(n, start + chunk);
      unsigned differ = 0;
      for (std::size_t i = start; i < end; ++i) differ |= unsigned(!(a[i] == b[i]));
      if (differ != 0) return false;
    }
    return true;
  }
  template <class T>
  static void shape_like(const T& x, T& out) {
    if constexpr (std::is_same_v<T, vector>) out.resize(x.size());
    else out.resize(x.rows(), x.cols());
  }
  static std::string shape(const matrix& m) {
    return std::to_string(m.rows()) + "x" + std::to_string(m.cols());
  }
  static void require_same_shape(const matrix& x, const matrix& y, const char* op) {
    if (x.rows() != y.rows() || x.cols() != y.cols())
      throw std::invalid_argument(std::string("bilevel::policy::eigen::") + op + ": matrix shapes differ (" + shape(x) +
                                  " vs " + shape(y) + ")");
  }
  static void require_same_shape(const vector& x, const vector& y, const char* op) { require_same_size(x, y, op); }
  static void require_columns(const matrix& m, std::size_t first, std::size_t n, const char* op) {
    if (first + n > std::size_t(m.cols()))
      throw std::invalid_argument(std::string("bilevel::policy::eigen::") + op + ": columns [" + std::to_string(first) +
                                  ", " + std::to_string(first + n) + ") exceed a " + shape(m) + " matrix");
  }
  static void require_rows(const matrix& m, std::size_t first, std::size_t n, const char* op) {
    if (first + n > std::size_t(m.rows()))
      throw std::invalid_argument(std::string("bilevel::policy::eigen::") + op + ": rows [" + std::to_string(first) +
                                  ", " + std::to_string(first + n) + ") exceed a " + shape(m) + " matrix");
  }
  static void require_range(const vector& v, std::size_t offset, std::size_t n, const char* op) {
    if (offset + n > std::size_t(v.size()))
      throw std::invalid_argument(std::string("bilevel::policy::eigen::") + op + ": range [" + std::to_string(offset) +
                                  ", " + std::to_string(offset + n) + ") exceeds a vector of " +
                                  std::to_string(v.size()) + " elements");
  }
  static void require_same_size(const vector& x, const vector& y, const char* op) {
    if (x.size() != y.size())
      throw std::invalid_argument(std::string("bilevel::policy::eigen::") + op +
                                  ": vector sizes differ (" + std::to_string(x.size()) + " vs " +
                                  std::to_string(y.size()) + ")");
  }
};

static_assert(nn_tensor_policy<eigen<double>>);
static_assert(nn_tensor_policy<eigen<float>>);

}  // namespace bilevel::policy
