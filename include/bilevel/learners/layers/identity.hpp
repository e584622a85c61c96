// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// The identity and the zero operation, DARTS's `skip_connect` (stride 1) and `none`. The
/// zero operation may reduce (stride 2): its output has the strided shape and is zero, so a
/// mixed operation can weigh it against other reducing candidates.
#include <cstddef>
#include <stdexcept>

#include "bilevel/learners/layers/layer_concept.hpp"

namespace bilevel::learners {

template <nn_tensor_policy P>
struct identity_layer {
  using matrix = typename P::matrix;
  using vector = vector_t<P>;
  struct cache {};
  geometry shape;

  explicit identity_layer(geometry g) : shape(g) {}
  [[nodiscard]] geometry input_shape() const { return shape; }
  [[nodiscard]] geometry output_shape() const { return shape; }
  [[nodiscard]] std::size_t num_parameters() const { return 0; }
  void forward(const pass_context<P>&, const matrix& x, matrix& y, cache&) const { y = x; }
  void backward(const pass_context<P>&, const matrix&, const matrix& g, cache&, matrix* gx, vector&) const {
    if (gx) *gx = g;
  }
  void tangent_forward(const tangent_context<P>&, const matrix& x, const matrix* x_dot, cache&, matrix& y_dot) const {
    y_dot = x_dot ? *x_dot : P::matrix_zeros(P::rows(x), P::cols(x));
  }
  void tangent_backward(const tangent_context<P>&, const matrix&, const matrix*, const matrix&, const matrix& g_dot,
                        cache&, matrix* gx_dot, vector&) const {
    if (gx_dot) *gx_dot = g_dot;
  }
};

template <nn_tensor_policy P>
struct zero_layer {
  using matrix = typename P::matrix;
  using vector = vector_t<P>;
  struct cache {};
  geometry in, out;

  /// Zero of the shape a stride-`stride` operation gives ((h − 1)/stride + 1 each way).
  explicit zero_layer(geometry input, std::size_t stride = 1) : in(input) {
    if (stride == 0) throw std::invalid_argument("bilevel::learners::zero_layer: stride must be >= 1");
    out = {(input.height - 1) / stride + 1, (input.width - 1) / stride + 1, input.channels};
  }
  [[nodiscard]] geometry input_shape() const { return in; }
  [[nodiscard]] geometry output_shape() const { return out; }
  [[nodiscard]] std::size_t num_parameters() const { return 0; }
  void forward(const pass_context<P>& p, const matrix&, matrix& y, cache&) const { y = zeros(p.batch); }
  void backward(const pass_context<P>&, const matrix& x, const matrix&, cache&, matrix* gx, vector&) const {
    if (gx) *gx = P::matrix_zeros(P::rows(x), P::cols(x));
  }
  void tangent_forward(const tangent_context<P>& t, const matrix&, const matrix*, cache&, matrix& y_dot) const {
    y_dot = zeros(t.batch);
  }
  void tangent_backward(const tangent_context<P>&, const matrix& x, const matrix*, const matrix&, const matrix&,
                        cache&, matrix* gx_dot, vector&) const {
    if (gx_dot) *gx_dot = P::matrix_zeros(P::rows(x), P::cols(x));
  }

 private:
  matrix zeros(std::size_t batch) const { return P::matrix_zeros(batch * out.pixels(), out.channels); }
};

}  // namespace bilevel::learners
