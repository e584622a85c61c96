// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// shortcut_a<P>: the parameter-free shortcut of the CIFAR ResNets (He et al. 2016, option A,
/// which the Meta-Weight-Net and L2RW code use): subsample the pixels by a stride and place
/// the input's channels in the middle of a wider output, the other channels zero
/// (PyTorch: F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, pad, pad))). A linear map, a gather and its
/// adjoint scatter, so its tangent passes are the map itself.
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "bilevel/learners/layers/layer_concept.hpp"

namespace bilevel::learners {

template <nn_tensor_policy P>
struct shortcut_a {
  using matrix = typename P::matrix;
  using vector = vector_t<P>;
  struct cache {};
  geometry in, out;

  shortcut_a(geometry input, std::size_t channels, std::size_t stride) : in(input) {
    if (stride == 0 || channels < input.channels || (channels - input.channels) % 2 != 0)
      throw std::invalid_argument("bilevel::learners::shortcut_a: from " + std::to_string(input.channels) + " to " +
                                  std::to_string(channels) + " channels at stride " + std::to_string(stride) +
                                  "; the stride must be >= 1 and the added channels even");
    out = {(input.height - 1) / stride + 1, (input.width - 1) / stride + 1, channels};
    const std::size_t pad = (channels - input.channels) / 2;
    index_.assign(out.features(), -1);
    for (std::size_t oh = 0; oh < out.height; ++oh)
      for (std::size_t ow = 0; ow < out.width; ++ow)
        for (std::size_t c = 0; c < input.channels; ++c)
          index_[(oh * out.width + ow) * channels + pad + c] =
              std::int64_t(((oh * stride) * input.width + ow * stride) * input.channels + c);
  }
  [[nodiscard]] geometry input_shape() const { return in; }
  [[nodiscard]] geometry output_shape() const { return out; }
  [[nodiscard]] std::size_t num_parameters() const { return 0; }

  void forward(const pass_context<P>& p, const matrix& x, matrix& y, cache&) const { apply(x, p.batch, y); }
  void backward(const pass_context<P>& p, const matrix& x, const matrix& g, cache&, matrix* gx, vector&) const {
    if (gx) adjoint(g, x, p.batch, *gx);
  }
  void tangent_forward(const tangent_context<P>& t, const matrix& x, const matrix* x_dot, cache&,
                       matrix& y_dot) const {
    if (x_dot) apply(*x_dot, t.batch, y_dot);
    else y_dot = P::matrix_zeros(t.batch * out.pixels(), out.channels);
    (void)x;
  }
  void tangent_backward(const tangent_context<P>& t, const matrix& x, const matrix*, const matrix&,
                        const matrix& g_dot, cache&, matrix* gx_dot, vector&) const {
    if (gx_dot) adjoint(g_dot, x, t.batch, *gx_dot);
  }

 private:
  void apply(const matrix& x, std::size_t batch, matrix& y) const {
    P::gather_per_sample(x, index_, batch, out.pixels(), out.channels, y);
  }
  void adjoint(const matrix& g, const matrix& x, std::size_t batch, matrix& gx) const {
    gx = P::matrix_zeros(P::rows(x), P::cols(x));
    P::scatter_add_per_sample(g, index_, batch, gx);
  }
  std::vector<std::int64_t> index_;  ///< one sample's map: output element → input element or −1
};

}  // namespace bilevel::learners
