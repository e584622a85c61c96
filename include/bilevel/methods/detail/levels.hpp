// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// The two kinds of level every reweighting method here is built from: a classifier (an MLP
/// or any sequential network, with a Weighting) trained with SGD on training batches and differentiated by a one-step
/// look-ahead on the batch its real step takes; and an upper level whose objective is the
/// validation loss of a classifier below it (solution_loss), on validation batches drawn with
/// replacement.
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "bilevel/core/level.hpp"
#include "bilevel/data/dataset.hpp"
#include "bilevel/hypergrad/first_order.hpp"
#include "bilevel/hypergrad/unrolled.hpp"
#include "bilevel/learners/classification_batch.hpp"
#include "bilevel/learners/mlp.hpp"
#include "bilevel/learners/networks/network_design.hpp"
#include "bilevel/learners/sequential.hpp"
#include "bilevel/learners/solution_loss.hpp"
#include "bilevel/optim/schedule.hpp"
#include "bilevel/optim/sgd.hpp"

namespace bilevel::methods::detail {

/// SGD settings shared by the methods' configurations.
struct sgd_settings {
  double lr, momentum, weight_decay;
  bool nesterov;
  std::function<double(std::size_t)> schedule{};  ///< from the configuration's lr_decay and `lr`; empty: constant

  template <tensor_policy P>
  [[nodiscard]] optim::sgd<P> optimizer() const {
    return {.lr = lr, .momentum = momentum, .weight_decay = weight_decay, .nesterov = nesterov, .schedule = schedule};
  }
};

/// The classifier's network: an MLP of `widths` (ReLU, cross-entropy), or, given layers, any
/// sequential network (a CNN, say) on `input`-shaped samples, or, given a design, its network
/// (a ResNet, a DARTS network; learners/networks/network_design.hpp). Converts from a widths
/// list, so a method's configuration can keep `widths` as its common case.
struct classifier_shape {
  std::vector<std::size_t> widths;
  learners::geometry input{};
  std::vector<learners::layer::spec> layers{};
  std::optional<learners::network_design> design{};

  classifier_shape(std::vector<std::size_t> w) : widths(std::move(w)) {}  // NOLINT(google-explicit-constructor)
  /// The MLP of `w`, or the design's network when one is given (the LFM methods' configurations).
  classifier_shape(std::vector<std::size_t> w, std::optional<learners::network_design> d)
      : widths(std::move(w)), design(std::move(d)) {}
  classifier_shape(std::vector<std::size_t> w, learners::geometry in, std::vector<learners::layer::spec> l,
                   std::optional<learners::network_design> d = {})
      : widths(std::move(w)), input(in), layers(std::move(l)), design(std::move(d)) {}

  template <nn_tensor_policy P, class Weighting = learners::unweighted>
  [[nodiscard]] learners::sequential<P, Weighting> network(Weighting weighting = {}) const {
    if (design) return learners::build_network<P, Weighting>(*design, std::move(weighting));
    if (layers.empty())
      return learners::mlp<P, Weighting>(widths, learners::activation::relu, learners::loss_kind::cross_entropy,
                                         std::move(weighting));
    return learners::sequential<P, Weighting>(input, layers, learners::loss_kind::cross_entropy, std::move(weighting));
  }
};

/// The network of `shape` for a method with no level that learns an architecture: a network
/// with mixed operations (the DARTS supernet, a chain with layer::mixed) is refused, as nothing
/// would read its architecture; `search` names the method that searches one. Methods whose
/// weightings read the network itself (its features, its losses on references) build it once
/// here to check it and to size those weightings.
template <nn_tensor_policy P>
learners::sequential<P> fixed_network(const classifier_shape& shape, const std::string& who, const std::string& search) {
  auto net = shape.network<P>();
  if (net.arch_size() > 0)
    throw std::invalid_argument(who + ": the network has mixed operations (" + std::to_string(net.arch_size()) +
                                " architecture entries) and no level here learns an architecture; search it with " +
                                search + ", then train the derived network");
  return net;
}

/// What a method does to each learner it builds before making it a level: nothing by default;
/// distributed::across(comm) makes every level data-parallel (bilevel/distributed/data_parallel.hpp).
struct learner_as_is {
  template <class L>
  L operator()(L learner) const {
    return learner;
  }
};

template <nn_tensor_policy P, class Weighting, class Sampler, class Strategy = hypergrad::lookahead,
          class Adapt = learner_as_is>
auto classifier_level(std::string name, const classifier_shape& shape, Weighting weighting, const sgd_settings& sgd,
                      std::uint64_t init_seed, Sampler sampler,
                      Strategy strategy = hypergrad::lookahead{.steps = 1, .on_next_batch = true},
                      const Adapt& adapt = {}) {
  auto net = shape.network<P>(std::move(weighting));
  auto theta0 = net.initial_parameters(init_seed);
  return make_level(std::move(name), adapt(std::move(net)), sgd.optimizer<P>(), std::move(strategy),
                    std::move(theta0), std::move(sampler));
}

template <nn_tensor_policy P, class Optimizer, class Adapt = learner_as_is>
auto validation_level(std::string name, const classifier_shape& shape, Optimizer optimizer, vector_t<P> theta0,
                      std::shared_ptr<const data::dataset> validation, std::size_t batch, std::uint64_t seed,
                      const Adapt& adapt = {}) {
  const std::size_t own = P::size(theta0);
  using network = learners::sequential<P>;
  return make_level(std::move(name), adapt(learners::solution_loss<network>(shape.network<P>(), own)),
                    std::move(optimizer), hypergrad::first_order{}, std::move(theta0),
                    learners::dataset_batches<P>(std::move(validation), batch, seed, true));
}

}  // namespace bilevel::methods::detail
