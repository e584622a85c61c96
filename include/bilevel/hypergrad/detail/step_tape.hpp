// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// What reverse-mode strategies keep of each optimizer step, and the reverse pass through
/// them. Shared by unrolled (steps actually taken), lookahead (virtual steps) and
/// finite_difference (one virtual step, DARTS).
#include <cstddef>
#include <deque>
#include <span>
#include <type_traits>
#include <vector>

#include "bilevel/core/hypergradient_report.hpp"
#include "bilevel/core/device_loss.hpp"
#include "bilevel/core/optimizer.hpp"
#include "bilevel/core/second_order.hpp"

namespace bilevel::hypergrad::detail {

/// One optimizer step: the point it was taken from and the gradient it applied.
template <class L>
struct step_record {
  vector_t<typename L::policy> theta;
  optimizer_state<typename L::policy> state;
  vector_t<typename L::policy> gradient;
  typename L::batch_type batch;
};

/// Owned copies of a level's inputs, so that a tape can be replayed after the levels it
/// read have moved on. The pointer list is rebuilt on each view(), so copies of a snapshot
/// (a copied solver) never point into another object.
template <tensor_policy P>
class input_snapshot {
 public:
  void assign(input_list<P> in) {
    values_.clear();
    for (const auto* v : in) values_.push_back(*v);
  }
  [[nodiscard]] input_list<P> view() const {
    pointers_.clear();
    for (const auto& v : values_) pointers_.push_back(&v);
    return input_list<P>(pointers_);
  }

 private:
  std::vector<vector_t<P>> values_;
  mutable std::vector<const vector_t<P>*> pointers_;
};

/// Zeroes out[s] to the size of each input.
template <tensor_policy P>
void zero_outputs(input_list<P> in, std::span<vector_t<P>> out) {
  for (std::size_t s = 0; s < out.size(); ++s) out[s] = P::zeros(P::size(*in[s]));
}

/// Reverse mode through recorded steps θ_{t+1} = step(θ_t, s_t, ∇L(θ_t, in; b_t)).
/// With θ̄ the adjoint of the last iterate: for t = T−1 … 0, the optimizer's VJP gives the
/// adjoint ḡ of the gradient; the inputs collect (∂²L/∂in ∂θ) ḡ and θ̄ gains H ḡ. The
/// adjoint of the first iterate is dropped (warm start: θ_0 is treated as a constant), so
/// the first step needs no HVP.
template <class Level, class Tape>
void reverse_through_steps(Level& lv, input_list<typename Level::policy> in, const Tape& tape,
                           const vector_t<typename Level::policy>& adjoint,
                           std::span<vector_t<typename Level::policy>> out,
                           const second_order_options& so, hypergradient_report& r) {
  using P = typename Level::policy;
  static_assert(differentiable_optimizer<typename Level::optimizer_type>,
                "bilevel: reverse-mode strategies go back through the optimizer's update: it needs "
                "vjp() (see bilevel/core/optimizer.hpp)");
  static_assert(check_input_differentiable_learner<typename Level::learner_type>());
  if (tape.empty()) {
    zero_outputs<P>(in, out);
    return;
  }
  vector_t<P> adj_theta = adjoint, adj_g, product;
  auto adj_state = tape.back().state.zeros_like();
  for (std::size_t t = tape.size(); t-- > 0;) {
    const auto& rec = tape[t];
    lv.optimizer.vjp(rec.theta, rec.state, rec.gradient, adj_theta, adj_state, adj_g);
    const bool first = t + 1 == tape.size();  // the last step's products start the sums (no zero fill)
    for (std::size_t s = 0; s < out.size(); ++s) {
      r.exact_second_order &= mixed_vjp(lv.learner, rec.theta, in, rec.batch, s, adj_g, first ? out[s] : product, so);
      ++r.mixed_evals;
      if (!first) P::axpy(scalar_t<P>(1), product, out[s]);
    }
    if (t > 0) {
      r.exact_second_order &= hvp(lv.learner, rec.theta, in, rec.batch, adj_g, product, so);
      ++r.hvp_evals;
      P::axpy(scalar_t<P>(1), product, adj_theta);
    }
  }
  r.steps_kept = tape.size();
}

/// Takes `n` steps from the level's current state on a private copy, recording each:
/// the virtual ("look-ahead") steps of DARTS, Meta-Weight-Net and L2RW. The level itself
/// does not move. Returns the final iterate.
///
/// With `on_next_batches`, virtual step t sees the batch the level's real step t + 1 from now
/// will take (level::peek_batch(t)): the first one the next real step's batch, as the official
/// Meta-Weight-Net, L2RW and DARTS code do when the upper level is scheduled before the lower
/// one, and the later ones the batches the real steps after it will take.
///
/// The records of the previous call are overwritten rather than rebuilt (when the batch type
/// can be assigned): assigning a same-sized vector or matrix keeps its buffer, so a look-ahead
/// step every outer iteration does not allocate its tape's θ, state, gradient and batch afresh.
template <class Level>
vector_t<typename Level::policy> virtual_steps(Level& lv, input_list<typename Level::policy> in,
                                               std::size_t n,
                                               std::deque<step_record<typename Level::learner_type>>& tape,
                                               hypergradient_report& r, bool on_next_batches = false) {
  using batch_type = typename Level::learner_type::batch_type;
  constexpr bool reuse = std::is_copy_assignable_v<batch_type> && std::is_move_assignable_v<batch_type>;
  if constexpr (!reuse) tape.clear();
  while (tape.size() > n) tape.pop_back();
  auto theta = lv.theta;
  auto state = lv.state;
  // The record of step t: the old one overwritten, or a new one.
  auto record_for = [&](std::size_t t) -> step_record<typename Level::learner_type>& {
    [[maybe_unused]] const bool peek = on_next_batches;
    if constexpr (reuse) {
      if (t < tape.size()) {
        auto& old = tape[t];
        old.theta = theta;
        old.state = state;
        if constexpr (requires { lv.peek_batch(); }) {
          if (peek) {
            old.batch = lv.peek_batch(t);
            return old;
          }
        }
        old.batch = lv.next_batch();
        return old;
      }
    }
    auto batch = [&] {
      if constexpr (requires { lv.peek_batch(); }) {
        if (peek) return lv.peek_batch(t);
      }
      return lv.next_batch();
    }();
    return tape.emplace_back(step_record<typename Level::learner_type>{theta, state, {}, std::move(batch)});
  };
  try {
    for (std::size_t t = 0; t < n; ++t) {
      auto& rec = record_for(t);
      gradient_into(lv.learner, theta, in, rec.batch, rec.gradient);
      ++r.gradient_evals;
      lv.optimizer.step(theta, state, rec.gradient);
    }
  } catch (...) {
    tape.clear();  // a record may hold a new θ and batch with an old gradient: keep none
    throw;
  }
  return theta;
}

}  // namespace bilevel::hypergrad::detail
