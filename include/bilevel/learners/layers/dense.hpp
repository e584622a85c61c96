// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// Fully connected layer: out = in W + 1 bᵀ on flat inputs (height = width = 1).
#include <stdexcept>
#include <string>

#include "bilevel/learners/layers/affine.hpp"

namespace bilevel::learners {

template <nn_tensor_policy P>
struct dense_layer {
  using matrix = typename P::matrix;
  using vector = vector_t<P>;
  geometry in, out;
  detail::affine_map<P> map;

  dense_layer(geometry input, std::size_t units, std::size_t offset) : in(input), out{1, 1, units} {
    if (input.pixels() != 1)
      throw std::invalid_argument("bilevel::learners::dense_layer: input is " + std::to_string(input.height) + "x" +
                                  std::to_string(input.width) + "x" + std::to_string(input.channels) +
                                  "; flatten it first");
    map = {input.channels, units, offset};
  }
  [[nodiscard]] std::size_t num_parameters() const { return map.num_parameters(); }

  void forward(const vector& theta, const matrix& x, std::size_t, matrix& y, layer_cache<P>&,
               bool with_bias = true) const {
    map.forward(theta, x, y, with_bias);
  }
  void backward(const vector& theta, const matrix& x, const matrix& g, std::size_t, const layer_cache<P>&, matrix* gx,
                vector& grad, bool with_bias = true) const {
    map.backward(theta, x, g, gx, grad, with_bias);
  }
  void tangent_forward(const vector& theta, const vector& v, const matrix& x, const matrix* x_dot, std::size_t,
                       const layer_cache<P>&, matrix& y_dot, bool with_bias = true) const {
    map.tangent_forward(theta, v, x, x_dot, y_dot, with_bias);
  }
  void tangent_backward(const vector& theta, const vector& v, const matrix& x, const matrix* x_dot, const matrix& g,
                        const matrix& g_dot, std::size_t, const layer_cache<P>&, matrix* gx_dot,
                        vector& grad_dot, bool with_bias = true) const {
    map.tangent_backward(theta, v, x, x_dot, g, g_dot, gx_dot, grad_dot, with_bias);
  }
};

}  // namespace bilevel::learners
