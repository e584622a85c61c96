// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// Zero-order (evolution strategies) hypergradient: TorchOpt's zero-order mode, after
/// Salimans, Ho, Chen, Sidor and Sutskever, "Evolution strategies as a scalable alternative
/// to reinforcement learning" (2017).
///
/// The level's response to the values λ it reads is θ_T(λ), the result of `steps` = T virtual
/// optimizer steps from its current state (as lookahead: the level does not move); upper
/// levels read it. Instead of differentiating those steps, the strategy smooths them with
/// Gaussian noise and estimates the gradient of the smoothed function from antithetic pairs:
///
///     out ≈ 1/(2σN) Σ_{i=1..N} [φ(λ + σu_i) − φ(λ − σu_i)] u_i,   u_i ~ N(0, I),
///
/// an unbiased estimate of ∇ E_u[φ(λ + σu)]. The solver hands a strategy the adjoint
/// v = ∂F/∂θ_T of its response, never the upper objective F itself, so the scalar smoothed
/// here is φ(λ) = ⟨v, θ_T(λ)⟩: F expanded to first order in θ_T around the current response,
/// which keeps the estimate a vector-Jacobian product that chains through further levels
/// like every other strategy's. For F linear in θ_T that is F itself, and for θ_T affine in λ
/// the two agree in expectation for any F with a linear gradient (a quadratic); in general
/// the curvature of F that φ leaves out changes the estimate by O(σ²), the order of the
/// smoothing's own bias. Each φ evaluation runs the T virtual steps with the perturbed
/// inputs and only the learner's `gradient` with respect to θ: no input_gradient and no
/// second-order product anywhere, so a hypergradient passes through a level whose learner is
/// a black box (the solver allows it because the engine declares `needs_input_gradient =
/// false`), and the optimizer needs no vjp either.
///
/// Common random numbers: every evaluation, both members of every pair and the response
/// upper levels read take the same T batches, drawn once per response, so sampling noise in
/// the batches does not enter the differences; only the directions vary.
///
/// Several input slots are perturbed jointly: u spans the concatenation of all slots, so one
/// pair costs 2T gradients however many slots there are, and each slot's share of u is its
/// estimate. Perturbing the slots one at a time would divide each slot's variance by roughly
/// (total dimension)/(its dimension) at the price of one set of N pairs per slot.
///
/// Variance. Where φ is linear in λ (θ_T affine in λ: a quadratic loss in (θ, λ) under SGD
/// with momentum and weight decay) a pair gives (gᵀu)u exactly, whatever σ, and the error
/// is pure sampling: E‖out − g‖² = (d + 1)‖g‖²/N for g the exact product and d the total
/// input dimension. The error falls like 1/√N and grows like √d; σ then only sets the
/// round-off of the differences, about ε|θ|/σ relative. For nonlinear φ the estimate is the
/// gradient of the smoothed φ, off the exact one by O(σ²) (for sin(λ) by the factor
/// e^{−σ²/2}): a small σ tracks the derivative, a large one smooths over kinks and noise.
///
/// Cost per vjp: 2·N·T learner gradients (reported in `gradient_evals`) on top of the T of
/// the response; no HVP, no mixed product. Memory: a few vectors of |θ| and of each input,
/// and the T batches.
///
/// Directions are drawn on the host (std::mt19937_64 seeded by `seed`, standard normal in
/// double, rounded to the scalar type) and uploaded, so every back end built with the same
/// standard library draws the same ones. The generator advances from call to call, so that
/// successive hypergradients use fresh directions and their errors average out over an
/// upper level's steps instead of repeating; a copied solver copies the generator. Like
/// soba's z it is the engine's own state: solver::save_checkpoint does not keep it (a resumed
/// run draws the directions from `seed` afresh) and roll_back does not rewind it.
#include <cstddef>
#include <cstdint>
#include <deque>
#include <limits>
#include <random>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "bilevel/core/hypergradient_report.hpp"
#include "bilevel/core/device_loss.hpp"
#include "bilevel/core/optimizer.hpp"
#include "bilevel/hypergrad/detail/step_tape.hpp"

namespace bilevel::hypergrad {

struct zero_order {
  /// N: antithetic pairs per vjp, each 2·T gradients; >= 1.
  std::size_t samples = 32;
  /// σ: the smoothing scale of the perturbation; finite and > 0.
  double sigma = 1e-2;
  /// T: virtual optimizer steps that make the response; >= 1.
  std::size_t steps = 1;
  /// Seeds the directions (see the file comment on how the stream advances).
  std::uint64_t seed = 0;
  /// Virtual step t takes the batch the level's real step t + 1 from now will take (see
  /// lookahead); otherwise the virtual steps draw their own.
  bool on_next_batch = false;

  template <class L, class O>
  class engine {
    using P = typename L::policy;
    using S = scalar_t<P>;

   public:
    /// Read by the solver: a hypergradient may pass through a learner without input_gradient().
    static constexpr bool needs_input_gradient = false;

