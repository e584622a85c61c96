// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// SOBA, the single-loop stochastic hypergradient (Dagréou, Ablin, Vaiter and Moreau, "A
/// framework for bilevel optimization that enables stochastic and global variance reduction
/// algorithms", NeurIPS 2022).
///
/// The implicit derivative needs x = H⁻¹v (detail/implicit.hpp). CG and Neumann solve for x
/// afresh at every call; SOBA instead keeps an estimate z across calls and moves it by ONE
/// gradient step on the quadratic ½zᵀ(H+μI)z − vᵀz per call:
///     z ← z − ρ_t ((H + μI) z − v),     ρ_t = step · (1 + t)^(−decay),
/// one HVP on the level's next batch, then returns −(∂²L/∂λ∂θ) z. Paired with a lower level
/// that takes one optimizer step per outer iteration (steps_per_iteration(1)) and an upper
/// level that takes one step along the result, θ, z and λ each move once per iteration: the
/// paper's single loop, with its z = −v (the paper's v solves H v = −∇_θF). As in the paper
/// (and benchopt's reference), the mixed product uses z as it was on entry, the same z whose
/// residual is reported, and the update comes after; z starts at 0, so the first call returns
/// no indirect term.
///
/// Stability: with θ and λ fixed, the error of z is multiplied by I − ρ(H + μI) at every
/// call, which contracts exactly when H + μI is positive definite and 0 < ρ < 2/λ_max(H + μI),
/// at the rate max(|1 − ρλ_min|, |1 − ρλ_max|) (best ρ = 2/(λ_min + λ_max): (κ−1)/(κ+1)).
/// A step past 2/λ_max makes z grow geometrically, and negative curvature (networks: see
/// implicit_cg.hpp) makes it grow along those directions at any step: damp with μ > |λ_min|.
/// The paper uses the lower level's own step for z; the default suits λ_max up to 200 and is
/// slow on flat problems, so set it. With stochastic batches a constant step leaves z
/// fluctuating by O(ρ) around H⁻¹v; a decay in (0, 1] (the paper's analysis: 2/5) averages
/// that out at the price of slower tracking.
///
/// Cost per call: 1 HVP + 1 mixed product per input and two norms (for the residual); memory:
/// one extra vector of |θ| kept between calls.
///
/// Report: `iterations` counts the updates of z since it was last (re)started, `residual` is
/// ‖(H + μI)z − v‖/‖v‖ of the z the result used, measured on the product the update needs
/// anyway (no extra HVP). `converged` is always true: a single-loop method never finishes a
/// solve, it tracks one, and the residual says how far z still is from the linear system's
/// solution (‖z − x‖/‖x‖ <= κ·residual). Nor does it measure stationarity as the
/// solving strategies do: in the single loop θ moves with λ and z and is at its optimum only
/// at the joint fixed point, so a gap is expected along the way, not a fault.
///
/// State and its limits. z is the engine's own and is not saved by solver::save_checkpoint
/// (which saves parameters, optimizer state and samplers, not engines): a resumed run
/// restarts z from 0 and is not bit-identical to an uninterrupted one; it re-converges at the
/// rate above. For the same reason a failure policy's roll_back restores θ and λ but not z,
/// and skip_step keeps the update of the call whose step it skipped; both only move z
/// toward a system it tracks anyway. z restarts at 0, its count of updates with it, whenever
/// the adjoint's size changes, on reset(), and after a call that found it non-finite (a step
/// past the bound above overflows it; that call's result is NaN/Inf for the failure policy to
/// handle, and the next starts afresh). One z serves every call: a level whose solution is
/// read by two levels above it (the LFM shape, where the middle level and the top both
/// differentiate through the lowest) gets two different right-hand sides in turn once both
/// hypergradients are taken, and one z cannot track both; there the residual stays near 1,
/// and implicit_cg, which solves each call afresh, is the strategy to use.
#include <cmath>
#include <cstddef>
#include <span>
#include <stdexcept>
#include <string>

