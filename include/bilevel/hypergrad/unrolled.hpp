// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// Unrolled reverse mode through the optimizer steps the level actually took.
///
/// In each outer iteration the level takes its block of T steps; this strategy records them
/// (the point, the optimizer state, the gradient applied and the batch) and the values the
/// level read, then differentiates θ_T with respect to those values exactly, through the
/// optimizer's own update (momentum and weight decay included). `keep_last = K` truncates to
/// the last K steps (memory O(K·|θ|) instead of O(T·|θ|)); the first T−K steps are then
/// treated as constant, which biases the hypergradient by a term that decays like the
/// contraction of the dropped steps (Shaban et al., 2019). Each kept step costs one HVP and
/// one mixed product per input in the reverse pass.
///
/// Unlike the implicit strategies this needs no stationary point: it differentiates whatever
/// the steps did. It does say when they diverged (the report's `diverged`): a recorded
/// parameter or gradient norm that is NaN/Inf, or a gradient norm that grew past
/// `divergence_factor` times the first recorded one. The gradient is watched rather than the
/// parameters because a converging run may move its parameters arbitrarily far from where
/// the block started (from θ = 0, any growth is infinite), while its gradient shrinks; a step
/// size past 2/λ_max on a quadratic makes the gradient grow like |1 − ηλ_max|^T. The norms are
/// taken of what the tape already holds, at vjp time: O(K·|θ|), less than one HVP per step.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <stdexcept>
#include <string>
#include <deque>
#include <limits>
#include <span>

#include "bilevel/hypergrad/detail/step_tape.hpp"

namespace bilevel::hypergrad {

struct unrolled {
  /// How many of the most recent steps to differentiate through; all of them by default.
  std::size_t keep_last = std::numeric_limits<std::size_t>::max();
  /// Growth of the gradient norm over the recorded steps past which the report says
  /// `diverged`; > 1 (+Inf: only NaN/Inf counts). 1e3 is far above what a converging or
  /// merely oscillating run shows (SGD oscillating at 1.5 × 2/λ_max on logistic regression
  /// grows it by 2.0 over 2000 steps, tests/test_solver.cpp) and far below what an unstable
  /// step on a quadratic reaches in a few dozen steps.
  double divergence_factor = 1e3;

  template <class L, class O>
  class engine {
    using P = typename L::policy;

   public:
    explicit engine(const unrolled& options) : keep_last_(options.keep_last), divergence_factor_(options.divergence_factor) {
      if (keep_last_ == 0)
        throw std::invalid_argument("bilevel::hypergrad::unrolled: keep_last must be >= 1 (use first_order to keep none)");
      if (!(divergence_factor_ > 1.0))
        throw std::invalid_argument("bilevel::hypergrad::unrolled: divergence_factor must be > 1 (+Inf to watch only "
                                    "for NaN/Inf), got " + std::to_string(divergence_factor_));
    }

    template <class Level>
    void begin_block(Level&, input_list<P> in) {
      tape_.clear();
      inputs_.assign(in);
    }
    template <class Level>
    void on_step(Level& lv, input_list<P>, const typename L::batch_type& b, const vector_t<P>& g) {
      if (keep_last_ == 0) return;
      if (tape_.size() == keep_last_) tape_.pop_front();
      tape_.push_back({lv.theta, lv.state, g, b});
    }
    template <class Level>
    const vector_t<P>& response(Level& lv, input_list<P>) {
      return lv.theta;
    }
    /// The adjoints go to the values the level read while it stepped (the snapshot), which
    /// is what "the steps actually taken" depended on.
    template <class Level>
    hypergradient_report vjp(Level& lv, input_list<P> in, const vector_t<P>& adjoint,
                             std::span<vector_t<P>> out) {
      hypergradient_report r{.strategy = keep_last_ == std::numeric_limits<std::size_t>::max()
                                             ? "unrolled" : "unrolled_truncated"};
      // Before the level's first block nothing was recorded: no step depended on the inputs,
      // and the adjoints are zeros the size of the inputs as they are now.
      const input_list<P> read = inputs_.view().size() == in.size() ? inputs_.view() : in;
      detail::reverse_through_steps(lv, read, tape_, adjoint, out, lv.second_order, r);
      check_divergence(r);
      return r;
    }

    [[nodiscard]] std::size_t steps_recorded() const { return tape_.size(); }

   private:
    void check_divergence(hypergradient_report& r) const {
      if (tape_.empty()) return;
      const double first = P::norm(tape_.front().gradient);
      double largest = first;
      bool finite = std::isfinite(first);
      for (const auto& rec : tape_) {
        const double g = P::norm(rec.gradient);
        finite = finite && std::isfinite(g) && std::isfinite(P::norm(rec.theta));
        largest = std::max(largest, g);  // a NaN g is caught by `finite`
      }
      r.gradient_growth = first > 0.0 ? largest / first : largest == 0.0 ? 1.0 : std::numeric_limits<double>::infinity();
      r.diverged = !finite || r.gradient_growth > divergence_factor_;
    }

    std::size_t keep_last_;
    double divergence_factor_;
    std::deque<detail::step_record<L>> tape_;
    detail::input_snapshot<P> inputs_;
  };
};

/// Look-ahead: differentiate through `steps` virtual optimizer steps taken from the level's
/// current state at hypergradient time (the level does not move); upper levels read the
/// look-ahead iterate. This is the one-step unroll of Meta-Weight-Net and L2RW with exact
/// second-order products.
struct lookahead {
  std::size_t steps = 1;
  /// Virtual step t takes the batch the level's real step t + 1 from now will take (schedule
  /// the upper level first, as the papers' code does: with one step, the next real step's
  /// batch); otherwise the virtual steps draw their own.
  bool on_next_batch = false;

  template <class L, class O>
  class engine {
    using P = typename L::policy;

   public:
    explicit engine(const lookahead& options) : steps_(options.steps), on_next_batch_(options.on_next_batch) {
      if (steps_ == 0)
        throw std::invalid_argument("bilevel::hypergrad::lookahead: steps must be >= 1 (use first_order for none)");
    }
    template <class Level> void begin_block(Level&, input_list<P>) {}
    template <class Level>
    void on_step(Level&, input_list<P>, const typename L::batch_type&, const vector_t<P>&) {}
    template <class Level>
    const vector_t<P>& response(Level& lv, input_list<P> in) {
      hypergradient_report scratch;
      ahead_ = detail::virtual_steps(lv, in, steps_, tape_, scratch, on_next_batch_);
      return ahead_;
    }
    template <class Level>
    hypergradient_report vjp(Level& lv, input_list<P> in, const vector_t<P>& adjoint,
                             std::span<vector_t<P>> out) {
      hypergradient_report r{.strategy = "lookahead"};
      r.gradient_evals = tape_.size();
      detail::reverse_through_steps(lv, in, tape_, adjoint, out, lv.second_order, r);
      return r;
    }

   private:
    std::size_t steps_;
    bool on_next_batch_;
    std::deque<detail::step_record<L>> tape_;
    vector_t<P> ahead_;
  };
};

}  // namespace bilevel::hypergrad
