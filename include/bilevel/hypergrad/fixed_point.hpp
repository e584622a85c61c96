// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// Implicit differentiation of the optimizer's own fixed point.
///
/// At convergence the level's state z = (θ, optimizer buffers) is a fixed point of the
/// update map z = Φ(z, λ) (one optimizer step, momentum and weight decay included). Then
///     (∂z*/∂λ)ᵀ v = (∂Φ/∂λ)ᵀ w,   w = v + (∂Φ/∂z)ᵀ w,
/// and w is found by iterating the transposed map, each iteration one optimizer VJP and one
/// HVP. It converges exactly when the optimizer itself converges linearly (spectral radius of
/// ∂Φ/∂z below 1), at the optimizer's own rate, and needs no step size or damping of its own.
/// With plain SGD it is Neumann with α = η; with momentum it differentiates the heavy-ball
/// fixed point, which Neumann and CG cannot. Weight decay is part of the map, so the
/// stationarity it differentiates is that of L + wd/2‖θ‖², what the optimizer really solves.
#include <cstddef>
#include <stdexcept>
#include <string>
#include <span>

#include "bilevel/hypergrad/detail/implicit.hpp"

namespace bilevel::hypergrad {

template <class L, class O>
class fixed_point_engine;

struct fixed_point {
  std::size_t max_iterations = 1000;
  double tolerance = 0.0;  ///< on ‖w_{k+1} − w_k‖ / ‖v‖; 0: by precision

  template <class L, class O>
  using engine = fixed_point_engine<L, O>;
};

/// What a level using fixed_point keeps: its options and the gradient norm its block of
/// steps started with (for the report's stationarity).
template <class L, class O>
class fixed_point_engine : public detail::implicit_engine_base<L> {
  using P = typename L::policy;

 public:
  explicit fixed_point_engine(const fixed_point& options) : opt_(options) {
    if (options.max_iterations == 0 || !(options.tolerance >= 0.0))
      throw std::invalid_argument("bilevel::hypergrad::fixed_point: needs max_iterations >= 1 and tolerance >= 0; got " +
                                  std::to_string(options.max_iterations) + " and " + std::to_string(options.tolerance));
  }

  template <class Level>
  hypergradient_report vjp(Level& lv, input_list<P> in, const vector_t<P>& v, std::span<vector_t<P>> out) {
    static_assert(differentiable_optimizer<O>,
                  "bilevel::hypergrad::fixed_point iterates the optimizer's transposed update: "
                  "the optimizer needs vjp() (see bilevel/core/optimizer.hpp)");
    hypergradient_report r{.strategy = "fixed_point"};
    const auto batch = lv.next_batch();
    vector_t<P> g;
    gradient_into(lv.learner, lv.theta, in, batch, g);
    ++r.gradient_evals;
    this->stationarity_.report(P::norm(g), r);
    const double tol = opt_.tolerance > 0.0 ? opt_.tolerance : detail::default_solve_tolerance<scalar_t<P>>();
    const double norm_v = P::norm(v);

    // w = (w_θ, w_state); one application of the transposed map, plus v on the θ part.
    vector_t<P> w_theta = v, adj_g, hg, previous;
    auto w_state = lv.state.zeros_like();
    r.converged = norm_v == 0.0;
    for (std::size_t k = 0; k < opt_.max_iterations && !r.converged; ++k) {
      previous = w_theta;
      lv.optimizer.vjp(lv.theta, lv.state, g, w_theta, w_state, adj_g);
      r.exact_second_order &= hvp(lv.learner, lv.theta, in, batch, adj_g, hg, lv.second_order);
      ++r.hvp_evals;
      P::axpy(scalar_t<P>(1), hg, w_theta);
      P::axpy(scalar_t<P>(1), v, w_theta);
      r.iterations = k + 1;
      P::axpy(scalar_t<P>(-1), w_theta, previous);
      r.residual = P::norm(previous) / norm_v;
      if (r.residual <= tol) r.converged = true;
      if (!(r.residual < 1e30)) break;  // diverging: the optimizer's map is not a contraction here
    }
    // (∂Φ/∂λ)ᵀ w: the optimizer's VJP gives the gradient's adjoint, then the mixed product.
    auto w_state_copy = w_state;
    vector_t<P> w_copy = w_theta;
    lv.optimizer.vjp(lv.theta, lv.state, g, w_copy, w_state_copy, adj_g);
    static_assert(check_input_differentiable_learner<L>());
    for (std::size_t s = 0; s < out.size(); ++s) {
      r.exact_second_order &= mixed_vjp(lv.learner, lv.theta, in, batch, s, adj_g, out[s], lv.second_order);
      ++r.mixed_evals;
    }
    return r;
  }

 private:
  fixed_point opt_;
};

}  // namespace bilevel::hypergrad
