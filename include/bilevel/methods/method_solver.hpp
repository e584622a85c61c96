// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// What every method of methods/ returns: its solver, with the levels reachable by name.
///
/// method_solver<Solver> derives from the solver a method assembles, so it is that solver in
/// every respect (run, iterate, hypergradient, schedule, checkpoints, callbacks, level<N>());
/// it adds what every method has: the training length its configuration stated
/// (iterations_per_epoch(), total_iterations()) and the inputs of a level as an input_list
/// (inputs_of<I>()). Each method header derives a thin class from it that names the method's
/// levels after their roles in the paper (classifier(), weighting_net(), relearner(),
/// architecture(), ...); each name returns the very level object level<N>() returns.
///
/// Two free functions work on any solver, a method's or one assembled by hand:
/// inputs_of<I>(s), level I's inputs without a pointer array, and
/// learned_sample_weights<I>(s, dataset), the weight level I's network gives every row of a
/// data set.
#include <algorithm>
#include <cstddef>
#include <numeric>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "bilevel/core/learner.hpp"
#include "bilevel/data/dataset.hpp"
#include "bilevel/learners/classification_batch.hpp"
#include "bilevel/learners/sample_weighting.hpp"

namespace bilevel::methods {

/// The input_list of one level, owning the pointer array it spans. The pointers refer to the
/// solver's levels: keep this object (and the solver) alive while the list is in use; it
/// follows the levels' current values, and is stale only if the solver is moved.
template <tensor_policy P>
class level_inputs {
 public:
  explicit level_inputs(std::vector<const vector_t<P>*> inputs) : inputs_(std::move(inputs)) {}
  [[nodiscard]] input_list<P> list() const { return inputs_; }
  operator input_list<P>() const { return inputs_; }  // NOLINT(google-explicit-constructor): passes where a list goes
  [[nodiscard]] std::size_t size() const { return inputs_.size(); }
  [[nodiscard]] const vector_t<P>& operator[](std::size_t slot) const { return *inputs_.at(slot); }

