// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// What a hypergradient cost and how far to trust it. Every strategy fills one per call.
#include <cmath>
#include <cstddef>
#include <limits>
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
  /// The implicit strategies count the one gradient that measures stationarity.
  std::size_t gradient_evals = 0;
  std::size_t hvp_evals = 0;        ///< Hessian-vector products
  std::size_t mixed_evals = 0;      ///< mixed products, either direction

  /// Stationarity, measured by the implicit strategies (implicit_cg, neumann, nystrom,
  /// fixed_point), whose result is the derivative of θ*(λ) only where the level's gradient
  /// vanishes: a small residual says the linear system was solved, not that it was the right
  /// one. False for the others, which leave the two numbers below NaN.
  bool assumes_stationarity = false;
  /// ‖∇_θ L‖ of the level's own objective at the point and on the batch of the solve (the
  /// learner's gradient: an optimizer's weight decay is not part of it).
  double gradient_norm = std::numeric_limits<double>::quiet_NaN();
  /// gradient_norm relative to the norm of the gradient the level's inner run started with
  /// (its first step): near 0 when training drove the gradient down, about 1 or more when it
  /// did not (a step size past 2/λ_max oscillates, never converging). NaN before the level's
  /// first step (an evaluate-only level, or a hypergradient asked for before the level has
  /// stepped); 0 when both norms are 0, +Inf when only the starting norm is 0. For a level
  /// that steps along a hypergradient (a middle level) the starting norm is that
  /// hypergradient's. Not kept in checkpoints: a resumed run starts its reference afresh.
  double stationarity = std::numeric_limits<double>::quiet_NaN();

  /// Unrolled: the recorded steps diverged, i.e. a recorded parameter or gradient norm was
  /// NaN/Inf, or the gradient norm grew past `unrolled::divergence_factor` times its value at
  /// the first recorded step. The derivative of those steps is then still what was asked
  /// for, but of a run that went nowhere useful.
  bool diverged = false;
  /// Unrolled: the largest gradient norm over the recorded steps relative to the first
  /// recorded one (NaN when nothing was recorded or for other strategies).
  double gradient_growth = std::numeric_limits<double>::quiet_NaN();
};

inline std::ostream& operator<<(std::ostream& os, const hypergradient_report& r) {
  os << r.strategy << " (level " << r.level << "): ";
  if (r.iterations) os << r.iterations << " iterations, residual " << r.residual << ", ";
  if (r.steps_kept) os << r.steps_kept << " steps, ";
  if (r.rank) os << "rank " << r.rank << ", residual " << r.residual << ", ";
  if (r.assumes_stationarity) {
    os << "gradient norm " << r.gradient_norm << ", stationarity ";
    if (std::isnan(r.stationarity) && !std::isnan(r.gradient_norm)) os << "undefined (no step taken yet)";
    else os << r.stationarity;
    os << ", ";
  }
  os << r.hvp_evals << " HVPs, " << r.mixed_evals << " mixed products";
  if (!r.converged) os << ", NOT CONVERGED";
  if (r.negative_curvature) os << ", negative curvature";
  if (!r.exact_second_order) os << ", finite differences";
  if (r.diverged) os << ", DIVERGED (gradient growth " << r.gradient_growth << ")";
  return os;
}

}  // namespace bilevel
