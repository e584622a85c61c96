// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// Learning from Mistakes (LFM; Zhang, Garg, Sridhara, Hosseini, Xie, TAI 2025), the
/// data-reweighting form, as three levels of the one solver:
///
///     level 0 (W1, learner):      min_W1 (1/B) Σ_i B[id_i] ℓ_i(W1)                 training batches
///     level 1 (W2, re-learner):   min_W2 (1/B) Σ_i a_i(W1*, V, r) ℓ_i(W2)          the same batches
///     level 2 (B, V, r):          min L_val(W2*(W1*(B), V, r))                       validation batches
///
/// a_i the mistake-driven weights (learners/mistake_weighting.hpp): a training sample counts
/// more when it resembles, and shares its label with, reference validation samples on which
/// W1 does badly. Each outer iteration steps the top level first, then W1, then W2 (the
/// official order); W1 and W2 take one exact look-ahead step each (lookahead, on the batch
/// their real step then takes), so the top level's hypergradient is the chain rule through
/// both, with exact second-order products, where the official code differentiates V and r
/// through one plain SGD step of W2 and takes B's product by finite differences.
///
/// Fixed against the official code (docs/methods.md, "LFM, data reweighting"; the mathematics,
/// not the quirks):
/// B is keyed by sample id, not (batch position, iteration); W2's look-ahead is virtual,
/// W1 is not copied into W2; the hypergradient of B flows from the validation loss; the model
/// reported is W2, the re-learner the top level optimises. Simplifications, stated: B, V and r
/// share one optimizer (Adam), where the code uses SGD for B; the encoder V is linear
/// (a CPU stand-in for the paper's pretrained ResNet).
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "bilevel/core/solver.hpp"
#include "bilevel/data/dataset.hpp"
#include "bilevel/learners/mistake_weighting.hpp"
#include "bilevel/learners/sample_weighting.hpp"
#include "bilevel/methods/detail/levels.hpp"
#include "bilevel/methods/l2rw.hpp"
#include "bilevel/methods/method_solver.hpp"
#include "bilevel/optim/adam.hpp"
#include "bilevel/optim/schedule.hpp"