 private:
  std::vector<const vector_t<P>*> inputs_;
};

namespace detail {
/// s.level<I>(), qualified: unqualified, `level` would also find the class template
/// bilevel::level from inside this namespace.
template <std::size_t I, class Solver>
decltype(auto) level_of(Solver& s) {
  using S = std::remove_const_t<Solver>;
  return s.S::template level<I>();
}

/// The variable of level k of `s`, k known only at run time.
template <class Solver>
const vector_t<typename Solver::policy>& theta_at(const Solver& s, std::size_t k) {
  const vector_t<typename Solver::policy>* theta = nullptr;
  [&]<std::size_t... J>(std::index_sequence<J...>) {
    ((k == J ? (void)(theta = &level_of<J>(s).theta) : void()), ...);
  }(std::make_index_sequence<Solver::size()>{});
  if (!theta)
    throw std::out_of_range("bilevel::methods: level " + std::to_string(k) + " of a solver with " +
                            std::to_string(Solver::size()) + " levels");
  return *theta;
}

/// The sample weighting of a network learner, or of the network a reading_segment wraps.
template <class L>
const auto& weighting_of(const L& learner) {
  if constexpr (requires { learner.weighting(); }) {
    return learner.weighting();
  } else if constexpr (requires { learner.inner().weighting(); }) {
    return learner.inner().weighting();
  } else {
    static_assert(requires { learner.weighting(); },
                  "bilevel::methods::learned_sample_weights: this level's learner has no weighting(); choose the "
                  "level of a network that weights its samples (a sequential<P, Weighting>)");
  }
}
}  // namespace detail

/// Level I's inputs: the current variables of the levels its `reads` lists, in slot order,
/// as an input_list (through level_inputs, which owns the pointers). What the solver passes
/// to level I's learner, to call the learner's own functions (loss, forward, its weighting's
/// gather) at the solver's current point.
template <std::size_t I, class Solver>
level_inputs<typename Solver::policy> inputs_of(const Solver& s) {
  std::vector<const vector_t<typename Solver::policy>*> inputs;
  for (std::size_t k : detail::level_of<I>(s).reads) inputs.push_back(&detail::theta_at(s, k));
  return level_inputs<typename Solver::policy>(std::move(inputs));
}

/// The weight level I's network gives each row of `d` at the solver's current point (its
/// Weighting's gather, on the per-sample losses, logits and features of its forward pass),
/// in row order, on the host. Rows are processed `chunk` at a time. Level I's learner must be
/// a network with a sample weighting (sequential<P, Weighting>, or one in a reading_segment).
/// What a weighting reads beyond the signals is the weighting's business: a table keyed by
/// sample id (L2RW, LFM's B) reads `d.ids`, class weights read the labels.
template <std::size_t I, class Solver>
std::vector<double> learned_sample_weights(const Solver& s, const data::dataset& d, std::size_t chunk = 1000) {
  using P = typename Solver::policy;
  if (chunk == 0) throw std::invalid_argument("bilevel::methods::learned_sample_weights: chunk must be >= 1");
  d.validate("the data set of learned_sample_weights");
  const auto& lv = detail::level_of<I>(s);
  const auto inputs = inputs_of<I>(s);
  const input_list<P> in = inputs.list();
  const auto& weighting = detail::weighting_of(lv.learner);
  std::vector<double> weights;
  weights.reserve(d.rows);
  std::vector<std::size_t> rows;
  for (std::size_t start = 0; start < d.rows; start += chunk) {
    rows.resize(std::min(chunk, d.rows - start));
    std::iota(rows.begin(), rows.end(), start);
    const auto b = learners::make_batch<P>(d, rows);
    const auto out = lv.learner.forward(lv.theta, b, in);
    const learners::sample_signals<P> signals{out.losses, &out.logits, &out.features};
    const auto c = P::to_host(weighting.gather(in, b, signals));
    if (c.size() != rows.size())
      throw std::logic_error("bilevel::methods::learned_sample_weights: the weighting gave " + std::to_string(c.size()) +
                             " weights for " + std::to_string(rows.size()) + " rows");
    for (const auto w : c) weights.push_back(double(w));
  }
  return weights;
}

/// A method's solver: Solver itself, plus the training length its configuration stated and
/// inputs_of<I>(). The method headers derive their named results from it.
template <class Solver>
class method_solver : public Solver {
 public:
  using solver_type = Solver;
  using policy = typename Solver::policy;

  /// `iterations_per_epoch`: outer iterations in one epoch of the training set (every
  /// trained level steps once per outer iteration); `epochs`: the configuration's.
  method_solver(Solver s, std::size_t iterations_per_epoch, std::size_t epochs)
      : Solver(std::move(s)), iterations_per_epoch_(iterations_per_epoch), epochs_(epochs) {}

  /// Outer iterations in one epoch of the training set (full batches, as the samplers draw them).
  [[nodiscard]] std::size_t iterations_per_epoch() const { return iterations_per_epoch_; }
  /// The configuration's `epochs`: the training length its learning-rate decays span (0: not stated).
  [[nodiscard]] std::size_t epochs() const { return epochs_; }
  /// epochs() · iterations_per_epoch(): the iterations to run() for the training the
  /// configuration describes (0 when `epochs` was not stated).
  [[nodiscard]] std::size_t total_iterations() const { return epochs_ * iterations_per_epoch_; }

  /// Level I's inputs at the current point (see the free inputs_of).
  template <std::size_t I>
  [[nodiscard]] level_inputs<policy> inputs_of() const {
    return methods::inputs_of<I>(static_cast<const Solver&>(*this));
  }

 private:
  std::size_t iterations_per_epoch_ = 0, epochs_ = 0;
};

namespace detail {
/// Outer iterations per epoch of `rows` training rows in full batches of `batch`; throws,
/// naming the values, when no full batch fits (as the samplers would).
inline std::size_t iterations_per_epoch(std::size_t rows, std::size_t batch, const std::string& who) {
  if (batch == 0) throw std::invalid_argument(who + ": batch size must be >= 1");
  if (batch > rows)
    throw std::invalid_argument(who + ": batch size " + std::to_string(batch) + " exceeds the " + std::to_string(rows) +
                                " rows of the training set");
  return rows / batch;
}
}  // namespace detail

}  // namespace bilevel::methods
