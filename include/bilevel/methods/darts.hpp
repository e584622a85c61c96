// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// DARTS (Liu et al., ICLR 2019) as an instantiation of the one solver, and the
/// discretisation of a searched network to a final architecture.
///
///     level 0 (weights w):       min_w L_train(w, α)          a network with mixed operations
///     level 1 (architecture α):  min_α L_val(w*(α), α)
///
/// Second order (the default) is hypergrad::finite_difference on the weights' level: one
/// virtual step of the weights' own optimizer (momentum and weight decay included) on the
/// training batch the weights' real step then takes, and the mixed product by central
/// differences at the original w, exactly DARTS's `_backward_step_unrolled`; first order is
/// hypergrad::first_order. As in DARTS's train_search.py, α steps first in each iteration,
/// then the weights. Defaults follow the
/// official code (cnn/train_search.py): weights by SGD lr 0.025, momentum 0.9, weight decay
/// 3e-4; α by Adam lr 3e-4, betas (0.5, 0.999), weight decay 1e-3, initialised to 1e-3·N(0,1).
#include <cstddef>
#include <cstdint>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <variant>
#include <vector>

#include "bilevel/core/level.hpp"
#include "bilevel/core/solver.hpp"
#include "bilevel/hypergrad/finite_difference.hpp"
#include "bilevel/hypergrad/first_order.hpp"
#include "bilevel/learners/architecture_loss.hpp"
#include "bilevel/learners/classification_batch.hpp"
#include "bilevel/learners/networks/network_design.hpp"
#include "bilevel/learners/sequential.hpp"
#include "bilevel/learners/shared_network.hpp"
#include "bilevel/methods/detail/levels.hpp"
#include "bilevel/methods/method_solver.hpp"
#include "bilevel/optim/adam.hpp"
#include "bilevel/optim/schedule.hpp"
#include "bilevel/optim/sgd.hpp"