namespace bilevel::methods {

/// LFM's settings (data reweighting). Designated initialisers must name the fields in
/// declaration order (C++20): {.batch = 20, .lr = 0.05, .seed = 2} compiles,
/// {.seed = 2, .lr = 0.05} does not. The order: W1 and W2 (their MLP's widths, or a network),
/// their data and the length of training, their SGD, the top level's Adam, the weighting, the
/// seed. Each learning rate is stated once (`lr`, `meta_lr`); its decay is relative to it and
/// to `epochs` (optim/schedule.hpp).
struct lfm_reweighting_config {
  std::vector<std::size_t> widths = {784, 256, 128, 10};  ///< W1 and W2 (MLPs), unless `network` is set
  /// W1 and W2: this network instead of the MLP of widths (a CNN's layer specs, a ResNet, a
  /// discrete DARTS network). Not one with mixed operations: lfm_architecture_search learns those.
  std::optional<learners::network_design> network{};
  std::size_t batch = 100, validation_batch = 100;
  /// The length of training in epochs of the training set, what the decays' fractions are
  /// of (total_iterations() of the result); 0: not stated, and only constant rates allowed.
  std::size_t epochs = 0;
  double lr = 0.1;                                   ///< W1's and W2's base learning rate
  optim::lr_decay lr_decay{};                        ///< its decay over training (default: constant)
  double momentum = 0.9, weight_decay = 5e-4;        ///< W1 and W2
  bool nesterov = true;
  double meta_lr = 1e-3;                             ///< B, V, r: base learning rate (Adam)
  optim::lr_decay meta_lr_decay{};                   ///< its decay over training (default: constant)
  double meta_weight_decay = 0.0;
  std::size_t encoder_dim = 32;                    ///< k, V's output dimension
  std::size_t references_per_class = 10;           ///< reference validation samples for r and u
  /// The scale of the encoder's starting similarities f_V(x)·f_V(x̃), i.e. how sharply a
  /// sample's weight reads its nearest references (mistake_weighting::initial_top).
  double similarity_scale = 1.0;
  std::uint64_t seed = 1;
};

/// What the three LFM methods return (this one, lfm_class_weighting, lfm_architecture_search):
/// their solver (method_solver.hpp), with the levels by role:
///
///     learner()             level 0, W1, the learner that makes the mistakes
///     relearner(), model()  level 1, W2, the re-learner the top level validates (the model to evaluate)
///     top()                 level 2, the top level's vector ([B | V | r], ω, or [A | V | r])
template <class Solver>
class lfm_solver : public method_solver<Solver> {
 public:
  using method_solver<Solver>::method_solver;
  auto& learner() { return Solver::template level<0>(); }
  const auto& learner() const { return Solver::template level<0>(); }
  auto& relearner() { return Solver::template level<1>(); }
  const auto& relearner() const { return Solver::template level<1>(); }
  auto& top() { return Solver::template level<2>(); }
  const auto& top() const { return Solver::template level<2>(); }
  /// The level whose parameters are the trained model: the re-learner W2.
  auto& model() { return relearner(); }
  const auto& model() const { return relearner(); }
};

/// What learning_from_mistakes_reweighting returns: lfm_solver, and
///
///     sample_weights(d)   the mistake-driven weight a_i(W1, V, r) W2 gives every row of d
template <class Solver>
class lfm_reweighting_solver : public lfm_solver<Solver> {
 public:
  using lfm_solver<Solver>::lfm_solver;
  /// One weight per row of `d`, in row order, on the host (learned_sample_weights of level 1).
  [[nodiscard]] std::vector<double> sample_weights(const data::dataset& d, std::size_t chunk = 1000) const {
    return learned_sample_weights<1>(*this, d, chunk);
  }
};

/// The first `per_class` validation rows of every class (in order), the reference samples.
inline data::dataset reference_samples(const data::dataset& validation, std::size_t per_class) {
  std::vector<std::size_t> taken(validation.num_classes, 0), rows;
  for (std::size_t r = 0; r < validation.rows; ++r)
    if (taken[std::size_t(validation.labels[r])]++ < per_class) rows.push_back(r);
  if (rows.empty()) throw std::invalid_argument("bilevel::methods: no reference samples in the validation set");
  return validation.subset(rows);
}

namespace detail {
/// A weighting of the re-learner that reads the first learner W1 (LFM's mistake weights,
/// LFM-CW's class weights), built for W1's network: the design's when `shape` has one, else
/// the MLP of its widths. `args` are the weighting's own, after W1's network.
template <class Weighting, class... Args>
Weighting on_first_learner(const classifier_shape& shape, const Args&... args) {
  return shape.design ? Weighting(*shape.design, args...) : Weighting(shape.widths, args...);
}
}  // namespace detail

/// The three levels, assembled and scheduled (top, W1, W2). Level 0 is W1, level 1 W2 (the
/// model to evaluate), level 2 the vector [B | V | r] (layout: learners/mistake_weighting.hpp).
template <nn_tensor_policy P, class Adapt = detail::learner_as_is>
auto learning_from_mistakes_reweighting(std::shared_ptr<const data::dataset> train,
                                        std::shared_ptr<const data::dataset> validation,
                                        const lfm_reweighting_config& cfg = {}, const Adapt& adapt = {}) {
  using namespace bilevel::learners;
  const std::string who = "bilevel::methods::learning_from_mistakes_reweighting";
  if (!train || !validation) throw std::invalid_argument(who + ": missing data");
  const std::size_t per_epoch = detail::iterations_per_epoch(train->rows, cfg.batch, who),
                    total = cfg.epochs * per_epoch;
  const detail::classifier_shape shape(cfg.widths, cfg.network);  // W1's, W2's and the validation loss's
  detail::fixed_network<P>(shape, who, "methods::lfm_architecture_search");  // refuses mixed operations
  const std::size_t table = id_table_size(*train);
  auto mistakes = detail::on_first_learner<mistake_weighting<P>>(
      shape, reference_samples(*validation, cfg.references_per_class), table, cfg.encoder_dim);
  // B sits at the front of the top vector; W1's table weighting reads its first `table`
  // entries by sample id (ids are < table), so it takes the whole vector as its input.
  const sample_weights b_table(mistakes.top_size());
  auto top0 = mistakes.initial_top(cfg.seed + 3, cfg.similarity_scale);
  const detail::sgd_settings sgd{cfg.lr, cfg.momentum, cfg.weight_decay, cfg.nesterov,
                                 optim::resolve_schedule(cfg.lr_decay, cfg.lr, total, who + ": lr_decay")};
  const hypergrad::lookahead one_step{.steps = 1, .on_next_batch = true};
  auto w1 = detail::classifier_level<P>("W1", shape, b_table, sgd, cfg.seed,
                                        dataset_batches<P>(train, cfg.batch, cfg.seed), one_step, adapt)
                .reading({2});
  auto w2 = detail::classifier_level<P>("W2", shape, std::move(mistakes), sgd, cfg.seed + 1,
                                        dataset_batches<P>(train, cfg.batch, cfg.seed), one_step, adapt)
                .reading({0, 2});
  auto upper = detail::validation_level<P>("B_V_r", shape,
                                           optim::adam<P>{.lr = cfg.meta_lr,
                                                          .weight_decay = cfg.meta_weight_decay,
                                                          .schedule = optim::resolve_schedule(
                                                              cfg.meta_lr_decay, cfg.meta_lr, total,
                                                              who + ": meta_lr_decay")},
                                           std::move(top0), std::move(validation), cfg.validation_batch, cfg.seed + 2,
                                           adapt)
                   .reading({1});
  solver s(std::move(w1), std::move(w2), std::move(upper));
  s.schedule({2, 0, 1});
  return lfm_reweighting_solver<decltype(s)>(std::move(s), per_epoch, cfg.epochs);
}

}  // namespace bilevel::methods
