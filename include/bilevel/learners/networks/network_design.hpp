// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// network_design: a network described independently of the tensor policy and of how its
/// loss weighs samples, so that a method's configuration can name it and the method builds
/// it for its own policy and weighting (build_network). The designs: a chain of layer specs
/// (sequential.hpp's builder), a CIFAR ResNet, a wide ResNet, the DARTS supernet and a
/// discrete DARTS network of a genotype. A network of a user's own layers is built with
/// sequential's constructor directly and used with the solver (docs/guide.md).
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "bilevel/learners/networks/darts_space.hpp"
#include "bilevel/learners/networks/resnet.hpp"
#include "bilevel/learners/sequential.hpp"

namespace bilevel::learners {

/// A chain of layer specs on `input`-shaped samples (an MLP, LeNet, a chain with mixed ops).
struct layer_specs {
  geometry input;
  std::vector<layer::spec> layers;
};
/// The DARTS supernet (its architecture is the network's last input).
struct darts_supernet_design {
  darts_space_options space{};
};
/// The discrete network of a DARTS genotype, for retraining.
struct darts_network_design {
  darts_genotype genotype;
  darts_space_options space{};
};

using network_design =
    std::variant<layer_specs, resnet_options, wide_resnet_options, darts_supernet_design, darts_network_design>;

/// One sample's shape.
[[nodiscard]] inline geometry input_of(const network_design& d) {
  return std::visit(
      [](const auto& x) -> geometry {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, darts_supernet_design> || std::is_same_v<T, darts_network_design>)
          return x.space.input;
        else
          return x.input;
      },
      d);
}

/// The design's network for policy P, its loss weighing samples by `weighting`.
template <nn_tensor_policy P, class Weighting = unweighted>
[[nodiscard]] sequential<P, Weighting> build_network(const network_design& d, Weighting weighting = {},
                                                     loss_kind loss = loss_kind::cross_entropy) {
  return std::visit(
      [&](const auto& x) -> sequential<P, Weighting> {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, layer_specs>)
          return {x.input, x.layers, loss, std::move(weighting)};
        else if constexpr (std::is_same_v<T, resnet_options>)
          return {x.input, resnet<P>(x), loss, std::move(weighting)};
        else if constexpr (std::is_same_v<T, wide_resnet_options>)
          return {x.input, wide_resnet<P>(x), loss, std::move(weighting)};
        else if constexpr (std::is_same_v<T, darts_supernet_design>)
          return {x.space.input, darts_supernet<P>(x.space), loss, std::move(weighting)};
        else
          return {x.space.input, darts_network<P>(x.genotype, x.space), loss, std::move(weighting)};
      },
      d);
}

}  // namespace bilevel::learners
