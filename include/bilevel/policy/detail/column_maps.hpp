// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// Per-column (per-channel) sums and combinations of activations in one pass each, the host
/// policies' (Eigen, xtensor) optional fused column primitives, written once for both on raw
/// row-major storage:
///   column_sums_pair: sa_j = Σ_i a_ij and sab_j = Σ_i a_ij b_ij, reading a and b once;
///   combine_columns:  out_ij = Σ_t M_t,ij u_t,j + z_j, reading each M_t once.
/// Batch normalization's passes are such sums and combinations of its input, x̂ and the
/// adjoints; as separate products, scalings, row additions and column sums each of them read
/// and wrote batch-sized matrices 8 to 20 times (learners/layers/column_ops.hpp composes them
/// so on other policies).
#include <algorithm>
#include <cstddef>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

namespace bilevel::policy::detail {

/// Rows summed into a partial sum before it is added to the total: the rounding of a sum over
/// n rows then grows like n / 256 + 256 terms, not n.
inline constexpr std::size_t column_sum_block = 256;

/// sa (cols) = Σ_rows a; sab = Σ_rows a ⊙ b (b may be null: then only sa).
template <class S>
void column_sums_pair(const S* a, const S* b, std::size_t rows, std::size_t cols, S* sa, S* sab) {
  std::fill(sa, sa + cols, S(0));
  if (b) std::fill(sab, sab + cols, S(0));
  std::vector<S> pa(cols), pab(b ? cols : 0);
  for (std::size_t first = 0; first < rows; first += column_sum_block) {
    std::fill(pa.begin(), pa.end(), S(0));
    std::fill(pab.begin(), pab.end(), S(0));
    S* __restrict ra = pa.data();
    S* __restrict rab = pab.data();
    const std::size_t end = std::min(rows, first + column_sum_block);
    for (std::size_t i = first; i < end; ++i) {
      const S* __restrict x = a + i * cols;
      for (std::size_t j = 0; j < cols; ++j) ra[j] += x[j];
      if (b) {
        const S* __restrict y = b + i * cols;
        for (std::size_t j = 0; j < cols; ++j) rab[j] += x[j] * y[j];
      }
    }
    for (std::size_t j = 0; j < cols; ++j) sa[j] += ra[j];
    if (b)
      for (std::size_t j = 0; j < cols; ++j) sab[j] += rab[j];
  }
}

/// out = Σ_t m[t] ⊙ u[t] (per column) + z, row by row. out may be m[0] (each row of it is
/// read before it is written) but no other term.
template <class S>
void combine_columns(std::span<const S* const> m, std::span<const S* const> u, const S* z, std::size_t rows,
                     std::size_t cols, S* out) {
  for (std::size_t i = 0; i < rows; ++i) {
    {
      S* o = out + i * cols;
      const S* x = m[0] + i * cols;  // may be o itself: element j is read, then written
      const S* f = u[0];
      for (std::size_t j = 0; j < cols; ++j) o[j] = x[j] * f[j] + z[j];
    }
    S* __restrict o = out + i * cols;
    for (std::size_t t = 1; t < m.size(); ++t) {
      const S* __restrict x = m[t] + i * cols;
      const S* __restrict f = u[t];
      for (std::size_t j = 0; j < cols; ++j) o[j] += x[j] * f[j];
    }
  }
}

/// A host mixin's error messages: a matrix's shape, and std::invalid_argument naming the
/// policy and the operation.
template <class Policy>
struct host_messages {
  template <class Matrix>
  static std::string shape(const Matrix& m) {
    return std::to_string(Policy::rows(m)) + "x" + std::to_string(Policy::cols(m));
  }
  [[noreturn]] static void fail(const char* op, const std::string& what) {
    throw std::invalid_argument(std::string("bilevel::policy::") + Policy::name + "::" + op + ": " + what);
  }
};

/// The two primitives for a host policy `Policy` (its rows/cols/size/matrix_zeros/zeros and
/// `name`), inherited by it.
template <class Policy>
struct host_column_maps : private host_messages<Policy> {
  /// sa_j = Σ_i a_ij, sab_j = Σ_i a_ij b_ij.
  template <class Matrix, class Vector>
  static void column_sums_pair(const Matrix& a, const Matrix& b, Vector& sa, Vector& sab) {
    if (Policy::rows(a) != Policy::rows(b) || Policy::cols(a) != Policy::cols(b))
      fail("column_sums_pair", "a " + shape(a) + " and b " + shape(b) + " differ in shape");
    const std::size_t c = Policy::cols(a);
    if (Policy::size(sa) != c) sa = Policy::zeros(c);
    if (Policy::size(sab) != c) sab = Policy::zeros(c);
    detail::column_sums_pair(a.data(), b.data(), Policy::rows(a), c, sa.data(), sab.data());
  }
  /// out_j = Σ_i m_ij: the first of the pair alone (the policies' required column_sums). Rows
  /// in blocks of 256, contiguous loads the compiler vectorises (Eigen's colwise sum of a
  /// row-major matrix walked each column with a stride, 7% of a ResNet gradient), and the long
  /// sums of a batch normalization's statistics round like ~n/256 terms, not n.
  template <class Matrix, class Vector>
  static void column_sums(const Matrix& m, Vector& out) {
    const std::size_t c = Policy::cols(m);
    if (Policy::size(out) != c) out = Policy::zeros(c);
    detail::column_sums_pair<typename Policy::scalar>(m.data(), nullptr, Policy::rows(m), c, out.data(), nullptr);
  }
  /// out = Σ_t m[t] ⊙ u[t] + z per column; out may be *m[0], and is shaped like it otherwise.
  template <class Matrix, class Vector>
  static void combine_columns(std::span<const Matrix* const> m, std::span<const Vector* const> u, const Vector& z,
                              Matrix& out) {
    const char* op = "combine_columns";
    if (m.empty() || m.size() != u.size())
      fail(op, std::to_string(m.size()) + " matrices and " + std::to_string(u.size()) + " column factors");
    const std::size_t r = Policy::rows(*m[0]), c = Policy::cols(*m[0]);
    using S = typename Policy::scalar;
    std::vector<const S*> mp, up;
    for (std::size_t t = 0; t < m.size(); ++t) {
      if (Policy::rows(*m[t]) != r || Policy::cols(*m[t]) != c)
        fail(op, "term " + std::to_string(t) + " is " + shape(*m[t]) + ", term 0 " + shape(*m[0]));
      if (Policy::size(*u[t]) != c)
        fail(op, "term " + std::to_string(t) + " has " + std::to_string(Policy::size(*u[t])) + " factors for " +
                     std::to_string(c) + " columns");
      if (t > 0 && m[t] == &out) fail(op, "the output is term " + std::to_string(t) + "'s matrix (only term 0's may be)");
      mp.push_back(m[t]->data());
      up.push_back(u[t]->data());
    }
    if (Policy::size(z) != c)
      fail(op, "the constant has " + std::to_string(Policy::size(z)) + " entries for " + std::to_string(c) + " columns");
    if (&out != m[0] && (Policy::rows(out) != r || Policy::cols(out) != c)) out = Policy::matrix_zeros(r, c);
    detail::combine_columns<S>(mp, up, z.data(), r, c, out.data());
  }

 private:
  using host_messages<Policy>::fail;
  using host_messages<Policy>::shape;
};

}  // namespace bilevel::policy::detail
