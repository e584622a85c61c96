// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// Eigen-decomposition of a small symmetric matrix on the host, in double, by cyclic Jacobi
/// rotations. For the k×k systems of sketched solvers (k up to a few hundred): Jacobi needs
/// no pivoting, works for indefinite and singular matrices alike, and its eigenvalues are
/// accurate to machine precision relative to the matrix's norm, which is what a
/// pseudo-inverse's truncation needs. Not a back-end operation.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <utility>
#include <vector>

namespace bilevel::detail {

struct symmetric_eigen_result {
  std::vector<double> values;   ///< n eigenvalues, in no particular order
  std::vector<double> vectors;  ///< row-major n×n; column i is the unit eigenvector of values[i]
};

/// A = V diag(values) Vᵀ for a symmetric row-major n×n A (only its symmetric part is used
/// in effect: each rotation assumes a_pq = a_qp).
inline symmetric_eigen_result symmetric_eigen(std::vector<double> a, std::size_t n) {
  std::vector<double> v(n * n, 0.0);
  for (std::size_t i = 0; i < n; ++i) v[i * n + i] = 1.0;
  auto at = [n](std::vector<double>& m, std::size_t i, std::size_t j) -> double& { return m[i * n + j]; };
  // Jacobi converges quadratically once the off-diagonal is small; 100 sweeps is far beyond
  // what any matrix needs and only bounds the loop against NaN input.
  for (std::size_t sweep = 0; sweep < 100; ++sweep) {
    double off = 0.0;
    for (std::size_t p = 0; p < n; ++p)
      for (std::size_t q = p + 1; q < n; ++q) off += at(a, p, q) * at(a, p, q);
    if (!(off > 0.0)) break;
    for (std::size_t p = 0; p < n; ++p) {
      for (std::size_t q = p + 1; q < n; ++q) {
        const double apq = at(a, p, q);
        if (apq == 0.0) continue;
        const double app = at(a, p, p), aqq = at(a, q, q);
        // Past the first sweeps, an element below the diagonals' last bit is round-off:
        // zeroing it, rather than rotating by an angle of order ε, is what lets the loop end.
        const double g = 100.0 * std::abs(apq);
        if (sweep > 3 && std::abs(app) + g == std::abs(app) && std::abs(aqq) + g == std::abs(aqq)) {
          at(a, p, q) = at(a, q, p) = 0.0;
          continue;
        }
        // The smaller of the two rotation angles (|t| <= 1) keeps the update stable.
        const double theta = (aqq - app) / (2.0 * apq);
        const double t = std::abs(theta) > 1e150 ? 0.5 / theta
                                                 : (theta >= 0.0 ? 1.0 : -1.0) /
                                                       (std::abs(theta) + std::sqrt(theta * theta + 1.0));
        const double c = 1.0 / std::sqrt(t * t + 1.0), s = t * c;
        for (std::size_t k = 0; k < n; ++k) {  // A ← A J
          const double akp = at(a, k, p), akq = at(a, k, q);
          at(a, k, p) = c * akp - s * akq;
          at(a, k, q) = s * akp + c * akq;
        }
        for (std::size_t k = 0; k < n; ++k) {  // A ← Jᵀ A
          const double apk = at(a, p, k), aqk = at(a, q, k);
          at(a, p, k) = c * apk - s * aqk;
          at(a, q, k) = s * apk + c * aqk;
        }
        at(a, p, q) = at(a, q, p) = 0.0;  // zero in exact arithmetic; exactly zero here
        for (std::size_t k = 0; k < n; ++k) {  // V ← V J
          const double vkp = at(v, k, p), vkq = at(v, k, q);
          at(v, k, p) = c * vkp - s * vkq;
          at(v, k, q) = s * vkp + c * vkq;
        }
      }
    }
  }
  symmetric_eigen_result r{std::vector<double>(n), std::move(v)};
  for (std::size_t i = 0; i < n; ++i) r.values[i] = at(a, i, i);
  return r;
}

}  // namespace bilevel::detail
