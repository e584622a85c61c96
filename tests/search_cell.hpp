// SPDX-License-Identifier: MIT
#pragma once
// The small search space the architecture-search tests share: flat features → dense 5, tanh →
// mixed{dense+relu, dense+tanh, skip, zero} → mixed{dense+`second_edge`, skip} → 3 classes
// (6 architecture entries).
#include <vector>

#include <bilevel/learners/sequential.hpp>

namespace test {

inline std::vector<bilevel::learners::layer::spec> search_cell(
    bilevel::learners::activation second_edge = bilevel::learners::activation::tanh) {
  namespace layer = bilevel::learners::layer;
  using bilevel::learners::activation;
  return {layer::dense{5}, layer::act{activation::tanh},
          layer::mixed{{layer::candidate{{layer::dense{5}, layer::act{activation::relu}}},
                        layer::candidate{{layer::dense{5}, layer::act{activation::tanh}}}, layer::skip(),
                        layer::zero_op()}},
          layer::mixed{{layer::candidate{{layer::dense{5}, layer::act{second_edge}}}, layer::skip()}},
          layer::dense{3}};
}

}  // namespace test
