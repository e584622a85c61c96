// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// What a hypergradient cost and how far to trust it. Every strategy fills one per call.
#include <cstddef>
#include <ostream>
#include <string_view>

namespace bilevel {

struct hypergradient_report {
  std::string_view strategy;     ///< e.g. "implicit_cg"
  std::size_t level = 0;         ///< index of the level whose best response was differentiated
  std::size_t iterations = 0;    ///< linear-solve or fixed-point iterations (0 for step-based)
  std::size_t steps_kept = 0;    ///< optimizer steps differentiated through (unrolled, forward)
  std::size_t rank = 0;          ///< Nyström: the sketch's rank k (directions sketched)
  double residual = 0.0;         ///< relative residual ‖(H+μI)x − v‖/‖v‖ of a solve; 0 if none
  bool converged = true;         ///< the solve met its tolerance within its budget
  bool negative_curvature = false;  ///< CG met pᵀ(H+μI)p <= 0 and stopped there
  bool exact_second_order = true;   ///< false when central differences stood in for a product
  /// Learner gradients the strategy took itself (a finite-difference product costs 2 more);
  /// unrolled's are the level's real steps, taken by the solver, so it reports 0 (its HVPs
  /// there run at recorded points, where no forward cache holds: about 3 gradients each).
  std::size_t gradient_evals = 0;
  std::size_t hvp_evals = 0;        ///< Hessian-vector products
  std::size_t mixed_evals = 0;      ///< mixed products, either direction
};

inline std::ostream& operator<<(std::ostream& os, const hypergradient_report& r) {
  os << r.strategy << " (level " << r.level << "): ";
  if (r.iterations) os << r.iterations << " iterations, residual " << r.residual << ", ";
  if (r.steps_kept) os << r.steps_kept << " steps, ";
  if (r.rank) os << "rank " << r.rank << ", residual " << r.residual << ", ";
  os << r.hvp_evals << " HVPs, " << r.mixed_evals << " mixed products";
  if (!r.converged) os << ", NOT CONVERGED";
  if (r.negative_curvature) os << ", negative curvature";
  if (!r.exact_second_order) os << ", finite differences";
  return os;
}

}  // namespace bilevel
