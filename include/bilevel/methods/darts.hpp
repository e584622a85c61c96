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
/// virtual step of the weights' own optimizer (momentum and weight decay included) and the
/// mixed product by central differences at the original w, exactly DARTS's
/// `_backward_step_unrolled`; first order is hypergrad::first_order. Defaults follow the
/// official code (cnn/train_search.py): weights by SGD lr 0.025, momentum 0.9, weight decay
/// 3e-4; α by Adam lr 3e-4, betas (0.5, 0.999), weight decay 1e-3, initialised to 1e-3·N(0,1).
#include <cstddef>
#include <cstdint>
#include <memory>
#include <random>
#include <variant>
#include <vector>

#include "bilevel/core/level.hpp"
#include "bilevel/core/solver.hpp"
#include "bilevel/hypergrad/finite_difference.hpp"
#include "bilevel/hypergrad/first_order.hpp"
#include "bilevel/learners/architecture_loss.hpp"
#include "bilevel/learners/classification_batch.hpp"
#include "bilevel/learners/sequential.hpp"
#include "bilevel/optim/adam.hpp"
#include "bilevel/optim/sgd.hpp"

namespace bilevel::methods {

struct darts_config {
  std::size_t batch = 64, validation_batch = 64;
  double lr = 0.025, momentum = 0.9, weight_decay = 3e-4;
  double arch_lr = 3e-4, arch_beta1 = 0.5, arch_weight_decay = 1e-3;
  std::uint64_t seed = 1;
};

/// The two levels of a search over `specs` (which contain layer::mixed operations) on
/// `input`-shaped samples. `Strategy` is hypergrad::finite_difference (second order) or
/// hypergrad::first_order.
template <nn_tensor_policy P, class Strategy = hypergrad::finite_difference>
auto darts(learners::geometry input, const std::vector<learners::layer::spec>& specs,
           std::shared_ptr<const data::dataset> train, std::shared_ptr<const data::dataset> validation,
           const darts_config& cfg = {}, Strategy strategy = {}) {
  using namespace bilevel::learners;
  sequential<P> net(input, specs);
  std::mt19937_64 gen(cfg.seed + 7);
  std::normal_distribution<double> normal;
  std::vector<scalar_t<P>> alpha(net.arch_size());
  for (auto& a : alpha) a = scalar_t<P>(1e-3 * normal(gen));
  auto w0 = net.initial_parameters(cfg.seed);
  auto weights = make_level("weights", net,
                            optim::sgd<P>{.lr = cfg.lr, .momentum = cfg.momentum, .weight_decay = cfg.weight_decay},
                            strategy, std::move(w0), dataset_batches<P>(std::move(train), cfg.batch, cfg.seed))
                     .reading({1});
  auto architecture = make_level("architecture", architecture_loss<sequential<P>>(net),
                                 optim::adam<P>{.lr = cfg.arch_lr, .beta1 = cfg.arch_beta1, .beta2 = 0.999,
                                                .weight_decay = cfg.arch_weight_decay},
                                 hypergrad::first_order{}, P::from_host(alpha),
                                 dataset_batches<P>(std::move(validation), cfg.validation_batch, cfg.seed + 1, true))
                          .reading({0});
  return solver(std::move(weights), std::move(architecture));
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
