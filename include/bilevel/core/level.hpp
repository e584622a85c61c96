// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// A Level (stage): one learner, its optimizer, its data, its hypergradient strategy, and the
/// edges saying which other levels' values its objective reads.
///
/// Levels are numbered from the lowest (index 0, e.g. model weights) to the top. A level's
/// `reads` lists level indices in input-slot order: an index above its own reads that level's
/// variable (e.g. a penalty, per-sample weights, an architecture); an index below reads that
/// level's solution θ* (LFM's re-learner reads the first learner's solution). The strategy
/// says how this level's best response is differentiated with respect to everything it reads.
#include <cstddef>
#include <initializer_list>
#include <deque>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "bilevel/core/hypergradient_strategy.hpp"
#include "bilevel/core/learner.hpp"
#include "bilevel/core/optimizer.hpp"
#include "bilevel/core/second_order.hpp"

namespace bilevel {

/// The sampler of a level whose learner sees all of its data at every step.
struct full_batch_sampler {
  full_batch operator()() const { return {}; }
};

/// A sampler that walks its data set in epochs and says how many passes over it the batches
/// drawn so far have completed (learners::dataset_batches does). The solver's on_epoch
/// callback reports these; samplers without it have no epochs and never fire.
template <class S>
concept epoch_counting_sampler = requires(const S& s) {
  { s.epochs_completed() } -> std::convertible_to<std::size_t>;
};

template <class L, class O, class Strategy, class Sampler>
class level {
 public:
  using learner_type = L;
  using optimizer_type = O;
  using strategy_type = Strategy;
  using sampler_type = Sampler;
  using policy = typename L::policy;
  using vector = vector_t<policy>;
  using batch_type = typename L::batch_type;
  using engine_type = typename Strategy::template engine<L, O>;

  level(std::string name, L learner, O optimizer, Strategy strategy, vector theta0, Sampler sampler)
      : name(std::move(name)),
        learner(std::move(learner)),
        optimizer(std::move(optimizer)),
        sampler(std::move(sampler)),
        engine(strategy),
        theta(std::move(theta0)) {
    if (policy::size(theta) != this->learner.num_parameters())
      throw std::invalid_argument("bilevel::level '" + this->name + "': initial parameters have " +
                                  std::to_string(policy::size(theta)) + " elements but the learner has " +
                                  std::to_string(this->learner.num_parameters()) + " parameters");
    state = this->optimizer.init(theta);
  }

  /// Which levels this objective reads, in input-slot order.
  level& reading(std::initializer_list<std::size_t> levels) {
    reads.assign(levels);
    return *this;
  }
  /// How many optimizer steps this level takes in each outer iteration. Zero is refused here
  /// (a count that came out as 0 is usually a mistake); say evaluate_only() to mean it.
  level& steps_per_iteration(std::size_t n) {
    if (n == 0)
      throw std::invalid_argument("bilevel::level '" + name +
                                  "': steps per iteration must be >= 1 (for a level that takes no steps, "
                                  "call evaluate_only())");
    steps = n;
    return *this;
  }
  /// The level takes no steps: its θ stays as it is, its sampler draws nothing and no
  /// gradient of its own is computed, while other levels still read its θ (and its response,
  /// which the strategy gives from the unchanged θ; first_order or unrolled say it does not
  /// depend on what it reads). solver::hypergradient(j) still evaluates it on demand. For a
  /// level that should be stepped through but not move, use optim::frozen instead.
  level& evaluate_only() {
    steps = 0;
    return *this;
  }
  /// Central-difference scale for products the learner does not have exactly.
  level& finite_difference_scale(double s) {
    if (!(s > 0.0)) throw std::invalid_argument("bilevel::level '" + name + "': finite-difference scale must be > 0");
    second_order.fd_scale = s;
    return *this;
  }

