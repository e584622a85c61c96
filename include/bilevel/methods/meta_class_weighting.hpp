// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// Class weights learned as a hyperparameter, with Meta-Weight-Net's schedule: the weighting
/// net of meta_weight_net.hpp replaced by one logit per class.
///
///     level 0 (classifier θ):     min_θ (1/B) Σ_i c_{y_i}(φ) ℓ_i(θ)         on training batches
///     level 1 (class logits φ):   min_φ L_val(θ*(φ))                          on clean, balanced validation batches
///
/// with c(φ) = C · softmax(φ) (learners/softmax_class_weights.hpp: positive, mean 1 over the
/// classes, so the weights move the balance between classes and not the learning rate). Each
/// outer iteration steps φ first along the exact hypergradient of one virtual step of the
/// classifier (hypergrad::lookahead) on the batch the classifier's real step then takes, as
/// Meta-Weight-Net does. φ starts at 0, plain training.
///
/// The class-level counterpart of L2RW and Meta-Weight-Net: where those weigh each sample by
/// what it is (its loss, its gradient's agreement with the validation batch), this weighs it
/// by its label only, C numbers in all, which is what a long-tailed training set with a
/// balanced validation set calls for and what the fixed weightings n_k^(−1) and n_k^(−1/2)
/// (data::class_frequency_weights) guess without looking at the validation data. A weight
/// that reads only the loss cannot tell a rare class from a hard sample.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "bilevel/data/dataset.hpp"
#include "bilevel/learners/softmax_class_weights.hpp"
#include "bilevel/methods/meta_weight_net.hpp"

namespace bilevel::methods {

/// Settings, in Meta-Weight-Net's order (meta_weight_net_config), less its weighting net's
/// width. Designated initialisers name the fields in declaration order. The logits' Adam runs
/// at 5e-2 by default, fifty times Meta-Weight-Net's: there are only C logits, and each may
/// need to move by several units within a run of about a thousand steps (n_k^(−1) on a long
/// tail of IF = 100 puts the extreme classes' log-weights 4.6 apart), while Adam moves a
/// logit by at most about its learning rate per step, and by much less where the one-batch
/// hypergradient's sign is noisy. On Fashion-MNIST's long tail (docs/results.md) 1e-2 left
/// the head and tail classes' mean weights 1.2 apart in log and trailed inverse frequency.
struct meta_class_weighting_config {
  std::vector<std::size_t> widths = {784, 256, 128, 10};  ///< the classifier: an MLP, unless `layers` is set
  std::vector<learners::layer::spec> layers{};            ///< or a sequential network of these layers
  learners::geometry input{};                              ///< on samples of this shape
  std::optional<learners::network_design> network{};      ///< or a designed network (a ResNet)
  std::size_t batch = 100, validation_batch = 100;
  std::size_t epochs = 0;       ///< the length of training in epochs (what the decays are relative to)
  double lr = 0.1;              ///< the classifier's base learning rate
  optim::lr_decay lr_decay{};   ///< its decay over training
  double momentum = 0.9, weight_decay = 5e-4;
  bool nesterov = true;
  double meta_lr = 5e-2;             ///< the class logits' base learning rate (Adam)
  optim::lr_decay meta_lr_decay{};   ///< its decay over training
  double meta_weight_decay = 0.0;    ///< pulls the logits towards 0, plain training
  std::uint64_t seed = 1;
};

/// What meta_class_weighting returns: its solver, with the levels by role:
///
///     classifier(), model()   level 0, the classifier θ
///     class_logits()          level 1, φ
///     class_weights()         c(φ) = C · softmax(φ), on the host: the weight of every class
template <class Solver>
class meta_class_weighting_solver : public meta_weight_net_solver<Solver> {
 public:
  using meta_weight_net_solver<Solver>::meta_weight_net_solver;
  auto& class_logits() { return Solver::template level<1>(); }
  const auto& class_logits() const { return Solver::template level<1>(); }
  [[nodiscard]] std::vector<double> class_weights() const {
    const auto& phi = class_logits().theta;
    const auto host = Solver::policy::to_host(phi);
    return detail::weighting_of(this->classifier().learner).weights(std::vector<double>(host.begin(), host.end()));
  }
};

/// The two levels, assembled; run with .run(iterations) like any solver. `adapt` wraps each
/// level's learner: distributed::across(comm) runs both data-parallel.
template <nn_tensor_policy P, class Adapt = detail::learner_as_is>
auto meta_class_weighting(std::shared_ptr<const data::dataset> train, std::shared_ptr<const data::dataset> validation,
                          const meta_class_weighting_config& cfg = {}, const Adapt& adapt = {}) {
  const std::string who = "bilevel::methods::meta_class_weighting";
  if (!train) throw std::invalid_argument(who + ": no training set");
  if (train->num_classes < 2)
    throw std::invalid_argument(who + ": the training set has " + std::to_string(train->num_classes) +
                                " class(es); class weights need two or more");
  const meta_weight_net_config as_mwn{.widths = cfg.widths, .layers = cfg.layers, .input = cfg.input,
                                      .network = cfg.network, .batch = cfg.batch,
                                      .validation_batch = cfg.validation_batch, .epochs = cfg.epochs, .lr = cfg.lr,
                                      .lr_decay = cfg.lr_decay, .momentum = cfg.momentum,
                                      .weight_decay = cfg.weight_decay, .nesterov = cfg.nesterov,
                                      .meta_lr = cfg.meta_lr, .meta_lr_decay = cfg.meta_lr_decay,
                                      .meta_weight_decay = cfg.meta_weight_decay, .seed = cfg.seed};
  const std::size_t classes = train->num_classes;  // read before `train` is moved into the call
  return detail::reweighting_with_net<P, mwn_schedule::virtual_step_first, meta_class_weighting_solver>(
      learners::softmax_class_weights{classes}, P::zeros(classes), std::move(train), std::move(validation), as_mwn, "class_logits", who, adapt);
}

}  // namespace bilevel::methods
