// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// 2-D convolution with stride and zero padding, by im2col: the patches of every output
/// pixel are gathered (through one sample's index map, the same for every sample) into a
/// (batch · H_out · W_out) × (k · k · C_in) matrix (zeros where the
/// window overhangs the padding), and the layer is then the affine map of a dense layer on
/// them, W being (k · k · C_in) × C_out. Gather and its adjoint scatter-add are linear, so
/// the R-operator passes through them unchanged.
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "bilevel/learners/layers/affine.hpp"

namespace bilevel::learners {

template <nn_tensor_policy P>
struct conv2d_layer {
  using matrix = typename P::matrix;
  using vector = vector_t<P>;
  geometry in, out;
  std::size_t kernel, stride, padding;
  detail::affine_map<P> map;

  conv2d_layer(geometry input, std::size_t channels, std::size_t k, std::size_t s, std::size_t pad, std::size_t offset)
      : in(input), kernel(k), stride(s), padding(pad) {
    if (k == 0 || s == 0 || channels == 0)
      throw std::invalid_argument("bilevel::learners::conv2d_layer: kernel, stride and channels must be >= 1");
    if (input.height + 2 * pad < k || input.width + 2 * pad < k)
      throw std::invalid_argument("bilevel::learners::conv2d_layer: a " + std::to_string(k) + "x" + std::to_string(k) +
                                  " kernel does not fit a " + std::to_string(input.height) + "x" +
                                  std::to_string(input.width) + " input padded by " + std::to_string(pad));
    out = {(input.height + 2 * pad - k) / s + 1, (input.width + 2 * pad - k) / s + 1, channels};
    map = {k * k * input.channels, channels, offset};
    index_ = patch_index();
  }
  [[nodiscard]] std::size_t num_parameters() const { return map.num_parameters(); }

  void forward(const vector& theta, const matrix& x, std::size_t batch, matrix& y, layer_cache<P>& c,
               bool with_bias = true) const {
    P::gather_per_sample(x, index_, batch, out.pixels(), map.fan_in, c.cols);
    map.forward(theta, c.cols, y, with_bias);
  }
  void backward(const vector& theta, const matrix& x, const matrix& g, std::size_t batch, const layer_cache<P>& c,
                matrix* gx, vector& grad, bool with_bias = true) const {
    matrix dcols;
    map.backward(theta, c.cols, g, gx ? &dcols : nullptr, grad, with_bias);
    if (gx) col2im(dcols, x, batch, *gx);
  }
  void tangent_forward(const vector& theta, const vector& v, const matrix&, const matrix* x_dot, std::size_t batch,
                       const layer_cache<P>& c, matrix& y_dot, bool with_bias = true) const {
    matrix cols_dot;
    if (x_dot) P::gather_per_sample(*x_dot, index_, batch, out.pixels(), map.fan_in, cols_dot);
    map.tangent_forward(theta, v, c.cols, x_dot ? &cols_dot : nullptr, y_dot, with_bias);
  }
  void tangent_backward(const vector& theta, const vector& v, const matrix& x, const matrix* x_dot, const matrix& g,
                        const matrix& g_dot, std::size_t batch, const layer_cache<P>& c, matrix* gx_dot,
                        vector& grad_dot, bool with_bias = true) const {
    matrix cols_dot, dcols_dot;
    if (x_dot) P::gather_per_sample(*x_dot, index_, batch, out.pixels(), map.fan_in, cols_dot);
    map.tangent_backward(theta, v, c.cols, x_dot ? &cols_dot : nullptr, g, g_dot, gx_dot ? &dcols_dot : nullptr,
                         grad_dot, with_bias);
    if (gx_dot) col2im(dcols_dot, x, batch, *gx_dot);
  }

 private:
  void col2im(const matrix& dcols, const matrix& x, std::size_t batch, matrix& gx) const {
    gx = P::matrix_zeros(P::rows(x), P::cols(x));
    P::scatter_add_per_sample(dcols, index_, batch, gx);
  }
  /// One sample's im2col index (the same for every sample, so for any batch size): patch row
  /// oh·W_out + ow, column (kh·k + kw)·C_in + ci reads the sample's element
  /// (ih·W_in + iw)·C_in + ci, or −1 (zero padding).
  [[nodiscard]] std::vector<std::int64_t> patch_index() const {
    std::vector<std::int64_t> idx(out.pixels() * map.fan_in, -1);
    std::size_t i = 0;
    for (std::size_t oh = 0; oh < out.height; ++oh)
      for (std::size_t ow = 0; ow < out.width; ++ow)
        for (std::size_t kh = 0; kh < kernel; ++kh)
          for (std::size_t kw = 0; kw < kernel; ++kw)
            for (std::size_t ci = 0; ci < in.channels; ++ci, ++i) {
              const auto ih = std::int64_t(oh * stride + kh) - std::int64_t(padding);
              const auto iw = std::int64_t(ow * stride + kw) - std::int64_t(padding);
              if (ih < 0 || iw < 0 || ih >= std::int64_t(in.height) || iw >= std::int64_t(in.width)) continue;
              idx[i] = (ih * std::int64_t(in.width) + iw) * std::int64_t(in.channels) + std::int64_t(ci);
            }
    return idx;
  }
  std::vector<std::int64_t> index_;  ///< patch_index(), computed at construction
};

}  // namespace bilevel::learners
