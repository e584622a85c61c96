// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// SAMA (Choe et al., "Making Scalable Meta Learning Practical", NeurIPS 2023; Betty's
/// type="sama"): implicit differentiation with the inverse Hessian replaced by the
/// derivative of the optimizer's update, and the one remaining second-order product taken
/// by central differences of gradients. No HVP, no solve, no unrolling.
///
/// The implicit function theorem gives (∂θ*/∂λ)ᵀ v = −(∂²L/∂λ∂θ) H⁻¹ v with v = ∂F/∂θ*.
/// SAMA approximates the base Jacobian H⁻¹ by the identity, adapted to the optimizer: with
/// θ' = θ − u(g) the level's last real step, H⁻¹ becomes (∂u/∂g)ᵀ, so
///
///     ṽ   = (∂u/∂g)ᵀ v
///     out = −[∇_λ L(θ + εṽ, λ) − ∇_λ L(θ − εṽ, λ)] / 2ε,   ε = s/‖ṽ‖,
///
/// at the level's current θ, on a fresh batch of its data (as the implicit strategies draw
/// one). ∂u/∂g is read off the optimizer's own vjp with a zero state adjoint, at the point,
/// state and gradient of the last real step (on_step keeps them; Betty keeps `last_grad`
/// for the same reason):
///   - SGD, plain or heavy-ball momentum: u = η·m', m' = μm + g (+ wd·θ), so ∂u/∂g = η·I
///     (momentum enters later steps, not this one); Nesterov: η(1 + μ)·I;
///   - Adam (t = step + 1, c1 = 1/(1−β1^t), c2 = 1/(1−β2^t), m', v' the moments after the
///     step, d = g (+ wd·θ for L2 decay), r = √(c2·v')), per coordinate:
///         ∂u/∂g = η·[ c1(1−β1)/(r + ε) − c1·c2·(1−β2)·m'·d / (r·(r + ε)²) ]
///     (second term 0 where v' = 0, as adam.hpp's products). Betty's precondition_adam
///     puts both terms over one (√v' + ε)³, ((1−β1)β2·v − β1(1−β2)·g·m)/(√v' + ε)³ with
///     the moments before the step, and drops the bias correction; this is the exact
///     derivative instead;
///   - any other differentiable optimizer: whatever its vjp gives. For a non-per-coordinate
///     update (optim::clip_grad_norm) that is the full Jacobian, not only its diagonal;
///     optim::frozen gives 0, correctly: its level does not respond.
/// Betty applies no η for SGD (the constant folds into the meta learning rate);
/// `adapt_to_optimizer = false` reproduces that: ṽ = v. So does an optimizer without vjp
/// (no derivative to adapt by), and the report then names the strategy "sama_identity"
/// instead of "sama", so that the fallback is visible.
///
/// Before the level's first real step there is no step to differentiate; the derivative of
/// the step the optimizer would take next is used instead, from the current state with the
/// gradient at θ on the same batch (one gradient more, counted in the report). Likewise
/// when the level's state was replaced since (a restored checkpoint: step counts disagree).
///
/// s defaults to the level's finite-difference scale (core/second_order.hpp: 1e-2 in float,
/// 1e-4 in double), which puts θ ± εṽ at distance s from θ. Betty's default, R =
/// sama_adam_alpha = 1.0, is tuned for large networks, whose parameter norms are in the
/// hundreds; on small problems it leaves the linear regime.
///
/// Everything is evaluated on copies: θ ± εṽ are fresh vectors and the optimizer's vjp
/// writes only scratch adjoints, so every level's parameters and optimizer state are
/// bit-for-bit what they were (an early Betty version left θ − εṽ in place).
///
/// Cost per call: 2 input gradients per input slot (reported as one mixed product each),
/// plus one optimizer vjp; memory: the last step's θ, state and gradient. The products are
/// always central differences, even where the learner has exact ones: that is the
/// approximation, kept faithful (exact_second_order = false).
#include <cstddef>
#include <limits>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>

#include "bilevel/hypergrad/detail/step_tape.hpp"

namespace bilevel::hypergrad {

struct sama {
  /// Central-difference scale s (ε = s/‖ṽ‖); finite and > 0. Unset: the level's
  /// finite-difference scale (level::finite_difference_scale, by default 1e-2 in float and
  /// 1e-4 in double).
  std::optional<double> scale{};
  /// Multiply the adjoint by the derivative of the optimizer's update (the paper's
  /// algorithmic adaptation); false: the plain identity, as Betty does for SGD.
  bool adapt_to_optimizer = true;

