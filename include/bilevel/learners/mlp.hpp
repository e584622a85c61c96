// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// A multilayer perceptron: a sequential network of dense layers with one hidden activation,
/// built from its widths {inputs, hidden..., outputs}. Everything else (losses, weighting,
/// exact second-order products, the forward cache) is sequential's.
#include <cstddef>
#include <stdexcept>
#include <vector>

#include "bilevel/learners/sequential.hpp"

namespace bilevel::learners {

template <nn_tensor_policy P, class Weighting = unweighted>
class mlp : public sequential<P, Weighting> {
 public:
  explicit mlp(const std::vector<std::size_t>& widths, activation hidden = activation::relu,
               loss_kind loss = loss_kind::cross_entropy, Weighting weighting = {})
      : sequential<P, Weighting>(geometry{1, 1, first(widths)}, specs(widths, hidden), loss, std::move(weighting)) {}

 private:
  static std::size_t first(const std::vector<std::size_t>& widths) {
    if (widths.size() < 2) throw std::invalid_argument("bilevel::learners::mlp: need at least input and output widths");
    for (std::size_t w : widths)
      if (w == 0) throw std::invalid_argument("bilevel::learners::mlp: a layer width is 0");
    return widths.front();
  }
  static std::vector<layer::spec> specs(const std::vector<std::size_t>& widths, activation hidden) {
    first(widths);  // validate here too: argument evaluation order is unspecified
    std::vector<layer::spec> s;
    for (std::size_t l = 1; l < widths.size(); ++l) {
      s.push_back(layer::dense{widths[l]});
      if (l + 1 < widths.size()) s.push_back(layer::act{hidden});
    }
    return s;
  }
};

}  // namespace bilevel::learners
