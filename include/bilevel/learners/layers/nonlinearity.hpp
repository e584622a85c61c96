// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// nonlinearity<P>: an element-wise activation (ReLU, tanh, sigmoid, ...) as a layer of the
/// open layer concept; the passes are activation_layer's.
#include "bilevel/learners/layers/activation_layer.hpp"
#include "bilevel/learners/layers/layer_concept.hpp"

namespace bilevel::learners {

template <nn_tensor_policy P>
struct nonlinearity {
  using matrix = typename P::matrix;
  using vector = vector_t<P>;
  struct cache {};
  activation_layer<P> map;

  nonlinearity(geometry shape, activation kind) : map(shape, kind) {}
  [[nodiscard]] geometry input_shape() const { return map.in; }
  [[nodiscard]] geometry output_shape() const { return map.out; }
  [[nodiscard]] std::size_t num_parameters() const { return 0; }

  void forward(const pass_context<P>& p, const matrix& x, matrix& y, cache&) const {
    map.forward(p.theta, x, p.batch, y, unused_);
  }
  void backward(const pass_context<P>& p, const matrix& x, const matrix& g, cache&, matrix* gx, vector& grad) const {
    map.backward(p.theta, x, g, p.batch, unused_, gx, grad);
  }
  void tangent_forward(const tangent_context<P>& t, const matrix& x, const matrix* x_dot, cache&,
                       matrix& y_dot) const {
    map.tangent_forward(t.theta, t.v, x, x_dot, t.batch, unused_, y_dot);
  }
  void tangent_backward(const tangent_context<P>& t, const matrix& x, const matrix* x_dot, const matrix& g,
                        const matrix& g_dot, cache&, matrix* gx_dot, vector& grad_dot) const {
    map.tangent_backward(t.theta, t.v, x, x_dot, g, g_dot, t.batch, unused_, gx_dot, grad_dot);
  }

 private:
  inline static layer_cache<P> unused_{};  // activation_layer keeps nothing in it
};

}  // namespace bilevel::learners
