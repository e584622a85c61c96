// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// Implicit differentiation with conjugate gradient.
///
/// Solves (H + μI) x = v with CG from x = 0, then returns −(∂²L/∂λ∂θ) x (see
/// detail/implicit.hpp). Assumes the level is near a stationary point of its objective: the
/// hypergradient is exact up to the solve's tolerance there, and memory is O(|θ|) however
/// long the level trained. The report measures that assumption (gradient_norm, stationarity:
/// one gradient more), since the residual cannot: it is as small off a stationary point.
///
/// Guidance, measured (docs/strategies.md): even a well-trained network has slightly negative
/// Hessian eigenvalues, and undamped CG then meets pᵀHp <= 0 and diverges (float makes it
/// worse). Damp with μ > |λ_min|, about 1e-3..1e-2·λ_max for networks (0 is right for
/// strictly convex problems); iterations grow like √κ. When pᵀ(H+μI)p <= 0 the solve stops,
/// keeps the iterate it has, and reports `negative_curvature` rather than dividing by it.
/// Scalars are accumulated in double (the policy's dot does).
#include <cstddef>
#include <stdexcept>
#include <string>
#include <span>

#include "bilevel/hypergrad/detail/implicit.hpp"

namespace bilevel::hypergrad {

template <class L, class O>
class implicit_cg_engine;

struct implicit_cg {
  double damping = 0.0;             ///< μ added to the Hessian's diagonal
  std::size_t max_iterations = 100; ///< the budget
  double tolerance = 0.0;           ///< relative residual to stop at; 0: by precision

  template <class L, class O>
  using engine = implicit_cg_engine<L, O>;
};

/// What a level using implicit_cg keeps: its options and the gradient norm its block of
/// steps started with (for the report's stationarity).
template <class L, class O>
class implicit_cg_engine : public detail::implicit_engine_base<L> {
  using P = typename L::policy;

 public:
  explicit implicit_cg_engine(const implicit_cg& options) : opt_(options) {
    if (!(options.damping >= 0.0) || !(options.tolerance >= 0.0 && options.tolerance < 1.0) || options.max_iterations == 0)
      throw std::invalid_argument("bilevel::hypergrad::implicit_cg: needs damping >= 0, tolerance in [0, 1) and "
                                  "max_iterations >= 1; got damping " + std::to_string(options.damping) + ", tolerance " +
                                  std::to_string(options.tolerance) + ", max_iterations " +
                                  std::to_string(options.max_iterations));
  }

  template <class Level>
  hypergradient_report vjp(Level& lv, input_list<P> in, const vector_t<P>& v, std::span<vector_t<P>> out) {
    hypergradient_report r{.strategy = "implicit_cg"};
    const auto batch = lv.next_batch();
    const detail::damped_hessian<Level> op{lv, in, batch, opt_.damping, r};
    const double tol = opt_.tolerance > 0.0 ? opt_.tolerance : detail::default_solve_tolerance<scalar_t<P>>();

    vector_t<P> x = P::zeros(P::size(v)), res = v, p = v, ap;
    const double norm_v = P::norm(v);
    double rr = P::dot(res, res);
    r.converged = norm_v == 0.0;
    for (std::size_t k = 0; k < opt_.max_iterations && !r.converged; ++k) {
      op(p, ap);
      const double curvature = P::dot(p, ap);
      if (!(curvature > 0.0)) {  // also catches NaN
        r.negative_curvature = true;
        break;
      }
      const double alpha = rr / curvature;
      P::axpy(scalar_t<P>(alpha), p, x);
      P::axpy(scalar_t<P>(-alpha), ap, res);
      const double rr_next = P::dot(res, res);
      r.iterations = k + 1;
      if (std::sqrt(rr_next) <= tol * norm_v) r.converged = true;
      P::scale(p, scalar_t<P>(rr_next / rr));
      P::axpy(scalar_t<P>(1), res, p);
      rr = rr_next;
    }
    // The recursive residual drifts from the true one in finite precision: report the true one.
    r.residual = norm_v == 0.0 ? 0.0 : detail::relative_residual<Level>(op, x, v);
    detail::negative_mixed_products(lv, in, batch, x, out, r);
    this->stationarity_.measure(lv, in, batch, r);  // last: a network serves it from the solve's cached passes
    return r;
  }

 private:
  implicit_cg opt_;
};

}  // namespace bilevel::hypergrad
