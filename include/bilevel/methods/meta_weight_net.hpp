// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// Meta-Weight-Net (Shu et al., NeurIPS 2019) as an instantiation of the one solver.
///
///     level 0 (classifier θ):   min_θ (1/B) Σ_i V(ℓ_i(θ)⁻; Θ) ℓ_i(θ)      on training batches
///     level 1 (weighting Θ):    min_Θ L_val(θ*(Θ))                          on clean validation batches
///
/// V is a 1 → H → 1 network with a sigmoid output reading each sample's detached loss
/// (learners/loss_weighting_net.hpp). As in the official code, each outer iteration steps Θ
/// first: its hypergradient differentiates one virtual step of the classifier exactly
/// (hypergrad::lookahead, the paper's `create_graph=True` unroll) on the batch the
/// classifier's real step then takes with the new weights (schedule {1, 0}). Defaults follow
/// the official code: SGD with Nesterov momentum 0.9 and weight decay 5e-4 for θ, Adam
/// (lr 1e-3, weight decay 1e-4) for Θ, H = 100, batches of 100, validation batches drawn
/// with replacement.
///
/// `meta_weight_net<P, mwn_schedule::real_step_first>` runs Betty's schedule instead: the
/// classifier takes its real step first, and Θ follows the exact hypergradient through that
/// step (hypergrad::unrolled{.keep_last = 1}): no virtual step, so a step costs one backward
/// pass less (bench/compare, `mwn_step --mode last_step`, the same two levels: 5.43 against
/// 6.46 ms per outer step for its MLP), at the price of a hypergradient one step late (Θ's
/// new weights act from the next batch on).
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "bilevel/core/solver.hpp"
#include "bilevel/data/dataset.hpp"
#include "bilevel/learners/loss_weighting_net.hpp"
#include "bilevel/hypergrad/unrolled.hpp"
#include "bilevel/methods/detail/levels.hpp"
#include "bilevel/methods/method_solver.hpp"
#include "bilevel/optim/adam.hpp"
#include "bilevel/optim/schedule.hpp"