namespace bilevel::methods {

/// DARTS's settings. Designated initialisers must name the fields in declaration order
/// (C++20): {.batch = 64, .arch_lr = 1e-3, .seed = 2} compiles, {.seed = 2, .arch_lr = 1e-3}
/// does not. The order: data and the length of training, the weights' SGD, α's Adam, the
/// seed. Each learning rate is stated once (`lr`, `arch_lr`); its decay is relative to it and
/// to `epochs` (optim/schedule.hpp). The official schedule, cosine from 0.025 to 0.001 over
/// 50 epochs: {.epochs = 50, .lr_decay = optim::cosine_decay{.lr_min = 0.001}}.
struct darts_config {
  std::size_t batch = 64, validation_batch = 64;
  /// The length of training in epochs of the training set, what the decays' fractions are
  /// of (total_iterations() of the result); 0: not stated, and only constant rates allowed.
  std::size_t epochs = 0;
  double lr = 0.025;                    ///< the weights' base learning rate (SGD)
  optim::lr_decay lr_decay{};           ///< its decay over training (default: constant)
  double momentum = 0.9, weight_decay = 3e-4;
  double arch_lr = 3e-4;                ///< α's base learning rate (Adam)
  optim::lr_decay arch_lr_decay{};      ///< its decay over training (default: constant)
  double arch_beta1 = 0.5, arch_weight_decay = 1e-3;
  std::uint64_t seed = 1;
};

/// What darts returns: its solver (method_solver.hpp), with the levels by role:
///
///     weights()                 level 0, the network's weights w
///     architecture()            level 1, the architecture α (one entry per candidate of
///                               every mixed operation)
///     searched_architecture()   α on the host, for chosen_operations / derive_architecture
template <class Solver>
class darts_solver : public method_solver<Solver> {
 public:
  using method_solver<Solver>::method_solver;
  auto& weights() { return Solver::template level<0>(); }
  const auto& weights() const { return Solver::template level<0>(); }
  auto& architecture() { return Solver::template level<1>(); }
  const auto& architecture() const { return Solver::template level<1>(); }
  [[nodiscard]] std::vector<double> searched_architecture() const {
    const auto alpha = Solver::policy::to_host(architecture().theta);
    return {alpha.begin(), alpha.end()};
  }
};

/// DARTS's second order: central differences through a virtual step on the batch the real
/// step takes (what darts() uses by default; name it to pass the arguments after it, e.g.
/// `darts<P>(design, train, val, cfg, methods::darts_second_order(), distributed::across(comm))`;
/// a plain `hypergrad::finite_difference{}` would take its virtual step on another batch).
inline hypergrad::finite_difference darts_second_order() { return {.on_next_batch = true}; }

namespace detail {
template <class Strategy>
Strategy darts_strategy() {
  if constexpr (std::is_same_v<Strategy, hypergrad::finite_difference>) return darts_second_order();
  else return {};
}
}  // namespace detail

/// The two levels of a search over a network with mixed operations: the DARTS supernet
/// (learners::darts_supernet_design), or a chain of layer specs with layer::mixed operations.
/// `Strategy` is hypergrad::finite_difference (second order) or hypergrad::first_order.
/// `adapt` wraps each level's learner: distributed::across(comm) runs both data-parallel (the
/// supernet's batch normalizations then use each rank's rows, as in PyTorch's DDP).
template <nn_tensor_policy P, class Strategy = hypergrad::finite_difference, class Adapt = detail::learner_as_is>
auto darts(const learners::network_design& design, std::shared_ptr<const data::dataset> train,
           std::shared_ptr<const data::dataset> validation, const darts_config& cfg = {},
           Strategy strategy = detail::darts_strategy<Strategy>(), const Adapt& adapt = {}) {
  using namespace bilevel::learners;
  const std::string who = "bilevel::methods::darts";
  if (!train || !validation) throw std::invalid_argument(who + ": missing data");
  const std::size_t per_epoch = detail::iterations_per_epoch(train->rows, cfg.batch, who),
                    total = cfg.epochs * per_epoch;
  sequential<P> net = build_network<P>(design);
  if (net.arch_size() == 0) throw std::invalid_argument(who + ": the network has no mixed operations to search");
  std::mt19937_64 gen(cfg.seed + 7);
  std::normal_distribution<double> normal;
  std::vector<scalar_t<P>> alpha(net.arch_size());
  for (auto& a : alpha) a = scalar_t<P>(1e-3 * normal(gen));
  auto w0 = net.initial_parameters(cfg.seed);
  // Neither finite differences nor first order takes an exact second-order product, so the
  // backward passes need not keep their adjoints (any other strategy would still be exact:
  // the network re-runs a backward pass that keeps them when a product asks).
  if constexpr (std::is_same_v<Strategy, hypergrad::finite_difference> ||
                std::is_same_v<Strategy, hypergrad::first_order>)
    net.keep_adjoints(false);
  // One network for both levels: one value cache instead of two (shared_network.hpp).
  shared_network<sequential<P>> shared(std::move(net));
  auto weights = make_level("weights", adapt(shared),
                            optim::sgd<P>{.lr = cfg.lr,
                                          .momentum = cfg.momentum,
                                          .weight_decay = cfg.weight_decay,
                                          .schedule = optim::resolve_schedule(cfg.lr_decay, cfg.lr, total,
                                                                              who + ": lr_decay")},
                            strategy, std::move(w0), dataset_batches<P>(std::move(train), cfg.batch, cfg.seed))
                     .reading({1});
  auto architecture = make_level("architecture", adapt(architecture_loss<sequential<P>>(shared)),
                                 optim::adam<P>{.lr = cfg.arch_lr, .beta1 = cfg.arch_beta1, .beta2 = 0.999,
                                                .weight_decay = cfg.arch_weight_decay,
                                                .schedule = optim::resolve_schedule(cfg.arch_lr_decay, cfg.arch_lr,
                                                                                    total, who + ": arch_lr_decay")},
                                 hypergrad::first_order{}, P::from_host(alpha),
                                 dataset_batches<P>(std::move(validation), cfg.validation_batch, cfg.seed + 1, true))
                          .reading({0});
  solver s(std::move(weights), std::move(architecture));
  s.schedule({1, 0});
  return darts_solver<decltype(s)>(std::move(s), per_epoch, cfg.epochs);
}

/// The search over `specs` (which contain layer::mixed operations) on `input`-shaped samples.
template <nn_tensor_policy P, class Strategy = hypergrad::finite_difference, class Adapt = detail::learner_as_is>
auto darts(learners::geometry input, const std::vector<learners::layer::spec>& specs,
           std::shared_ptr<const data::dataset> train, std::shared_ptr<const data::dataset> validation,
           const darts_config& cfg = {}, Strategy strategy = detail::darts_strategy<Strategy>(),
           const Adapt& adapt = {}) {
  return darts<P, Strategy>(learners::layer_specs{input, specs}, std::move(train), std::move(validation), cfg,
                            std::move(strategy), adapt);
}

/// Which candidate each mixed operation keeps: the one with the largest α among those that
/// are not the zero operation (DARTS's `genotype`, for a chain of edges).
inline std::vector<std::size_t> chosen_operations(const std::vector<learners::layer::spec>& specs,
                                                  const std::vector<double>& alpha) {
  std::vector<std::size_t> chosen;
  std::size_t at = 0;
  for (const auto& s : specs) {
    const auto* m = std::get_if<learners::layer::mixed>(&s);
    if (!m) continue;
    std::size_t best = m->candidates.size();
    for (std::size_t o = 0; o < m->candidates.size(); ++o)
      if (!m->candidates[o].zero && (best == m->candidates.size() || alpha.at(at + o) > alpha.at(at + best))) best = o;
    chosen.push_back(best);
    at += m->candidates.size();
  }
  return chosen;
}

/// The final architecture: every mixed operation replaced by its chosen candidate's layers
/// (nothing for the identity). Train it from scratch to evaluate the search.
inline std::vector<learners::layer::spec> derive_architecture(const std::vector<learners::layer::spec>& specs,
                                                              const std::vector<double>& alpha) {
  const auto chosen = chosen_operations(specs, alpha);
  std::vector<learners::layer::spec> out;
  std::size_t edge = 0;
  for (const auto& s : specs) {
    const auto* m = std::get_if<learners::layer::mixed>(&s);
    if (!m) {
      out.push_back(s);
      continue;
    }
    for (const auto& l : m->candidates.at(chosen[edge]).layers)
      std::visit([&](const auto& b) { out.push_back(b); }, l);
    ++edge;
  }
  return out;
}

}  // namespace bilevel::methods
