// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// A small host-side Cholesky solve in double, for the closed forms of the test problems
/// (tens to hundreds of unknowns). Not a back-end operation: closed forms are references,
/// computed once on the host whatever the policy.
#include <cmath>
#include <cstddef>
#include <stdexcept>
#include <vector>

namespace bilevel::detail {

/// Row-major n×n symmetric positive definite matrix.
struct dense_matrix {
  std::size_t n = 0;
  std::vector<double> a;
  double& operator()(std::size_t i, std::size_t j) { return a[i * n + j]; }
  double operator()(std::size_t i, std::size_t j) const { return a[i * n + j]; }
};

/// Solves A X = B for each column of B (row-major n×m), in place in B. Throws if A is not
/// positive definite.
inline void cholesky_solve(dense_matrix A, std::vector<double>& b, std::size_t columns = 1) {
  const std::size_t n = A.n;
  for (std::size_t j = 0; j < n; ++j) {
    double d = A(j, j);
    for (std::size_t k = 0; k < j; ++k) d -= A(j, k) * A(j, k);
    if (!(d > 0.0)) throw std::domain_error("bilevel::detail::cholesky_solve: matrix is not positive definite");
    A(j, j) = std::sqrt(d);
    for (std::size_t i = j + 1; i < n; ++i) {
      double s = A(i, j);
      for (std::size_t k = 0; k < j; ++k) s -= A(i, k) * A(j, k);
      A(i, j) = s / A(j, j);
    }
  }
  for (std::size_t c = 0; c < columns; ++c) {
    for (std::size_t i = 0; i < n; ++i) {  // L y = b
      double s = b[i * columns + c];
      for (std::size_t k = 0; k < i; ++k) s -= A(i, k) * b[k * columns + c];
      b[i * columns + c] = s / A(i, i);
    }
    for (std::size_t i = n; i-- > 0;) {  // Lᵀ x = y
      double s = b[i * columns + c];
      for (std::size_t k = i + 1; k < n; ++k) s -= A(k, i) * b[k * columns + c];
      b[i * columns + c] = s / A(i, i);
    }
  }
}

}  // namespace bilevel::detail