  template <class L, class O>
  class engine {
    using P = typename L::policy;

   public:
    explicit engine(const sama& options) : scale_(options.scale), adapt_(options.adapt_to_optimizer) {
      if (scale_ && !(*scale_ > 0.0 && *scale_ < std::numeric_limits<double>::infinity()))
        throw std::invalid_argument("bilevel::hypergrad::sama: scale must be finite and > 0 (leave it unset for the "
                                    "level's default), got " + std::to_string(*scale_));
    }

    template <class Level> void begin_block(Level&, input_list<P>) {}
    template <class Level>
    void on_step([[maybe_unused]] Level& lv, input_list<P>, const typename L::batch_type&,
                 [[maybe_unused]] const vector_t<P>& g) {
      if constexpr (differentiable_optimizer<O>) {
        if (!adapt_) return;
        // Assigned, not rebuilt: a same-sized vector keeps its buffer from the previous step.
        last_.theta = lv.theta;
        last_.state = lv.state;
        last_.gradient = g;
        has_last_ = true;
      }
    }
    template <class Level>
    const vector_t<P>& response(Level& lv, input_list<P>) {
      return lv.theta;
    }

    template <class Level>
    hypergradient_report vjp(Level& lv, input_list<P> in, const vector_t<P>& adjoint,
                             std::span<vector_t<P>> out) {
      static_assert(check_input_differentiable_learner<L>());
      hypergradient_report r{.strategy = "sama"};
      r.exact_second_order = false;
      const auto batch = lv.next_batch();
      vector_t<P> direction;
      if (!adapt(lv, in, batch, adjoint, direction, r)) {
        r.strategy = "sama_identity";
        P::copy(adjoint, direction);
      }
      const double norm = P::norm(direction);
      if (norm == 0.0) {
        detail::zero_outputs<P>(in, out);
        return r;
      }
      const double s = scale_ ? *scale_ : lv.second_order.fd_scale;
      const double eps = s / norm;
      const vector_t<P> plus = bilevel::detail::shifted<P>(lv.theta, eps, direction);
      const vector_t<P> minus = bilevel::detail::shifted<P>(lv.theta, -eps, direction);
      vector_t<P> low;
      for (std::size_t slot = 0; slot < out.size(); ++slot) {
        lv.learner.input_gradient(plus, in, batch, slot, out[slot]);
        lv.learner.input_gradient(minus, in, batch, slot, low);
        // −(high − low)/2ε, the sign of the implicit function theorem folded into the scale.
        P::axpy(scalar_t<P>(-1), low, out[slot]);
        P::scale(out[slot], scalar_t<P>(-1.0 / (2.0 * eps)));
        ++r.mixed_evals;
      }
      return r;
    }

   private:
    /// direction = (∂u/∂g)ᵀ adjoint, where u = θ − θ' is the optimizer's update. False when
    /// the identity must stand in (adaptation off, or no vjp to read the derivative from).
    template <class Level>
    bool adapt([[maybe_unused]] Level& lv, [[maybe_unused]] input_list<P> in,
               [[maybe_unused]] const typename L::batch_type& batch, [[maybe_unused]] const vector_t<P>& adjoint,
               [[maybe_unused]] vector_t<P>& direction, [[maybe_unused]] hypergradient_report& r) const {
      if constexpr (differentiable_optimizer<O>) {
        if (!adapt_) return false;
        vector_t<P> adj_theta;
        P::copy(adjoint, adj_theta);
        // The record holds the step that produced the current state only if one step
        // separates them; otherwise differentiate the step that would come next.
        if (has_last_ && last_.state.step + 1 == lv.state.step) {
          auto adj_state = last_.state.zeros_like();
          lv.optimizer.vjp(last_.theta, last_.state, last_.gradient, adj_theta, adj_state, direction);
        } else {
          vector_t<P> g;
          gradient_into(lv.learner, lv.theta, in, batch, g);
          ++r.gradient_evals;
          auto adj_state = lv.state.zeros_like();
          lv.optimizer.vjp(lv.theta, lv.state, g, adj_theta, adj_state, direction);
        }
        // vjp gives ∂θ'/∂g = −∂u/∂g.
        P::scale(direction, scalar_t<P>(-1));
        return true;
      } else {
        return false;
      }
    }

    struct last_step {
      vector_t<P> theta;
      optimizer_state<P> state;
      vector_t<P> gradient;
    };

    std::optional<double> scale_;
    bool adapt_;
    last_step last_{};
    bool has_last_ = false;
  };
};

}  // namespace bilevel::hypergrad