#include "bilevel/hypergrad/detail/implicit.hpp"

namespace bilevel::hypergrad {

template <class L, class O>
class soba_engine;

struct soba {
  double step = 0.01;    ///< ρ, the step of z's update; finite and > 0, stable below 2/λ_max(H + μI)
  double decay = 0.0;    ///< ρ_t = step·(1 + t)^(−decay) at the t-th update (from 0); in [0, 1]
  double damping = 0.0;  ///< μ added to the Hessian's diagonal; finite and >= 0

  template <class L, class O>
  using engine = soba_engine<L, O>;
};

/// What a level using soba keeps: its options, the estimate z of (H + μI)⁻¹v and how many
/// times z has been updated.
template <class L, class O>
class soba_engine {
  using P = typename L::policy;

 public:
  explicit soba_engine(const soba& options) : opt_(options) {
    std::string bad;
    auto refuse = [&](const char* what, double got) {
      bad += std::string(bad.empty() ? "" : "; ") + what + " (got " + std::to_string(got) + ")";
    };
    if (!(std::isfinite(options.step) && options.step > 0.0)) refuse("step must be finite and > 0", options.step);
    if (!(options.decay >= 0.0 && options.decay <= 1.0)) refuse("decay must be in [0, 1]", options.decay);
    if (!(std::isfinite(options.damping) && options.damping >= 0.0))
      refuse("damping must be finite and >= 0", options.damping);
    if (!bad.empty()) throw std::invalid_argument("bilevel::hypergrad::soba: " + bad);
  }
  template <class Level> void begin_block(Level&, input_list<P>) {}
  template <class Level>
  void on_step(Level&, input_list<P>, const typename L::batch_type&, const vector_t<P>&) {}
  template <class Level>
  const vector_t<P>& response(Level& lv, input_list<P>) { return lv.theta; }

  template <class Level>
  hypergradient_report vjp(Level& lv, input_list<P> in, const vector_t<P>& v, std::span<vector_t<P>> out) {
    hypergradient_report r{.strategy = "soba"};  // converged stays true: see the file comment
    if (P::size(z_) != P::size(v)) start(P::size(v));
    const auto batch = lv.next_batch();
    const detail::damped_hessian<Level> op{lv, in, batch, opt_.damping, r};
    vector_t<P> g;  // (H + μI)z − v: the residual and the update's direction at once
    op(z_, g);
    P::axpy(scalar_t<P>(-1), v, g);
    const double norm_v = P::norm(v), norm_g = P::norm(g);
    r.residual = norm_v == 0.0 ? norm_g : norm_g / norm_v;
    detail::negative_mixed_products(lv, in, batch, z_, out, r);
    if (!std::isfinite(norm_g)) {  // z (or v) overflowed: nothing to warm-start from
      start(P::size(v));
      return r;
    }
    const double rho = opt_.decay == 0.0 ? opt_.step
                                         : opt_.step * std::pow(1.0 + double(updates_), -opt_.decay);
    P::axpy(scalar_t<P>(-rho), g, z_);
    r.iterations = ++updates_;
    return r;
  }

  /// The current estimate z of (H + μI)⁻¹v (empty before the first call).
  [[nodiscard]] const vector_t<P>& estimate() const { return z_; }
  /// Updates of z since it was last (re)started.
  [[nodiscard]] std::size_t updates() const { return updates_; }
  /// Restarts z from 0 (the next call sizes it), e.g. after the problem below has changed.
  void reset() {
    z_ = vector_t<P>{};
    updates_ = 0;
  }

 private:
  void start(std::size_t n) {
    z_ = P::zeros(n);
    updates_ = 0;
  }

  soba opt_;
  vector_t<P> z_{};
  std::size_t updates_ = 0;
};

}  // namespace bilevel::hypergrad
