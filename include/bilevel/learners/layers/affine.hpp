// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// The affine map out = X W + 1 bᵀ shared by dense layers (X = the input) and convolutions
/// (X = the im2col patches), with its four passes. W is fan_in × fan_out, row-major, at
/// `offset` in θ, followed by b unless `bias` is false (DARTS's and ResNets' convolutions,
/// which a batch normalization follows, have none).
#include <cmath>
#include <cstddef>
#include <random>

#include "bilevel/learners/layers/detail/bias_rows.hpp"
#include "bilevel/learners/layers/layer.hpp"

namespace bilevel::learners::detail {

template <nn_tensor_policy P>
struct affine_map {
  using matrix = typename P::matrix;
  using vector = vector_t<P>;
  using scalar = scalar_t<P>;
  std::size_t fan_in = 0, fan_out = 0, offset = 0;
  bool bias = true;

  [[nodiscard]] std::size_t num_parameters() const { return fan_in * fan_out + (bias ? fan_out : 0); }
  /// The same map with its parameters at another offset.
  [[nodiscard]] affine_map at(std::size_t where) const {
    affine_map m = *this;
    m.offset = where;
    return m;
  }
  [[nodiscard]] std::size_t bias_offset() const { return offset + fan_in * fan_out; }

  // W (and the direction's V) enter the products where they lie in θ (v), through
  // gemm_by_segment: no unflattened copy of a layer's weights per pass.
  // `with_bias` false leaves the bias out of out (and of out_dot), and its gradient out of
  // the backward passes: a network that adds the bias, and sums its gradient, in the passes
  // of the activation that follows (activation_layer.hpp).
  void forward(const vector& theta, const matrix& x, matrix& out, bool with_bias = true) const {
    P::gemm_by_segment(scalar(1), x, false, theta, offset, fan_in, fan_out, false, scalar(0), out);
    if (bias && with_bias) detail::add_bias_row<P>(theta, bias_offset(), out);
  }
  /// grad segment from g; dx = g Wᵀ when wanted.
  void backward(const vector& theta, const matrix& x, const matrix& g, matrix* dx, vector& grad,
                bool with_bias = true) const {
    P::gemm_into_segment(scalar(1), x, true, g, false, scalar(0), grad, offset);
    if (bias && with_bias) detail::bias_gradient_into<P>(g, bias_offset(), grad);
    if (dx) P::gemm_by_segment(scalar(1), g, false, theta, offset, fan_in, fan_out, true, scalar(0), *dx);
  }
  /// out_dot = X V + 1 v_bᵀ (+ Ẋ W).
  void tangent_forward(const vector& theta, const vector& v, const matrix& x, const matrix* x_dot,
                       matrix& out_dot, bool with_bias = true) const {
    P::gemm_by_segment(scalar(1), x, false, v, offset, fan_in, fan_out, false, scalar(0), out_dot);
    if (x_dot) P::gemm_by_segment(scalar(1), *x_dot, false, theta, offset, fan_in, fan_out, false, scalar(1), out_dot);
    if (bias && with_bias) detail::add_bias_row<P>(v, bias_offset(), out_dot);
  }
  /// grad_dot segment = Xᵀ ġ (+ Ẋᵀ g); dx_dot = ġ Wᵀ + g Vᵀ when wanted.
  void tangent_backward(const vector& theta, const vector& v, const matrix& x, const matrix* x_dot, const matrix& g,
                        const matrix& g_dot, matrix* dx_dot, vector& grad_dot, bool with_bias = true) const {
    P::gemm_into_segment(scalar(1), x, true, g_dot, false, scalar(0), grad_dot, offset);
    if (x_dot) P::gemm_into_segment(scalar(1), *x_dot, true, g, false, scalar(1), grad_dot, offset);
    if (bias && with_bias) detail::bias_gradient_into<P>(g_dot, bias_offset(), grad_dot);
    if (dx_dot) {
      P::gemm_by_segment(scalar(1), g_dot, false, theta, offset, fan_in, fan_out, true, scalar(0), *dx_dot);
      P::gemm_by_segment(scalar(1), g, false, v, offset, fan_in, fan_out, true, scalar(1), *dx_dot);
    }
  }
  /// Uniform(±bound) weights, zero bias: He (bound √(6/fan_in)) before a ReLU, Glorot
  /// (√(6/(fan_in + fan_out))) otherwise.
  void initialize(std::vector<scalar>& theta, bool relu_follows, std::mt19937_64& gen) const {
    const double bound = relu_follows ? std::sqrt(6.0 / double(fan_in)) : std::sqrt(6.0 / double(fan_in + fan_out));
    std::uniform_real_distribution<double> u(-bound, bound);
    for (std::size_t i = 0; i < fan_in * fan_out; ++i) theta[offset + i] = scalar(u(gen));
  }
};

}  // namespace bilevel::learners::detail