  /// The next batch of this level's data: the first one peek_batch() showed, if any, else a
  /// new one.
  batch_type next_batch() {
    if (!peeked_.empty()) {
      batch_type b = std::move(peeked_.front().batch);
      peeked_.pop_front();
      return b;
    }
    return sampler();
  }
  /// The batch that next_batch() will return after `ahead` other calls, drawn now if needed.
  /// A virtual step that must see the same data as the real step after it (Meta-Weight-Net,
  /// L2RW, DARTS with the upper level scheduled first) reads its batch this way; a look-ahead
  /// of T steps reads the batches of the next T real steps (ahead = 0 .. T − 1).
  const batch_type& peek_batch(std::size_t ahead = 0) {
    while (peeked_.size() <= ahead) {
      std::size_t epochs = 0;
      if constexpr (epoch_counting_sampler<Sampler>) epochs = sampler.epochs_completed();
      peeked_.push_back({sampler(), epochs});  // a deque keeps references to the others valid
    }
    return peeked_[ahead].batch;
  }
  /// Whether a peeked batch is waiting (a checkpoint cannot be taken then).
  [[nodiscard]] bool has_peeked_batch() const { return !peeked_.empty(); }
  /// Passes over the data completed by the batches next_batch() has handed out: a batch
  /// drawn ahead by peek_batch() counts only once it is used, so an epoch ends when its
  /// last batch is trained on, not when it is looked at.
  [[nodiscard]] std::size_t epochs_completed() const
    requires epoch_counting_sampler<Sampler>
  {
    return peeked_.empty() ? std::size_t(sampler.epochs_completed()) : peeked_.front().epochs_before;
  }

  std::string name;
  L learner;
  O optimizer;
  Sampler sampler;
  engine_type engine;
  vector theta;
  optimizer_state<policy> state;
  std::vector<std::size_t> reads;
  std::size_t steps = 1;
  second_order_options second_order{default_fd_scale<scalar_t<policy>>(), false};

 private:
  struct peeked_batch {
    batch_type batch;
    std::size_t epochs_before = 0;  ///< the sampler's epochs before it was drawn
  };
  std::deque<peeked_batch> peeked_;
};

/// The Level concept: what the solver needs of each stage. bilevel::level satisfies it; a
/// user type that does (e.g. one that samples batches differently) can be handed to the
/// solver as well. Requirements: the member types learner_type, optimizer_type, policy,
/// batch_type, engine_type and sampler_type; the members name, learner, optimizer, sampler,
/// engine, theta, state, reads, steps (0 for an evaluate-only level) and second_order; and
/// next_batch(). Checkpoints save
/// the sampler when it is a checkpointable_sampler (core/checkpoint.hpp).
template <class Lv>
concept level_like = requires(Lv& lv) {
  typename Lv::learner_type;
  typename Lv::optimizer_type;
  typename Lv::policy;
  typename Lv::batch_type;
  typename Lv::engine_type;
  typename Lv::sampler_type;
  { lv.name } -> std::convertible_to<std::string>;
  { lv.theta } -> std::convertible_to<vector_t<typename Lv::policy>>;
  { lv.state } -> std::convertible_to<optimizer_state<typename Lv::policy>>;
  { lv.reads } -> std::convertible_to<std::vector<std::size_t>>;
  { lv.steps } -> std::convertible_to<std::size_t>;
  { lv.second_order } -> std::convertible_to<second_order_options>;
  { lv.next_batch() } -> std::convertible_to<typename Lv::batch_type>;
  lv.learner;
  lv.optimizer;
  lv.sampler;
  lv.engine;
};

/// Builds a level, checking each piece against its concept with messages that say what is
/// missing. `theta0` is the initial parameter vector (its size must match the learner).
template <class L, class O, class Strategy, class Sampler = full_batch_sampler>
auto make_level(std::string name, L learner, O optimizer, Strategy strategy,
                vector_t<typename L::policy> theta0, Sampler sampler = {}) {
  static_assert(check_learner<L>());
  static_assert(check_optimizer<O>());
  using level_t = level<L, O, Strategy, Sampler>;
  static_assert(std::is_same_v<typename O::policy, typename L::policy>,
                "bilevel::make_level: the optimizer and the learner use different tensor policies");
  static_assert(requires(Sampler& s) {
    { s() } -> std::convertible_to<typename L::batch_type>;
  }, "bilevel::make_level: the sampler must be callable with no arguments and return the learner's batch_type");
  static_assert(hypergradient_strategy<Strategy, level_t>,
                "bilevel::make_level: the strategy does not fit this learner and optimizer: it needs a nested "
                "`engine<Learner, Optimizer>` with begin_block, on_step, response and vjp "
                "(see bilevel/core/hypergradient_strategy.hpp)");
  return level_t(std::move(name), std::move(learner), std::move(optimizer), std::move(strategy),
                 std::move(theta0), std::move(sampler));
}

}  // namespace bilevel
