// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// Fully first-order bilevel methods: F2SA (Kwon, Kwon, Wright and Nowak, ICML 2023) and BOME
/// (Liu, Ye, Wright, Stone and Liu, NeurIPS 2022). Neither takes a second-order product: only
/// the lower learner's gradient ∇_θg and input gradient ∇_λg, at two points.
///
/// Both replace the lower problem min_θ g(λ, θ) by a penalty on an auxiliary copy y of the
/// lower variable, next to the level's own θ, which the solver keeps stepping on g alone (so θ
/// tracks θ*(λ)). The strategy holds y; the levels above read y, not θ (response() gives y),
/// so the upper objective f and its adjoint v = ∇_y f are taken at y; each vjp call moves y
/// one step and returns the penalty's λ-gradient as the hypergradient's indirect part:
///
///   F2SA:  y ← y − step·(v/ρ + ∇_y g(λ, y))         (gradient descent on g + f/ρ)
///          out = ρ·(∇_λ g(λ, y) − ∇_λ g(λ, θ))         ρ the penalty, growing over calls
///   BOME:  ∇q = (∇_λ g(λ, y) − ∇_λ g(λ, θ), ∇_y g(λ, y))  (q = g(λ, y) − g(λ, θ), θ held fixed)
///          ρ = max(0, (η‖∇q‖² − ⟨∇f, ∇q⟩)/‖∇q‖²)      (the value-function constraint's multiplier)
///          y ← y − step·(v + ρ∇_y g(λ, y));  out = ρ·(∇_λ g(λ, y) − ∇_λ g(λ, θ))
///
/// F2SA's y minimises g + f/ρ, whose minimiser y_ρ tends to θ*(λ) as ρ grows; by the envelope
/// theorem ρ(∇_λ g(y_ρ) − ∇_λ g(θ*)) tends to the hypergradient's indirect part −(∂²g/∂λ∂θ)
/// H⁻¹∇_θ f, with a bias of order 1/ρ. The penalty therefore grows: ρ_k = min(ρ_0 + growth·k,
/// max_penalty) at the k-th call. y and θ should take the same step (the level's learning rate):
/// their lags behind a moving λ then cancel in the difference, which ρ multiplies; and the upper
/// level's step must shrink like 1/ρ (f2sa::penalty_at builds its schedule), or the single loop
/// is unstable once ρ is large (measured on ridge regression: a constant upper step of 1 settles
/// 150% away from the optimum, min(0.5, 10/ρ_k) reaches it to 9e-4 in 3000 iterations).
///
/// BOME moves (λ, y) along −(∇f + ρ∇q), the smallest step that still decreases the
/// value-function gap q at rate η‖∇q‖²; the upper level's optimizer makes the λ half of that
/// step, so its learning rate should equal `step` for the method as published. Its stationary
/// points are those of the relaxed problem, not exactly the bilevel optimum: ρ settles where
/// η‖∇q‖² balances ⟨∇f, ∇q⟩ and stays bounded, so y stays O(1/ρ) from θ* and the upper variable
/// settles at a bias, which shrank with the step where measured (ridge regression, η = 0.9:
/// 3.9% at step 0.1, 1.25% at 0.01, with ρ = 25).
///
/// Where they apply: a lower level read by the levels above (any edge of a multilevel problem
/// whose lower learner has input_gradient), stepped by a plain gradient method on its own g
/// (the level's optimizer). BOME's multiplier needs ⟨∇f, ∇q⟩ over both halves; the strategy
/// sees only the y half of ∇f (its adjoint), so it assumes the upper objective depends on the
/// lower level's inputs only through the lower solution (∇_λ f = 0: a validation loss, the
/// usual hyperparameter problem). With an upper objective that reads λ directly, BOME's ρ is
/// computed without that term (F2SA has no such term and is unaffected).
///
/// Cost per call: 1 gradient of g at y, 2 input gradients (at y and at θ); memory: y. The
/// state (y, the call count) is not saved in checkpoints: a resumed run restarts y from θ.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "bilevel/core/hypergradient_report.hpp"
#include "bilevel/core/device_loss.hpp"

namespace bilevel::hypergrad {

namespace detail {
/// What both engines share: y, started from the level's θ at the first call (and again if θ's
/// size changed), read by the levels above; and the pieces both methods take at y and θ.
template <class L>
class penalty_engine_base {
  using P = typename L::policy;

 public:
  template <class Level> void begin_block(Level&, input_list<P>) {}
  template <class Level> void on_step(Level&, input_list<P>, const typename L::batch_type&, const vector_t<P>&) {}
  /// The levels above read y.
  template <class Level> const vector_t<P>& response(Level& lv, input_list<P>) { return y(lv); }

 protected:
  template <class Level>
  const vector_t<P>& y(Level& lv) {
    if (!started_ || P::size(y_) != P::size(lv.theta)) {
      y_ = lv.theta;
      started_ = true;
      calls_ = 0;
    }
    return y_;
  }
  /// gy = ∇_y g(λ, y); diff[s] = ∇_λs g(λ, y) − ∇_λs g(λ, θ).
  template <class Level>
  void gradients(Level& lv, input_list<P> in, const typename L::batch_type& batch, vector_t<P>& gy,
                 std::span<vector_t<P>> diff, hypergradient_report& r) {
    static_assert(check_input_differentiable_learner<L>());
    gradient_into(lv.learner, y(lv), in, batch, gy);
    ++r.gradient_evals;
    vector_t<P> at_theta;
    for (std::size_t s = 0; s < diff.size(); ++s) {
      lv.learner.input_gradient(y_, in, batch, s, diff[s]);
      lv.learner.input_gradient(lv.theta, in, batch, s, at_theta);
      P::axpy(scalar_t<P>(-1), at_theta, diff[s]);
      r.gradient_evals += 2;
    }
  }
  vector_t<P>& y_mut() { return y_; }
  std::size_t next_call() { return calls_++; }

