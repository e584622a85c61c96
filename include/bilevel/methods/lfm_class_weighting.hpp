// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// Learning from Mistakes based on class weighting (LFM-CW; Gala & Xie, arXiv 2112.00275),
/// data form, as three levels of the one solver (a reconstruction from the abstract and the
/// LFM structure: docs/methods.md, "LFM-CW"):
///
///     level 0 (W1, learner):     min_W1 L(W1, D_tr)                                 training batches
///     level 1 (W2, re-learner):  min_W2 (1/N) [Σ_real ℓ_i + γ Σ_synthetic c_{y_s}(W1*, ω) ℓ_s]
///                                                       real batches + generator samples
///     level 2 (ω):               min_ω L_val(W2*(W1*, ω))                            validation batches
///
/// c the class weights of learners/class_mistake_weighting.hpp, driven by W1's per-class
/// validation errors. The synthetic data come from a class-conditional generator (the paper
/// uses a pretrained GAN; data/generator.hpp's PCA-Gaussian stands in for it on a CPU).
/// Schedule: ω, then W1, then W2; W2 takes an exact look-ahead step on the batch its real
/// step then takes; W1 reads nothing from above, so first_order suffices for it (its
/// solution enters c, not the other way round).
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "bilevel/core/level.hpp"
#include "bilevel/core/solver.hpp"
#include "bilevel/data/generator.hpp"
#include "bilevel/hypergrad/first_order.hpp"
#include "bilevel/hypergrad/unrolled.hpp"
#include "bilevel/learners/class_mistake_weighting.hpp"
#include "bilevel/learners/classification_batch.hpp"
#include "bilevel/learners/solution_loss.hpp"
#include "bilevel/learners/synthetic_batches.hpp"
#include "bilevel/methods/detail/levels.hpp"
#include "bilevel/methods/learning_from_mistakes.hpp"
#include "bilevel/methods/method_solver.hpp"
#include "bilevel/optim/adam.hpp"
#include "bilevel/optim/schedule.hpp"
#include "bilevel/optim/sgd.hpp"