    explicit engine(const zero_order& options)
        : samples_(options.samples), sigma_(options.sigma), steps_(options.steps),
          on_next_batch_(options.on_next_batch), generator_(options.seed) {
      if (samples_ == 0)
        throw std::invalid_argument("bilevel::hypergrad::zero_order: samples must be >= 1 (pairs of evaluations)");
      if (!(sigma_ > 0.0) || sigma_ == std::numeric_limits<double>::infinity())
        throw std::invalid_argument("bilevel::hypergrad::zero_order: sigma must be finite and > 0, got " +
                                    std::to_string(sigma_));
      if (steps_ == 0)
        throw std::invalid_argument("bilevel::hypergrad::zero_order: steps must be >= 1 (use first_order for none)");
    }

    template <class Level> void begin_block(Level&, input_list<P>) {}
    template <class Level>
    void on_step(Level&, input_list<P>, const typename L::batch_type&, const vector_t<P>&) {}

    template <class Level>
    const vector_t<P>& response(Level& lv, input_list<P> in) {
      draw_batches(lv);
      advance(lv, in, ahead_);
      return ahead_;
    }

    template <class Level>
    hypergradient_report vjp(Level& lv, input_list<P> in, const vector_t<P>& adjoint,
                             std::span<vector_t<P>> out) {
      hypergradient_report r{.strategy = "zero_order"};
      r.exact_second_order = false;
      detail::zero_outputs<P>(in, out);
      std::size_t total = 0;
      offsets_.assign(in.size() + 1, 0);
      for (std::size_t s = 0; s < in.size(); ++s) {
        total += P::size(*in[s]);
        offsets_[s + 1] = total;
      }
      if (total == 0) return r;
      // Called without a response first (directly, not through the solver): the batches
      // must still be this call's and shared by every evaluation.
      if (batches_.size() != steps_) draw_batches(lv);

      host_.resize(total);
      directions_.resize(in.size());
      perturbed_.resize(in.size());
      pointers_.resize(in.size());
      for (std::size_t s = 0; s < in.size(); ++s) pointers_[s] = &perturbed_[s];
      const input_list<P> shifted(pointers_);
      const double weight = 1.0 / (2.0 * sigma_ * double(samples_));
      for (std::size_t i = 0; i < samples_; ++i) {
        for (auto& h : host_) h = S(normal_(generator_));
        for (std::size_t s = 0; s < in.size(); ++s)
          directions_[s] = P::from_host(std::span<const S>(host_.data() + offsets_[s], offsets_[s + 1] - offsets_[s]));
        perturb(in, S(sigma_));
        advance(lv, shifted, plus_);
        perturb(in, S(-sigma_));
        advance(lv, shifted, minus_);
        // ⟨v, θ₊ − θ₋⟩ rather than ⟨v, θ₊⟩ − ⟨v, θ₋⟩: the difference is O(σ) of θ, and
        // taking it entry by entry first keeps the dot from cancelling two large sums.
        P::axpy(S(-1), minus_, plus_);
        const auto c = S(P::dot(adjoint, plus_) * weight);
        for (std::size_t s = 0; s < in.size(); ++s) P::axpy(c, directions_[s], out[s]);
      }
      r.gradient_evals = 2 * samples_ * steps_;
      r.steps_kept = steps_;
      return r;
    }

   private:
    template <class Level>
    void draw_batches(Level& lv) {
      batches_.clear();
      for (std::size_t t = 0; t < steps_; ++t) {
        if constexpr (requires { lv.peek_batch(); }) {
          if (on_next_batch_) {
            batches_.push_back(lv.peek_batch(t));
            continue;
          }
        }
        batches_.push_back(lv.next_batch());
      }
    }

    /// θ_T from the level's current θ and state, on copies: the level itself never moves.
    template <class Level>
    void advance(Level& lv, input_list<P> in, vector_t<P>& theta) {
      theta = lv.theta;
      state_ = lv.state;
      for (std::size_t t = 0; t < steps_; ++t) {
        gradient_into(lv.learner, theta, in, batches_[t], gradient_);
        lv.optimizer.step(theta, state_, gradient_);
      }
    }

    /// perturbed_[s] = in[s] + a·u_s, from the unperturbed values each time so that the two
    /// members of a pair are symmetric about λ to round-off.
    void perturb(input_list<P> in, S a) {
      for (std::size_t s = 0; s < in.size(); ++s) {
        perturbed_[s] = *in[s];
        P::axpy(a, directions_[s], perturbed_[s]);
      }
    }

    std::size_t samples_;
    double sigma_;
    std::size_t steps_;
    bool on_next_batch_;
    std::mt19937_64 generator_;
    std::normal_distribution<double> normal_{};
    std::deque<typename L::batch_type> batches_;
    std::vector<std::size_t> offsets_;
    std::vector<S> host_;
    std::vector<vector_t<P>> directions_, perturbed_;
    std::vector<const vector_t<P>*> pointers_;
    vector_t<P> ahead_, plus_, minus_, gradient_;
    optimizer_state<P> state_;
  };
};

}  // namespace bilevel::hypergrad
