// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// Flatten: (batch · H · W) × C becomes batch × (H · W · C), the same elements in the same
/// order, so every pass is a reshape.
#include "bilevel/learners/layers/layer.hpp"

namespace bilevel::learners {

template <nn_tensor_policy P>
struct flatten_layer {
  using matrix = typename P::matrix;
  using vector = vector_t<P>;
  geometry in, out;

  explicit flatten_layer(geometry input) : in(input), out{1, 1, input.features()} {}
  [[nodiscard]] std::size_t num_parameters() const { return 0; }

  void forward(const vector&, const matrix& x, std::size_t batch, matrix& y, layer_cache<P>&) const {
    P::reshape(x, batch, out.channels, y);
  }
  void backward(const vector&, const matrix&, const matrix& g, std::size_t batch, const layer_cache<P>&, matrix* gx,
                vector&) const {
    if (gx) P::reshape(g, batch * in.pixels(), in.channels, *gx);
  }
  void tangent_forward(const vector&, const vector&, const matrix&, const matrix* x_dot, std::size_t batch,
                       const layer_cache<P>&, matrix& y_dot) const {
    if (x_dot) P::reshape(*x_dot, batch, out.channels, y_dot);
    else y_dot = P::matrix_zeros(batch, out.channels);
  }
  void tangent_backward(const vector&, const vector&, const matrix&, const matrix*, const matrix&,
                        const matrix& g_dot, std::size_t batch, const layer_cache<P>&, matrix* gx_dot,
                        vector&) const {
    if (gx_dot) P::reshape(g_dot, batch * in.pixels(), in.channels, *gx_dot);
  }
};

}  // namespace bilevel::learners