namespace bilevel::methods {

/// LFM-CW's settings. Designated initialisers must name the fields in declaration order
/// (C++20): {.batch = 20, .lr = 0.05, .seed = 2} compiles, {.seed = 2, .lr = 0.05} does not.
/// The order: W1 and W2 (their MLP's widths, or a network), their data and the length of
/// training, their SGD, ω's Adam, the weighting, the seed. Each learning rate is stated once
/// (`lr`, `meta_lr`); its decay is relative to it and to `epochs` (optim/schedule.hpp).
struct lfm_class_weighting_config {
  std::vector<std::size_t> widths = {784, 256, 128, 10};  ///< W1 and W2 (MLPs), unless `network` is set
  /// W1 and W2: this network instead of the MLP of widths (a CNN's layer specs, a ResNet, a
  /// discrete DARTS network; not one with mixed operations). It takes the generator's samples
  /// as it takes the data's, so its input has the generator's number of features.
  std::optional<learners::network_design> network{};
  std::size_t batch = 100, synthetic_per_batch = 50, validation_batch = 100;
  /// The length of training in epochs of the (real) training set, what the decays' fractions
  /// are of (total_iterations() of the result); 0: not stated, and only constant rates allowed.
  std::size_t epochs = 0;
  double lr = 0.1;                                  ///< W1's and W2's base learning rate
  optim::lr_decay lr_decay{};                       ///< its decay over training (default: constant)
  double momentum = 0.9, weight_decay = 5e-4;       ///< W1 and W2
  bool nesterov = true;
  double meta_lr = 1e-2;                            ///< ω: base learning rate (Adam)
  optim::lr_decay meta_lr_decay{};                  ///< its decay over training (default: constant)
  double meta_weight_decay = 0.0;
  double synthetic_weight = 1.0;                   ///< γ
  std::size_t references_per_class = 10;
  std::uint64_t seed = 1;
};

/// What lfm_class_weighting returns: lfm_solver (learner() W1, relearner() and model() W2,
/// top() ω; learning_from_mistakes.hpp), and
///
///     class_weights()   c_k(W1, ω) for every class k, on the host: the weight W2 gives the
///                       synthetic samples of class k (times γ); real samples weigh 1
template <class Solver>
class lfm_class_weighting_solver : public lfm_solver<Solver> {
 public:
  using lfm_solver<Solver>::lfm_solver;
  [[nodiscard]] std::vector<double> class_weights() const {
    return detail::weighting_of(this->relearner().learner).class_weights(this->learner().theta, this->top().theta);
  }
};

/// The three levels, assembled and scheduled (ω, W1, W2). Level 1 (W2) is the model to
/// evaluate; level 2 holds ω, starting at 1.
/// `adapt` wraps each level's learner: distributed::across(comm) runs all three data-parallel.
template <nn_tensor_policy P, data::class_conditional_generator G, class Adapt = detail::learner_as_is>
auto lfm_class_weighting(std::shared_ptr<const data::dataset> train, std::shared_ptr<const data::dataset> validation,
                         std::shared_ptr<const G> generator, const lfm_class_weighting_config& cfg = {},
                         const Adapt& adapt = {}) {
  using namespace bilevel::learners;
  const std::string who = "bilevel::methods::lfm_class_weighting";
  if (!train || !validation) throw std::invalid_argument(who + ": missing data");
  const std::size_t per_epoch = detail::iterations_per_epoch(train->rows, cfg.batch, who),
                    total = cfg.epochs * per_epoch;
  const detail::sgd_settings sgd{cfg.lr, cfg.momentum, cfg.weight_decay, cfg.nesterov,
                                 optim::resolve_schedule(cfg.lr_decay, cfg.lr, total, who + ": lr_decay")};
  const std::size_t C = train->num_classes;
  const detail::classifier_shape shape(cfg.widths, cfg.network);  // W1's, W2's and the validation loss's
  auto learner = detail::fixed_network<P>(shape, who, "methods::darts or methods::lfm_architecture_search");
  // W2 trains on the generator's samples too: checked here, before its sampler draws any.
  if (generator && generator->features() != learner.input_shape().features())
    throw std::invalid_argument(who + ": the generator makes samples of " + std::to_string(generator->features()) +
                                " features, the network takes " + std::to_string(learner.input_shape().features()) +
                                " (" + shape_text(learner.input_shape()) + ")");
  auto w1_0 = learner.initial_parameters(cfg.seed);
  auto w1 = make_level("W1", adapt(std::move(learner)), sgd.optimizer<P>(), hypergrad::first_order{}, std::move(w1_0),
                       dataset_batches<P>(train, cfg.batch, cfg.seed));
  auto w2 = detail::classifier_level<P>(
                "W2", shape,
                detail::on_first_learner<class_mistake_weighting<P>>(
                    shape, reference_samples(*validation, cfg.references_per_class), cfg.synthetic_weight),
                sgd, cfg.seed + 1,
                with_synthetic_batches<P, G>(train, std::move(generator), cfg.batch, cfg.synthetic_per_batch,
                                             cfg.seed + 5),
                hypergrad::lookahead{.steps = 1, .on_next_batch = true}, adapt)
                .reading({0, 2});
  vector_t<P> omega0 = P::zeros(C);
  P::fill(omega0, scalar_t<P>(1));
  auto upper = detail::validation_level<P>("omega", shape,
                                           optim::adam<P>{.lr = cfg.meta_lr,
                                                          .weight_decay = cfg.meta_weight_decay,
                                                          .schedule = optim::resolve_schedule(
                                                              cfg.meta_lr_decay, cfg.meta_lr, total,
                                                              who + ": meta_lr_decay")},
                                           std::move(omega0), std::move(validation), cfg.validation_batch, cfg.seed + 2,
                                           adapt)
                   .reading({1});
  solver s(std::move(w1), std::move(w2), std::move(upper));
  s.schedule({2, 0, 1});
  return lfm_class_weighting_solver<decltype(s)>(std::move(s), per_epoch, cfg.epochs);
}

}  // namespace bilevel::methods