 private:
  vector_t<P> y_;
  bool started_ = false;
  std::size_t calls_ = 0;
};

inline void require_positive(double x, const char* what, const char* who) {
  if (!(x > 0.0) || !std::isfinite(x))
    throw std::invalid_argument(std::string("bilevel::hypergrad::") + who + ": " + what + " must be finite and > 0 (got " +
                                std::to_string(x) + ")");
}
}  // namespace detail

template <class L, class O> class f2sa_engine;
template <class L, class O> class bome_engine;

/// F2SA (see the file comment).
struct f2sa {
  double step = 0.1;              ///< y's step on g + f/ρ: stable below 2/λ_max(∇²_θθ g)
  double penalty = 1.0;           ///< ρ_0
  double penalty_growth = 0.1;    ///< added to ρ at each call
  double max_penalty = 1e4;       ///< ρ stops growing here
  /// ρ at the k-th call (0-based): for the upper level's schedule, whose step must shrink like
  /// 1/ρ (y's and θ's tracking errors enter the estimate multiplied by ρ), e.g.
  /// `sgd{.schedule = [o](std::size_t k) { return std::min(0.5, 10 / o.penalty_at(k)); }}`.
  [[nodiscard]] double penalty_at(std::size_t k) const {
    return std::min(penalty + penalty_growth * double(k), max_penalty);
  }
  template <class L, class O> using engine = f2sa_engine<L, O>;
};

/// BOME (see the file comment).
struct bome {
  double step = 0.1;  ///< ξ: y's step, and what the upper level's learning rate should be
  double eta = 0.5;   ///< η: the rate at which the value-function gap must fall
  template <class L, class O> using engine = bome_engine<L, O>;
};

template <class L, class O>
class f2sa_engine : public detail::penalty_engine_base<L> {
  using P = typename L::policy;

 public:
  explicit f2sa_engine(const f2sa& o) : opt_(o) {
    detail::require_positive(o.step, "step", "f2sa");
    detail::require_positive(o.penalty, "penalty", "f2sa");
    detail::require_positive(o.max_penalty, "max_penalty", "f2sa");
    if (!(o.penalty_growth >= 0.0) || !std::isfinite(o.penalty_growth))
      throw std::invalid_argument("bilevel::hypergrad::f2sa: penalty_growth must be finite and >= 0 (got " +
                                  std::to_string(o.penalty_growth) + ")");
    if (o.max_penalty < o.penalty)
      throw std::invalid_argument("bilevel::hypergrad::f2sa: max_penalty (" + std::to_string(o.max_penalty) +
                                  ") is below penalty (" + std::to_string(o.penalty) + ")");
  }

  template <class Level>
  hypergradient_report vjp(Level& lv, input_list<P> in, const vector_t<P>& v, std::span<vector_t<P>> out) {
    hypergradient_report r{.strategy = "f2sa", .exact_second_order = true};
    const double rho = opt_.penalty_at(this->next_call());
    const auto batch = lv.next_batch();
    vector_t<P> gy;
    this->gradients(lv, in, batch, gy, out, r);
    for (auto& o : out) P::scale(o, scalar_t<P>(rho));
    // y ← y − step·(v/ρ + ∇_y g): after the λ-gradients, which the method takes at the y it had.
    P::axpy(scalar_t<P>(1.0 / rho), v, gy);
    P::axpy(scalar_t<P>(-opt_.step), gy, this->y_mut());
    r.iterations = 1;
    last_penalty_ = rho;
    return r;
  }
  /// The penalty ρ of the last call: the estimate's bias is of order 1/ρ.
  [[nodiscard]] double penalty() const { return last_penalty_; }

 private:
  f2sa opt_;
  double last_penalty_ = 0.0;
};

template <class L, class O>
class bome_engine : public detail::penalty_engine_base<L> {
  using P = typename L::policy;

 public:
  explicit bome_engine(const bome& o) : opt_(o) {
    detail::require_positive(o.step, "step", "bome");
    detail::require_positive(o.eta, "eta", "bome");
  }

  template <class Level>
  hypergradient_report vjp(Level& lv, input_list<P> in, const vector_t<P>& v, std::span<vector_t<P>> out) {
    hypergradient_report r{.strategy = "bome", .exact_second_order = true};
    const auto batch = lv.next_batch();
    vector_t<P> gy;
    this->gradients(lv, in, batch, gy, out, r);
    double grad_q2 = P::dot(gy, gy);
    for (const auto& o : out) grad_q2 += P::dot(o, o);
    // ⟨∇f, ∇q⟩ with ∇_λ f = 0 (see the file comment): the y halves only.
    const double inner = P::dot(v, gy);
    const double rho = grad_q2 > 0.0 ? std::max(0.0, (opt_.eta * grad_q2 - inner) / grad_q2) : 0.0;
    last_multiplier_ = rho;
    for (auto& o : out) P::scale(o, scalar_t<P>(rho));
    // y ← y − step·(v + ρ∇_y g).
    P::scale(gy, scalar_t<P>(rho));
    P::axpy(scalar_t<P>(1), v, gy);
    P::axpy(scalar_t<P>(-opt_.step), gy, this->y_mut());
    (void)this->next_call();
    r.iterations = 1;
    // ‖∇q‖: how far y is from a minimiser of g (zero where the lower problem's constraint holds).
    r.residual = std::sqrt(grad_q2);
    return r;
  }
  /// The multiplier ρ of the last call.
  [[nodiscard]] double multiplier() const { return last_multiplier_; }

 private:
  bome opt_;
  double last_multiplier_ = 0.0;
};

}  // namespace bilevel::hypergrad
