// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// Max and average pooling over k × k windows with a stride, per channel. Windows are
/// gathered into a (batch · H_out · W_out · C) × (k · k) matrix. Max pooling keeps, for each
/// output, the input element it selected (the first maximum); its backward and both tangent
/// passes route through that element, which is exact wherever the maximum is unique (almost
/// everywhere). Average pooling is linear.
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
  }
  [[nodiscard]] std::size_t num_parameters() const { return 0; }

  void forward(const vector&, const matrix& x, std::size_t batch, matrix& y, layer_cache<P>& c) const {
    const auto& idx = windows(batch);
    const std::size_t outputs = batch * out.features(), kk = kernel * kernel;
    P::gather(x, idx, outputs, kk, c.cols);
    vector v;
    if (kind == pooling::max) {
      std::vector<std::int64_t> arg;
      P::row_max(c.cols, v, arg);
      c.selected.resize(outputs);
      for (std::size_t r = 0; r < outputs; ++r) c.selected[r] = idx[r * kk + std::size_t(arg[r])];
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
    if (kind == pooling::max) {
      P::gather(*x_dot, c.selected, batch * out.pixels(), out.channels, y_dot);
    } else {
      matrix w;
      vector v;
      P::gather(*x_dot, windows(batch), batch * out.features(), kernel * kernel, w);
      P::row_sums(w, v);
      P::scale(v, scalar(1.0 / double(kernel * kernel)));
      to_rows(v, batch, y_dot);
    }
  }
  void tangent_backward(const vector&, const vector&, const matrix& x, const matrix*, const matrix&,
                        const matrix& g_dot, std::size_t batch, const layer_cache<P>& c, matrix* gx_dot,
                        vector&) const {
    if (gx_dot) adjoint(g_dot, x, batch, c, *gx_dot);  // linear given the selection: same map
  }

 private:
  /// The (linear) adjoint of the pooling map at the cached selection.
  void adjoint(const matrix& g, const matrix& x, std::size_t batch, const layer_cache<P>& c, matrix& gx) const {
    gx = P::matrix_zeros(P::rows(x), P::cols(x));
    if (kind == pooling::max) {
      P::scatter_add(g, c.selected, gx);
      return;
    }
    // every window element receives g / (k·k): spread each output's adjoint over its window
    const std::size_t kk = kernel * kernel, outputs = batch * out.features();
    matrix g_col, spread;
    P::reshape(g, outputs, 1, g_col);
    const std::vector<scalar> share(kk, scalar(1.0 / double(kk)));
    const matrix ones_row = P::matrix_from_host(1, kk, share);
    P::gemm(scalar(1), g_col, false, ones_row, false, scalar(0), spread);
    P::scatter_add(spread, windows(batch), gx);
  }
  /// A per-output vector (ordered as the output matrix's elements) as (batch · pixels) × C.
  void to_rows(const vector& v, std::size_t batch, matrix& y) const {
    P::reshape(v, batch * out.pixels(), out.channels, y);
  }
  /// Window index: output element r = ((b·H_out + oh)·W_out + ow)·C + c, window element
  /// j = kh·k + kw; computed once per batch size.
  const std::vector<std::int64_t>& windows(std::size_t batch) const {
    if (index_batch_ == batch) return index_;
    const std::size_t kk = kernel * kernel;
    index_.assign(batch * out.features() * kk, -1);
    std::size_t i = 0;
    for (std::size_t b = 0; b < batch; ++b)
      for (std::size_t oh = 0; oh < out.height; ++oh)
        for (std::size_t ow = 0; ow < out.width; ++ow)
          for (std::size_t ch = 0; ch < in.channels; ++ch)
            for (std::size_t kh = 0; kh < kernel; ++kh)
              for (std::size_t kw = 0; kw < kernel; ++kw, ++i)
                index_[i] = std::int64_t((((b * in.height + oh * stride + kh) * in.width) + ow * stride + kw) *
                                             in.channels + ch);
    index_batch_ = batch;
    return index_;
  }
  mutable std::vector<std::int64_t> index_;
  mutable std::size_t index_batch_ = 0;
};

}  // namespace bilevel::learners
