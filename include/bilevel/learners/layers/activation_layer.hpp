// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// Element-wise activation: out = σ(in). No parameters; its tangent backward carries the
/// σ'' term that makes the HVP of a smooth network exact.
///
/// After a dense or convolution layer, a network adds that layer's bias in the activation's
/// pass (forward_with_bias, tangent_forward_with_bias) and sums its gradient in the
/// activation's backward pass and that pass's tangent (backward_with_bias_gradient,
/// tangent_backward_with_bias_gradient): one pass over the output instead of two, and on a
/// device one kernel instead of two, with the same arithmetic in the same order.
#include "bilevel/learners/activation.hpp"
#include "bilevel/learners/layers/detail/bias_rows.hpp"
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

  void forward(const vector&, const matrix& x, std::size_t, matrix& y, layer_cache<P>&) const {
    with_value_map([&](auto sigma) { P::transform(x, y, sigma); });
  }
  void backward(const vector&, const matrix& x, const matrix& g, std::size_t, const layer_cache<P>&, matrix* gx,
                vector&) const {
    if (gx) with_slope_product([&](auto slope) { P::transform(g, x, *gx, slope); });
  }
  void tangent_forward(const vector&, const vector&, const matrix& x, const matrix* x_dot, std::size_t,
                       const layer_cache<P>&, matrix& y_dot) const {
    if (!x_dot) {
      y_dot = P::matrix_zeros(P::rows(x), P::cols(x));
      return;
    }
    with_slope_product([&](auto slope) { P::transform(*x_dot, x, y_dot, slope); });
  }
  /// x += b (params' segment at offset), then y = σ(x): forward() of the biased input.
  void forward_with_bias(const vector& params, std::size_t offset, matrix& x, matrix& y) const {
    with_value_map([&](auto sigma) { detail::add_bias_row_then_map<P>(params, offset, x, y, sigma); });
  }
  /// ẋ += v_b (v's segment at offset), then ẏ = σ'(x) ⊙ ẋ: tangent_forward() of the biased
  /// input's tangent, x the biased input.
  void tangent_forward_with_bias(const vector& v, std::size_t offset, const matrix& x, matrix& x_dot,
                                 matrix& y_dot) const {
    with_slope_product([&](auto slope) { detail::add_bias_row_then_map<P>(v, offset, x_dot, y_dot, slope, x); });
  }
  /// ġ_in = ġ_out ⊙ σ'(x) + g_out ⊙ σ''(x) ⊙ ẋ.
  void tangent_backward(const vector&, const vector&, const matrix& x, const matrix* x_dot, const matrix& g,
                        const matrix& g_dot, std::size_t, const layer_cache<P>&, matrix* gx_dot, vector&) const {
    if (gx_dot) tangent_adjoint(x, x_dot, g, g_dot, *gx_dot);
  }
  /// backward() with the bias gradient of the layer before (grad's segment at offset):
  /// gx = g ⊙ σ'(x) and grad_b = Σ_rows gx in one pass where the policy has the primitive
  /// (detail::map_then_bias_gradient_into).
  void backward_with_bias_gradient(const matrix& x, const matrix& g, matrix& gx, vector& grad,
                                   std::size_t offset) const {
    with_slope_product([&](auto slope) { detail::map_then_bias_gradient_into<P>(gx, grad, offset, slope, g, x); });
  }
  /// tangent_backward() with the tangent of that bias gradient: ġx = ġ ⊙ σ'(x) + g ⊙ σ''(x) ⊙ ẋ
  /// and ġrad_b = Σ_rows ġx, one pass on a policy with the primitive, the σ'' term included.
  void tangent_backward_with_bias_gradient(const matrix& x, const matrix& x_dot, const matrix& g,
                                           const matrix& g_dot, matrix& gx_dot, vector& grad_dot,
                                           std::size_t offset) const {
    if (!curved()) {
      with_slope_product(
          [&](auto slope) { detail::map_then_bias_gradient_into<P>(gx_dot, grad_dot, offset, slope, g_dot, x); });
    } else if constexpr (fused_bias_gradients<P>) {
      P::map_column_sums_into_segment(gx_dot, grad_dot, offset, activation_tangent_adjoint{kind}, g_dot, x, g, x_dot);
    } else {
      tangent_adjoint(x, &x_dot, g, g_dot, gx_dot);
      detail::bias_gradient_into<P>(gx_dot, offset, grad_dot);
    }
  }

 private:
  /// Whether σ'' is nonzero (tanh, logistic): piecewise linear activations have no σ'' term.
  [[nodiscard]] bool curved() const { return kind == activation::tanh || kind == activation::sigmoid; }
  /// ġx = ġ ⊙ σ'(x), plus g ⊙ σ''(x) ⊙ ẋ where σ'' is nonzero and ẋ given, composed: the slope
  /// product, then the σ'' term's three operations and its sum.
  void tangent_adjoint(const matrix& x, const matrix* x_dot, const matrix& g, const matrix& g_dot,
                       matrix& gx_dot) const {
    with_slope_product([&](auto slope) { P::transform(g_dot, x, gx_dot, slope); });
    if (!x_dot || !curved()) return;
    matrix curv, t;
    P::transform(x, curv, activation_curvature{kind});
    P::hadamard(g, curv, t);
    P::hadamard(t, *x_dot, curv);
    P::axpy(scalar(1), curv, gx_dot);
  }
  // The ReLU (the common case) gets its own functors, whose loops vectorise (activation.hpp);
  // every kind takes a ⊙ σ'(x) in one pass (a slope product) rather than a slope matrix and
  // then a product.
  template <class F>
  void with_value_map(F&& f) const {
    if (kind == activation::relu) f(relu_value{});
    else f(activation_value{kind});
  }
  template <class F>
  void with_slope_product(F&& f) const {
    if (kind == activation::relu) f(relu_slope_product{});
    else f(activation_slope_product{kind});
  }
};

}  // namespace bilevel::learners
