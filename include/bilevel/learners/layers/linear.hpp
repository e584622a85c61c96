// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// linear<P>: y = x W (+ 1 bᵀ) on the channels of every pixel, W channels_in × units. On a
/// flat input (1 × 1 pixels) it is a fully connected layer, on an image a 1 × 1 convolution
/// (the pointwise half of a separable convolution).
#include <cmath>
#include <random>
#include <span>
#include <stdexcept>

#include "bilevel/learners/layers/affine.hpp"
#include "bilevel/learners/layers/layer_concept.hpp"

namespace bilevel::learners {

template <nn_tensor_policy P>
struct linear {
  using matrix = typename P::matrix;
  using vector = vector_t<P>;
  using scalar = scalar_t<P>;
  struct cache {};
  geometry in, out;
  detail::affine_map<P> map;

  linear(geometry input, std::size_t units, bool bias = true) : in(input), out{input.height, input.width, units} {
    if (units == 0 || input.channels == 0)
      throw std::invalid_argument("bilevel::learners::linear: input channels and units must be >= 1");
    map = {input.channels, units, 0, bias};
  }
  [[nodiscard]] geometry input_shape() const { return in; }
  [[nodiscard]] geometry output_shape() const { return out; }
  [[nodiscard]] std::size_t num_parameters() const { return map.num_parameters(); }
  /// He-uniform weights (bound √(6 / fan_in)), zero bias.
  void initialize(std::span<scalar> params, std::mt19937_64& gen) const {
    std::uniform_real_distribution<double> u(-1.0, 1.0);
    const double bound = std::sqrt(6.0 / double(map.fan_in));
    for (std::size_t i = 0; i < map.fan_in * map.fan_out; ++i) params[i] = scalar(bound * u(gen));
  }

  void forward(const pass_context<P>& p, const matrix& x, matrix& y, cache&) const {
    map.at(p.offset).forward(p.theta, x, y);
  }
  void backward(const pass_context<P>& p, const matrix& x, const matrix& g, cache&, matrix* gx, vector& grad) const {
    map.at(p.offset).backward(p.theta, x, g, gx, grad);
  }
  void tangent_forward(const tangent_context<P>& t, const matrix& x, const matrix* x_dot, cache&,
                       matrix& y_dot) const {
    map.at(t.offset).tangent_forward(t.theta, t.v, x, x_dot, y_dot);
  }
  void tangent_backward(const tangent_context<P>& t, const matrix& x, const matrix* x_dot, const matrix& g,
                        const matrix& g_dot, cache&, matrix* gx_dot, vector& grad_dot) const {
    map.at(t.offset).tangent_backward(t.theta, t.v, x, x_dot, g, g_dot, gx_dot, grad_dot);
  }
};

}  // namespace bilevel::learners
