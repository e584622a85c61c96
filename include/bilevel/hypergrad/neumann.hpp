// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// Implicit differentiation with a truncated Neumann series (Lorraine et al., 2020).
///
///     (H + μI)⁻¹ v ≈ α Σ_{i=0}^{K} (I − α(H + μI))^i v
///
/// converges when 0 < α < 2/λ_max and H + μI is positive definite; the error after K terms
/// falls like (1 − α λ_min)^K. With `step = 0` the step is α = 1/λ_max, λ_max estimated by a
/// few power iterations (docs/strategies.md: Neumann needs α ≈ 1/λ_max). Only HVPs, no inner
/// products: cheaper per iteration than CG but slower to converge (κ iterations, not √κ).
/// The final relative residual is measured (one more HVP) and reported.
#include <cstddef>
#include <stdexcept>
#include <string>
#include <span>

#include "bilevel/hypergrad/detail/implicit.hpp"

namespace bilevel::hypergrad {

template <class L, class O>
class neumann_engine;

struct neumann {
  std::size_t iterations = 50;        ///< K, the number of terms after the first
  double damping = 0.0;               ///< μ
  double step = 0.0;                  ///< α; 0: 1/λ_max from power iteration
  std::size_t power_iterations = 20;  ///< for the λ_max estimate
  double tolerance = 0.0;             ///< residual under which the result counts as converged

  template <class L, class O>
  using engine = neumann_engine<L, O>;
};

/// What a level using neumann keeps: its options, the last step used and the gradient norm its block of
/// steps started with (for the report's stationarity).
template <class L, class O>
class neumann_engine : public detail::implicit_engine_base<L> {
  using P = typename L::policy;

 public:
  explicit neumann_engine(const neumann& options) : opt_(options) {
    if (!(options.damping >= 0.0) || !(options.step >= 0.0) || !(options.tolerance >= 0.0) ||
        (options.step == 0.0 && options.power_iterations == 0))
      throw std::invalid_argument("bilevel::hypergrad::neumann: needs damping, step and tolerance >= 0 and, when the "
                                  "step is estimated (step = 0), power_iterations >= 1; got damping " +
                                  std::to_string(options.damping) + ", step " + std::to_string(options.step) +
                                  ", power_iterations " + std::to_string(options.power_iterations));
  }

  template <class Level>
  hypergradient_report vjp(Level& lv, input_list<P> in, const vector_t<P>& v, std::span<vector_t<P>> out) {
    hypergradient_report r{.strategy = "neumann"};
    const auto batch = lv.next_batch();
    const detail::damped_hessian<Level> op{lv, in, batch, opt_.damping, r};
    double alpha = opt_.step;
    if (!(alpha > 0.0)) {
      const double lambda_max = detail::estimate_largest_eigenvalue<P>(op, P::size(v), opt_.power_iterations);
      alpha = lambda_max > 0.0 ? 1.0 / lambda_max : 1.0;
    }
    step_used_ = alpha;
    vector_t<P> term = v, x = v, hterm;
    for (std::size_t k = 0; k < opt_.iterations; ++k) {
      op(term, hterm);
      P::axpy(scalar_t<P>(-alpha), hterm, term);  // term ← (I − α(H+μI)) term
      P::axpy(scalar_t<P>(1), term, x);
    }
    P::scale(x, scalar_t<P>(alpha));
    r.iterations = opt_.iterations;
    r.residual = detail::relative_residual<Level>(op, x, v);
    const double tol = opt_.tolerance > 0.0 ? opt_.tolerance : detail::default_solve_tolerance<scalar_t<P>>();
    r.converged = r.residual <= tol;
    detail::negative_mixed_products(lv, in, batch, x, out, r);
    this->stationarity_.measure(lv, in, batch, r);  // last: a network serves it from the solve's cached passes
    return r;
  }

  /// The step α of the last call (estimated or given).
  [[nodiscard]] double step_used() const { return step_used_; }

 private:
  neumann opt_;
  double step_used_ = 0.0;
};

}  // namespace bilevel::hypergrad
