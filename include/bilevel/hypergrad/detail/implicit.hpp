// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// Pieces shared by the implicit strategies (CG, Neumann, fixed point): the damped Hessian
/// operator, a power-iteration estimate of its largest eigenvalue, and the final mixed
/// product that turns the solve into adjoints of the inputs.
///
/// Implicit function theorem: at a stationary point ∇_θ L(θ*, λ) = 0,
///     (∂θ*/∂λ)ᵀ v = −(∂²L/∂λ∂θ) H⁻¹ v,   H = ∂²L/∂θ²,
/// so every implicit strategy solves H x = v (approximately, damped) and returns −mixed(x).
#include <cmath>
#include <cstddef>
#include <random>
#include <span>
#include <vector>

#include "bilevel/core/hypergradient_report.hpp"
#include "bilevel/core/second_order.hpp"
#include "bilevel/hypergrad/detail/step_tape.hpp"

namespace bilevel::hypergrad::detail {

/// x ↦ (H + μI) x at a fixed point, batch and inputs; counts its products in the report.
template <class Level>
struct damped_hessian {
  using P = typename Level::policy;
  Level& lv;
  input_list<P> in;
  const typename Level::batch_type& batch;
  double damping;
  hypergradient_report& r;

  void operator()(const vector_t<P>& x, vector_t<P>& out) const {
    r.exact_second_order &= hvp(lv.learner, lv.theta, in, batch, x, out, lv.second_order);
    ++r.hvp_evals;
    if (damping != 0.0) P::axpy(scalar_t<P>(damping), x, out);
  }
};

/// Largest |eigenvalue| of a symmetric operator by power iteration from a fixed
/// pseudo-random start (seeded, so runs repeat). Converges from below; a few iterations give
/// the scale Neumann needs, not a precise value.
template <tensor_policy P, class Op>
double estimate_largest_eigenvalue(const Op& op, std::size_t n, std::size_t iterations) {
  std::mt19937 gen(12345);
  std::normal_distribution<double> normal;
  std::vector<scalar_t<P>> host(n);
  for (auto& h : host) h = scalar_t<P>(normal(gen));
  vector_t<P> v = P::from_host(host), hv;
  double lambda = 0.0;
  for (std::size_t k = 0; k < iterations; ++k) {
    const double nv = P::norm(v);
    if (nv == 0.0) return 0.0;
    P::scale(v, scalar_t<P>(1.0 / nv));
    op(v, hv);
    lambda = std::abs(P::dot(v, hv));  // Rayleigh quotient of the unit vector
    std::swap(v, hv);
  }
  return lambda;
}

/// out[s] = −(∂²L/∂in_s ∂θ) x for each input slot.
template <class Level>
void negative_mixed_products(Level& lv, input_list<typename Level::policy> in,
                             const typename Level::batch_type& batch,
                             const vector_t<typename Level::policy>& x,
                             std::span<vector_t<typename Level::policy>> out, hypergradient_report& r) {
  using P = typename Level::policy;
  static_assert(check_input_differentiable_learner<typename Level::learner_type>());
  for (std::size_t s = 0; s < out.size(); ++s) {
    r.exact_second_order &= mixed_vjp(lv.learner, lv.theta, in, batch, s, x, out[s], lv.second_order);
    ++r.mixed_evals;
    P::scale(out[s], scalar_t<P>(-1));
  }
}

/// Relative residual ‖(H+μI)x − v‖ / ‖v‖ (one more product: the honest number to report).
template <class Level, class Op>
double relative_residual(const Op& op, const vector_t<typename Level::policy>& x,
                         const vector_t<typename Level::policy>& v) {
  using P = typename Level::policy;
  vector_t<P> hx;
  op(x, hx);
  P::axpy(scalar_t<P>(-1), v, hx);
  const double nv = P::norm(v);
  return nv == 0.0 ? P::norm(hx) : P::norm(hx) / nv;
}

/// Default solve tolerance by precision: ~100 ulp-equivalents of relative residual.
template <class Scalar>
constexpr double default_solve_tolerance() {
  return std::is_same_v<Scalar, float> ? 1e-5 : 1e-10;
}

}  // namespace bilevel::hypergrad::detail
