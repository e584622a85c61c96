// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// Learning to Reweight Examples (L2RW; Ren et al., ICML 2018) as an instantiation of the
/// one solver:
///
///     level 0 (classifier θ):  min_θ (1/B) Σ_i w[id_i] ℓ_i(θ)       on training batches
///     level 1 (weights w):     w = l2rw_rule(∂/∂w L_val(θ'(w)))      on validation batches
///
/// w is a table with one entry per training sample id. Each outer iteration first steps
/// level 1: a look-ahead step of the classifier on the batch its real step will take next
/// (lookahead{.on_next_batch = true}), differentiated exactly, gives g_i = ∂L_val(θ')/∂w_i;
/// the rule sets the batch's weights to max(−g, 0) normalised to sum B and every other entry
/// to 0 (optim/l2rw.hpp). Then level 0 steps on that batch with those weights.
///
/// Evaluating g at w = 0, as the paper does: the rule leaves non-zero entries only on the
/// batch just used, so the next batch's entries are 0 when g is taken, except for samples
/// that ended one epoch and begin the next (expected B²/N of them per epoch: 0.17 for
/// B = 100, N = 59000). The look-ahead step is the classifier's own optimizer step
/// (momentum and weight decay included); the paper's is a plain gradient step of size 1,
/// which the normalisation makes scale-free; with momentum the point where the validation
/// gradient is read moves by one step. Defaults: SGD with Nesterov momentum 0.9 and weight
/// decay 5e-4 as the other methods, batch 100, lr 0.03 (the paper's MNIST run uses 1e-3):
/// the rule concentrates the batch's total weight B on the aligned samples (up to ~20 on
/// one sample measured), and at the other methods' lr 0.1 the MLP on Fashion-MNIST diverged
/// to chance accuracy within the first epoch.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "bilevel/core/solver.hpp"
#include "bilevel/data/dataset.hpp"
#include "bilevel/learners/sample_weighting.hpp"
#include "bilevel/methods/detail/levels.hpp"
#include "bilevel/methods/method_solver.hpp"
#include "bilevel/optim/l2rw.hpp"
#include "bilevel/optim/schedule.hpp"

namespace bilevel::methods {

/// L2RW's settings. Designated initialisers must name the fields in declaration order
/// (C++20): {.batch = 20, .lr = 0.05, .seed = 2} compiles, {.seed = 2, .lr = 0.05} does not.
/// The order: the classifier, its data and the length of training, its SGD, the seed. The
/// weight table has no learning rate (the rule normalises it).
struct l2rw_config {
  std::vector<std::size_t> widths = {784, 256, 128, 10};  ///< the classifier: an MLP, unless `network` is set
  std::optional<learners::network_design> network{};       ///< or a designed network (a ResNet, say)
  std::size_t batch = 100, validation_batch = 100;
  /// The length of training in epochs of the training set, what lr_decay's fractions are
  /// of (total_iterations() of the result); 0: not stated, and only a constant rate allowed.
  std::size_t epochs = 0;
  double lr = 0.03;             ///< the classifier's base learning rate
  optim::lr_decay lr_decay{};   ///< its decay over training (default: constant)
  double momentum = 0.9, weight_decay = 5e-4;
  bool nesterov = true;
  std::uint64_t seed = 1;
};

/// What l2rw returns: its solver (method_solver.hpp), with the levels by role:
///
///     classifier(), model()   level 0, the classifier θ (the model to evaluate)
///     example_weights()       level 1, the weight table w, one entry per training sample id
///     sample_weights(d)       w[id] for every row of d: the table as it stands, non-zero only
///                             on the batch the last step weighted (the rule zeroes the rest)
template <class Solver>
class l2rw_solver : public method_solver<Solver> {
 public:
  using method_solver<Solver>::method_solver;
  auto& classifier() { return Solver::template level<0>(); }
  const auto& classifier() const { return Solver::template level<0>(); }
  auto& example_weights() { return Solver::template level<1>(); }
  const auto& example_weights() const { return Solver::template level<1>(); }
  /// The level whose parameters are the trained model: the classifier.
  auto& model() { return classifier(); }
  const auto& model() const { return classifier(); }
  /// One weight per row of `d`, in row order, on the host (learned_sample_weights of level 0).
  [[nodiscard]] std::vector<double> sample_weights(const data::dataset& d, std::size_t chunk = 1000) const {
    return learned_sample_weights<0>(*this, d, chunk);
  }
};

/// The size of a weight table with one entry per sample id of `d`.
inline std::size_t id_table_size(const data::dataset& d) {
  std::size_t n = 0;
  for (std::size_t id : d.ids) n = std::max(n, id + 1);
  return n;
}

/// The two levels, assembled and scheduled; run with .run(iterations). Level 0 holds the
/// classifier, level 1 the weight table (indexed by sample id).
template <nn_tensor_policy P, class Adapt = detail::learner_as_is>
auto l2rw(std::shared_ptr<const data::dataset> train, std::shared_ptr<const data::dataset> validation,
          const l2rw_config& cfg = {}, const Adapt& adapt = {}) {
  const std::string who = "bilevel::methods::l2rw";
  if (!train) throw std::invalid_argument(who + ": no training set");
  const std::size_t table = id_table_size(*train);
  const std::size_t per_epoch = detail::iterations_per_epoch(train->rows, cfg.batch, who);
  const detail::classifier_shape shape(cfg.widths, {}, {}, cfg.network);
  (void)detail::fixed_network<P>(shape, who, "methods::darts or methods::lfm_architecture_search");
  auto model = detail::classifier_level<P>("classifier", shape, learners::sample_weights(table),
                                           {cfg.lr, cfg.momentum, cfg.weight_decay, cfg.nesterov,
                                            optim::resolve_schedule(cfg.lr_decay, cfg.lr, cfg.epochs * per_epoch,
                                                                    who + ": lr_decay")},
                                           cfg.seed,
                                           learners::dataset_batches<P>(std::move(train), cfg.batch, cfg.seed),
                                           hypergrad::lookahead{.steps = 1, .on_next_batch = true}, adapt)
                   .reading({1});
  auto weights = detail::validation_level<P>("weights", shape, optim::l2rw_rule<P>{.scale = double(cfg.batch)},
                                             P::zeros(table), std::move(validation), cfg.validation_batch,
                                             cfg.seed + 2, adapt)
                     .reading({0});
  solver s(std::move(model), std::move(weights));
  s.schedule({1, 0});
  return l2rw_solver<decltype(s)>(std::move(s), per_epoch, cfg.epochs);
}

}  // namespace bilevel::methods
