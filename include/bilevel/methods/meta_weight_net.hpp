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
#include <vector>

#include "bilevel/core/solver.hpp"
#include "bilevel/data/dataset.hpp"
#include "bilevel/learners/loss_weighting_net.hpp"
#include "bilevel/hypergrad/unrolled.hpp"
#include "bilevel/methods/detail/levels.hpp"
#include "bilevel/optim/adam.hpp"

namespace bilevel::methods {

/// When the weighting net's hypergradient is taken, relative to the classifier's step.
enum class mwn_schedule {
  virtual_step_first,  ///< the official code: Θ first, through one exact virtual step (default)
  real_step_first,     ///< Betty's: the classifier first, Θ through the real step just taken
};

struct meta_weight_net_config {
  std::vector<std::size_t> widths = {784, 256, 128, 10};  ///< the classifier: an MLP, unless `layers` is set
  /// Another classifier: a sequential network of these layers on `input`-shaped samples (a
  /// CNN, say); `widths` is then unused.
  std::vector<learners::layer::spec> layers{};
  learners::geometry input{};
  std::size_t batch = 100, validation_batch = 100;
  double lr = 0.1, momentum = 0.9, weight_decay = 5e-4;
  bool nesterov = true;
  double meta_lr = 1e-3, meta_weight_decay = 1e-4;
  std::size_t hidden = 100;  ///< V's hidden units
  std::uint64_t seed = 1;
};

namespace detail {
/// The shape shared by every learned-weighting-net method: a classifier (an MLP, or the
/// network of cfg.layers) whose
/// per-sample weights come from a net `Weighting` with parameters φ on the level above,
/// stepped first with a one-step exact look-ahead on the batch the classifier then takes.
template <nn_tensor_policy P, mwn_schedule Schedule = mwn_schedule::virtual_step_first, class Weighting>
auto reweighting_with_net(Weighting weighting, vector_t<P> phi0, std::shared_ptr<const data::dataset> train,
                          std::shared_ptr<const data::dataset> validation, const meta_weight_net_config& cfg,
                          const char* weighting_name) {
  const classifier_shape shape(cfg.widths, cfg.input, cfg.layers);
  auto strategy = [] {
    if constexpr (Schedule == mwn_schedule::virtual_step_first) return hypergrad::lookahead{.steps = 1, .on_next_batch = true};
    else return hypergrad::unrolled{.keep_last = 1};
  }();
  auto model = classifier_level<P>("classifier", shape, std::move(weighting),
                                   {cfg.lr, cfg.momentum, cfg.weight_decay, cfg.nesterov}, cfg.seed,
                                   learners::dataset_batches<P>(std::move(train), cfg.batch, cfg.seed), strategy)
                   .reading({1});
  auto net = validation_level<P>(weighting_name, shape,
                                 optim::adam<P>{.lr = cfg.meta_lr, .weight_decay = cfg.meta_weight_decay},
                                 std::move(phi0), std::move(validation), cfg.validation_batch, cfg.seed + 2)
                 .reading({0});
  solver s(std::move(model), std::move(net));
  if constexpr (Schedule == mwn_schedule::virtual_step_first) s.schedule({1, 0});
  else s.schedule({0, 1});
  return s;
}
}  // namespace detail

/// The two levels, assembled; run with .run(iterations) like any solver. Level 0 holds the
/// classifier (its learner evaluates with .forward), level 1 the weighting net's parameters.
template <nn_tensor_policy P, mwn_schedule Schedule = mwn_schedule::virtual_step_first>
auto meta_weight_net(std::shared_ptr<const data::dataset> train, std::shared_ptr<const data::dataset> validation,
                     const meta_weight_net_config& cfg = {}) {
  const learners::loss_weighting_net v{cfg.hidden};
  return detail::reweighting_with_net<P, Schedule>(v, v.initial_parameters<P>(cfg.seed + 1), std::move(train),
                                         std::move(validation), cfg, "weighting_net");
}

}  // namespace bilevel::methods