namespace bilevel::methods {

/// When the weighting net's hypergradient is taken, relative to the classifier's step.
enum class mwn_schedule {
  virtual_step_first,  ///< the official code: Θ first, through one exact virtual step (default)
  real_step_first,     ///< Betty's: the classifier first, Θ through the real step just taken
};

/// Meta-Weight-Net's settings (deep_interactions' too). Designated initialisers must name the
/// fields in declaration order (C++20): {.batch = 20, .lr = 0.05, .seed = 2} compiles,
/// {.seed = 2, .lr = 0.05} does not. The order: the classifier, its data and the length of
/// training, the classifier's SGD, the weighting net's Adam, the weighting net, the seed.
/// Each learning rate is stated once (`lr`, `meta_lr`); its decay is relative to it and to
/// `epochs` (optim/schedule.hpp), e.g. the paper's ×0.1 at epochs 80 and 100 of 120:
/// {.epochs = 120, .lr_decay = optim::multistep_decay{.at = {80.0 / 120, 100.0 / 120}}}.
struct meta_weight_net_config {
  std::vector<std::size_t> widths = {784, 256, 128, 10};  ///< the classifier: an MLP, unless `layers` is set
  /// Another classifier: a sequential network of these layers on `input`-shaped samples (a
  /// CNN, say); `widths` is then unused.
  std::vector<learners::layer::spec> layers{};
  learners::geometry input{};
  /// Or a designed network (a ResNet, a DARTS network): `widths`, `layers` and `input` are
  /// then unused.
  std::optional<learners::network_design> network{};
  std::size_t batch = 100, validation_batch = 100;
  /// The length of training in epochs of the training set, what the decays' fractions are
  /// of (total_iterations() of the result); 0: not stated, and only constant rates allowed.
  std::size_t epochs = 0;
  double lr = 0.1;                     ///< the classifier's base learning rate
  optim::lr_decay lr_decay{};          ///< its decay over training (default: constant)
  double momentum = 0.9, weight_decay = 5e-4;
  bool nesterov = true;
  double meta_lr = 1e-3;               ///< the weighting net's base learning rate (Adam)
  optim::lr_decay meta_lr_decay{};     ///< its decay over training (default: constant)
  double meta_weight_decay = 1e-4;
  std::size_t hidden = 100;  ///< V's hidden units
  std::uint64_t seed = 1;
};

/// What meta_weight_net returns: its solver (method_solver.hpp), with the levels by role:
///
///     classifier(), model()   level 0, the classifier θ (the model to evaluate)
///     weighting_net()         level 1, the weighting net's parameters Θ
///     sample_weights(d)       the weight V(ℓ_i; Θ) of every row of d at the current θ and Θ
template <class Solver>
class meta_weight_net_solver : public method_solver<Solver> {
 public:
  using method_solver<Solver>::method_solver;
  auto& classifier() { return Solver::template level<0>(); }
  const auto& classifier() const { return Solver::template level<0>(); }
  auto& weighting_net() { return Solver::template level<1>(); }
  const auto& weighting_net() const { return Solver::template level<1>(); }
  /// The level whose parameters are the trained model: the classifier.
  auto& model() { return classifier(); }
  const auto& model() const { return classifier(); }
  /// One weight per row of `d`, in row order, on the host (learned_sample_weights of level 0).
  [[nodiscard]] std::vector<double> sample_weights(const data::dataset& d, std::size_t chunk = 1000) const {
    return learned_sample_weights<0>(*this, d, chunk);
  }
};

namespace detail {
/// The shape shared by every learned-weighting-net method: a classifier (an MLP, or the
/// network of cfg.layers) whose
/// per-sample weights come from a net `Weighting` with parameters φ on the level above,
/// stepped first with a one-step exact look-ahead on the batch the classifier then takes.
template <nn_tensor_policy P, mwn_schedule Schedule = mwn_schedule::virtual_step_first,
          template <class> class Result = meta_weight_net_solver, class Weighting, class Adapt = learner_as_is>
auto reweighting_with_net(Weighting weighting, vector_t<P> phi0, std::shared_ptr<const data::dataset> train,
                          std::shared_ptr<const data::dataset> validation, const meta_weight_net_config& cfg,
                          const char* weighting_name, const std::string& who, const Adapt& adapt = {}) {
  if (!train) throw std::invalid_argument(who + ": no training set");
  const classifier_shape shape(cfg.widths, cfg.input, cfg.layers, cfg.network);
  (void)fixed_network<P>(shape, who, "methods::darts or methods::lfm_architecture_search");
  const std::size_t per_epoch = iterations_per_epoch(train->rows, cfg.batch, who), total = cfg.epochs * per_epoch;
  auto strategy = [] {
    if constexpr (Schedule == mwn_schedule::virtual_step_first) return hypergrad::lookahead{.steps = 1, .on_next_batch = true};
    else return hypergrad::unrolled{.keep_last = 1};
  }();
  auto model = classifier_level<P>("classifier", shape, std::move(weighting),
                                   {cfg.lr, cfg.momentum, cfg.weight_decay, cfg.nesterov,
                                    optim::resolve_schedule(cfg.lr_decay, cfg.lr, total, who + ": lr_decay")},
                                   cfg.seed,
                                   learners::dataset_batches<P>(std::move(train), cfg.batch, cfg.seed), strategy,
                                   adapt)
                   .reading({1});
  auto net = validation_level<P>(weighting_name, shape,
                                 optim::adam<P>{.lr = cfg.meta_lr,
                                                .weight_decay = cfg.meta_weight_decay,
                                                .schedule = optim::resolve_schedule(cfg.meta_lr_decay, cfg.meta_lr,
                                                                                    total, who + ": meta_lr_decay")},
                                 std::move(phi0), std::move(validation), cfg.validation_batch, cfg.seed + 2, adapt)
                 .reading({0});
  solver s(std::move(model), std::move(net));
  if constexpr (Schedule == mwn_schedule::virtual_step_first) s.schedule({1, 0});
  else s.schedule({0, 1});
  return Result<decltype(s)>(std::move(s), per_epoch, cfg.epochs);
}
}  // namespace detail

/// The two levels, assembled; run with .run(iterations) like any solver. Level 0 holds the
/// classifier (its learner evaluates with .forward), level 1 the weighting net's parameters.
/// `adapt` wraps each level's learner: distributed::across(comm) runs both data-parallel.
template <nn_tensor_policy P, mwn_schedule Schedule = mwn_schedule::virtual_step_first,
          class Adapt = detail::learner_as_is>
auto meta_weight_net(std::shared_ptr<const data::dataset> train, std::shared_ptr<const data::dataset> validation,
                     const meta_weight_net_config& cfg = {}, const Adapt& adapt = {}) {
  const learners::loss_weighting_net v{cfg.hidden};
  return detail::reweighting_with_net<P, Schedule>(v, v.initial_parameters<P>(cfg.seed + 1), std::move(train),
                                                   std::move(validation), cfg, "weighting_net",
                                                   "bilevel::methods::meta_weight_net", adapt);
}

}  // namespace bilevel::methods
