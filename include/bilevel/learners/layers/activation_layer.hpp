// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// Element-wise activation: out = σ(in). No parameters; its tangent backward carries the
/// σ'' term that makes the HVP of a smooth network exact.
#include "bilevel/learners/activation.hpp"
#include "bilevel/learners/layers/layer.hpp"

namespace bilevel::learners {

template <nn_tensor_policy P>
struct activation_layer {
  using matrix = typename P::matrix;
  using vector = vector_t<P>;
  using scalar = scalar_t<P>;
  geometry in, out;
  activation kind;

  activation_layer(geometry input, activation a) : in(input), out(input), kind(a) {}
  [[nodiscard]] std::size_t num_parameters() const { return 0; }

  // The ReLU (the common case) goes through its own functors: one vectorised pass per map, and
  // σ'(x) ⊙ a in one pass instead of a slope matrix and then a product.
  void forward(const vector&, const matrix& x, std::size_t, matrix& y, layer_cache<P>&) const {
    if (kind == activation::relu) P::transform(x, y, relu_value{});
    else P::transform(x, y, activation_value{kind});
  }
  void backward(const vector&, const matrix& x, const matrix& g, std::size_t, const layer_cache<P>&, matrix* gx,
                vector&) const {
    if (!gx) return;
    if (kind == activation::relu) {
      P::transform(g, x, *gx, relu_slope_product{});
      return;
    }
    matrix slope;
    P::transform(x, slope, activation_slope{kind});
    P::hadamard(g, slope, *gx);
  }
  void tangent_forward(const vector&, const vector&, const matrix& x, const matrix* x_dot, std::size_t,
                       const layer_cache<P>&, matrix& y_dot) const {
    if (!x_dot) {
      y_dot = P::matrix_zeros(P::rows(x), P::cols(x));
      return;
    }
    if (kind == activation::relu) {
      P::transform(*x_dot, x, y_dot, relu_slope_product{});
      return;
    }
    matrix slope;
    P::transform(x, slope, activation_slope{kind});
    P::hadamard(slope, *x_dot, y_dot);
  }
  /// ġ_in = ġ_out ⊙ σ'(x) + g_out ⊙ σ''(x) ⊙ ẋ.
  void tangent_backward(const vector&, const vector&, const matrix& x, const matrix* x_dot, const matrix& g,
                        const matrix& g_dot, std::size_t, const layer_cache<P>&, matrix* gx_dot, vector&) const {
    if (!gx_dot) return;
    if (kind == activation::relu) {  // σ'' = 0
      P::transform(g_dot, x, *gx_dot, relu_slope_product{});
      return;
    }
    matrix slope;
    P::transform(x, slope, activation_slope{kind});
    P::hadamard(g_dot, slope, *gx_dot);
    if (x_dot && (kind == activation::tanh || kind == activation::sigmoid)) {
      matrix curv, t;
      P::transform(x, curv, activation_curvature{kind});
      P::hadamard(g, curv, t);
      P::hadamard(t, *x_dot, curv);
      P::axpy(scalar(1), curv, *gx_dot);
    }
  }
};

}  // namespace bilevel::learners
