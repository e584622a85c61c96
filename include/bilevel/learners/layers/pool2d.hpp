// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// Max and average pooling over k × k windows with a stride, per channel. Windows are
/// gathered (through one sample's index map, the same for every sample) into a
/// (batch · H_out · W_out · C) × (k · k) matrix. Max pooling keeps, for each output, a one-hot
/// row marking the window element it selected (the first maximum); its backward and both
/// tangent passes route through that element, which is exact wherever the maximum is unique
/// (almost everywhere). The choice stays a matrix of the policy's, so a device back end never
/// brings it to the host. Average pooling is linear.
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "bilevel/learners/layers/layer.hpp"

namespace bilevel::learners {

enum class pooling { max, average };

template <nn_tensor_policy P>
struct pool2d_layer {
  using matrix = typename P::matrix;
  using vector = vector_t<P>;
  using scalar = scalar_t<P>;
  geometry in, out;
  pooling kind;
  std::size_t kernel, stride;

  pool2d_layer(geometry input, pooling p, std::size_t k, std::size_t s) : in(input), kind(p), kernel(k), stride(s) {
    if (k == 0 || s == 0) throw std::invalid_argument("bilevel::learners::pool2d_layer: kernel and stride must be >= 1");
    if (input.height < k || input.width < k)
      throw std::invalid_argument("bilevel::learners::pool2d_layer: a " + std::to_string(k) + "x" + std::to_string(k) +
                                  " window does not fit a " + std::to_string(input.height) + "x" +
                                  std::to_string(input.width) + " input");
    out = {(input.height - k) / s + 1, (input.width - k) / s + 1, input.channels};
    index_ = window_index();
    broadcast_index_.assign(k * k, 0);
  }
  [[nodiscard]] std::size_t num_parameters() const { return 0; }

  void forward(const vector&, const matrix& x, std::size_t batch, matrix& y, layer_cache<P>& c) const {
    const std::size_t kk = kernel * kernel;
    P::gather_per_sample(x, index_, batch, out.features(), kk, c.cols);
    vector v;
    if (kind == pooling::max) {
      P::row_max_onehot(c.cols, v, c.choice);
    } else {
      P::row_sums(c.cols, v);
      P::scale(v, scalar(1.0 / double(kk)));
    }
    to_rows(v, batch, y);
  }
  void backward(const vector&, const matrix& x, const matrix& g, std::size_t batch, const layer_cache<P>& c,
                matrix* gx, vector&) const {
    if (gx) adjoint(g, x, batch, c, *gx);
  }
  void tangent_forward(const vector&, const vector&, const matrix&, const matrix* x_dot, std::size_t batch,
                       const layer_cache<P>& c, matrix& y_dot) const {
    if (!x_dot) {
      y_dot = P::matrix_zeros(batch * out.pixels(), out.channels);
      return;
    }
    matrix w;
    vector v;
    P::gather_per_sample(*x_dot, index_, batch, out.features(), kernel * kernel, w);
    if (kind == pooling::max) {
      P::row_dots(w, c.choice, v);  // the selected element's tangent
    } else {
      P::row_sums(w, v);
      P::scale(v, scalar(1.0 / double(kernel * kernel)));
    }
    to_rows(v, batch, y_dot);
  }
  void tangent_backward(const vector&, const vector&, const matrix& x, const matrix*, const matrix&,
                        const matrix& g_dot, std::size_t batch, const layer_cache<P>& c, matrix* gx_dot,
                        vector&) const {
    if (gx_dot) adjoint(g_dot, x, batch, c, *gx_dot);  // linear given the selection: same map
  }

 private:
  /// The (linear) adjoint of the pooling map at the cached selection: each output's adjoint
  /// spread over its window (onto the selected element for max pooling, evenly for average
  /// pooling), then scattered back to the input.
  void adjoint(const matrix& g, const matrix& x, std::size_t batch, const layer_cache<P>& c, matrix& gx) const {
    const std::size_t kk = kernel * kernel, outputs = batch * out.features();
    matrix g_col, spread;
    P::reshape(g, outputs, 1, g_col);  // g's elements in output order
    // Each output's adjoint copied across its window: a per-sample gather with one-element
    // "samples" and a map that reads element 0 k·k times.
    P::gather_per_sample(g_col, broadcast_index_, outputs, 1, kk, spread);
    if (kind == pooling::max) P::hadamard(spread, c.choice, spread);
    else P::scale(spread, scalar(1.0 / double(kk)));
    gx = P::matrix_zeros(P::rows(x), P::cols(x));
    P::scatter_add_per_sample(spread, index_, batch, gx);
  }
  /// A per-output vector (ordered as the output matrix's elements) as (batch · pixels) × C.
  void to_rows(const vector& v, std::size_t batch, matrix& y) const {
    P::reshape(v, batch * out.pixels(), out.channels, y);
  }
  /// One sample's window index (the same for every sample, so for any batch size): output
  /// element r = (oh·W_out + ow)·C + c of the sample, window element j = kh·k + kw, reads the
  /// sample's element ((oh·s + kh)·W_in + ow·s + kw)·C + c.
  [[nodiscard]] std::vector<std::int64_t> window_index() const {
    const std::size_t kk = kernel * kernel;
    std::vector<std::int64_t> idx(out.features() * kk, -1);
    std::size_t i = 0;
    for (std::size_t oh = 0; oh < out.height; ++oh)
      for (std::size_t ow = 0; ow < out.width; ++ow)
        for (std::size_t ch = 0; ch < in.channels; ++ch)
          for (std::size_t kh = 0; kh < kernel; ++kh)
            for (std::size_t kw = 0; kw < kernel; ++kw, ++i)
              idx[i] = std::int64_t((((oh * stride + kh) * in.width) + ow * stride + kw) * in.channels + ch);
    return idx;
  }
  std::vector<std::int64_t> index_;            ///< window_index(), computed at construction
  std::vector<std::int64_t> broadcast_index_;  ///< k·k zeros (see adjoint)
};

}  // namespace bilevel::learners
