// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// Pooling layers of the open layer concept (layer_concept.hpp):
///
///   pool<P>             max or average pooling over k × k windows with a stride and zero
///                       padding, per channel, as PyTorch's MaxPool2d / AvgPool2d (floor
///                       mode): the output is (H + 2p − k)/s + 1 each way. DARTS's
///                       max_pool_3x3 and avg_pool_3x3 are k = 3, p = 1, s = 1 or 2.
///   global_avg_pool<P>  the mean over the H · W pixels of each sample and channel, giving
///                       1 × 1 × C (the head of ResNets and of the DARTS networks).
///
/// Both kinds read their windows through one sample's map (the same for every sample, so for
/// any batch size). Max pooling hands a map of input pixels per output pixel and window slot
/// to the policy's window_max primitives (core/tensor_policy.hpp), which find each window's
/// maximum in place; average pooling gathers its windows into a
/// (batch · H_out · W_out · C) × (k · k) matrix, as in pool2d.hpp, and sums its rows.
///
/// Padding. As PyTorch requires, p <= k/2, so every window holds at least one input element.
///   - Max pooling treats the padding as −∞: a padded slot is never selected. Of equal
///     maxima, the first in window order (row by row) is taken.
///   - Average pooling excludes the padding from the count (PyTorch's count_include_pad =
///     False, which DARTS uses): padded slots read 0, and each output is divided by its
///     number of real elements. The factors depend on the output pixel only, so they are one
///     sample's vector, applied to the outputs laid out batch × (H_out · W_out · C).
///
/// Derivatives. Average pooling and global average pooling are linear: their tangent passes
/// are the maps themselves, and the tangent of the adjoint is the adjoint of the tangent.
/// Max pooling routes backward and both tangent passes through the element each output
/// selected, which is exact wherever the window's maximum is unique (almost everywhere): the
/// adjoint adds each output's adjoint onto that element, the tangent reads that element's
/// tangent. The selection is one index per output (its position in the batch's input: 8
/// bytes, where a one-hot row over the window would be k·k scalars), kept from the value
/// pass whether or not the network keeps its adjoints, since finding it again would cost a
/// second pass over every window. None of these layers has parameters.
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "bilevel/learners/layers/layer_concept.hpp"
#include "bilevel/learners/layers/pool2d.hpp"  // enum class pooling

namespace bilevel::learners {

template <nn_tensor_policy P>
struct pool {
  using matrix = typename P::matrix;
  using vector = vector_t<P>;
  using scalar = scalar_t<P>;
  struct cache {
    typename P::index_vector argmax;  ///< max pooling: the input element each output took (see above)
    vector inverse_count;   ///< average pooling with padding: 1 / (real elements) per output of a sample
  };
  geometry in, out;
  pooling kind;
  std::size_t kernel, stride, padding;

  /// Throws std::invalid_argument for a zero kernel or stride, padding > kernel/2, or a
  /// window larger than the padded input.
  pool(geometry input, pooling p, std::size_t k, std::size_t s, std::size_t pad = 0)
      : in(input), kind(p), kernel(k), stride(s), padding(pad) {
    const std::string who = "bilevel::learners::pool: ";
    if (k == 0 || s == 0) throw std::invalid_argument(who + "kernel and stride must be >= 1");
    if (input.channels == 0) throw std::invalid_argument(who + "the input has no channels");
    if (2 * pad > k)
      throw std::invalid_argument(who + "padding " + std::to_string(pad) + " exceeds half the " + std::to_string(k) +
                                  "x" + std::to_string(k) + " window (as in PyTorch: pad <= kernel/2, so that every "
                                  "window holds an input element)");
    if (input.height + 2 * pad < k || input.width + 2 * pad < k)
      throw std::invalid_argument(who + "a " + std::to_string(k) + "x" + std::to_string(k) +
                                  " window does not fit a " + std::to_string(input.height) + "x" +
                                  std::to_string(input.width) + " input padded by " + std::to_string(pad));
    out = {(input.height + 2 * pad - k) / s + 1, (input.width + 2 * pad - k) / s + 1, input.channels};
    if (kind == pooling::max) {
      build_window_pixels();
    } else {
      build_maps();
      broadcast_index_.assign(k * k, 0);
    }
  }
  [[nodiscard]] geometry input_shape() const { return in; }
  [[nodiscard]] geometry output_shape() const { return out; }
  [[nodiscard]] std::size_t num_parameters() const { return 0; }

  void forward(const pass_context<P>& p, const matrix& x, matrix& y, cache& c) const {
    if (kind == pooling::max) {
      P::window_max_per_sample(x, window_pixels_, p.batch, kernel * kernel, y, c.argmax);
      return;
    }
    workspace& w = scratch();
    P::gather_per_sample(x, index_, p.batch, out.features(), kernel * kernel, w.cols);
    P::row_sums(w.cols, w.v);
    to_rows(w.v, p.batch, c, y);
  }
  void backward(const pass_context<P>& p, const matrix& x, const matrix& g, cache& c, matrix* gx, vector&) const {
    if (gx) adjoint(g, x, p.batch, c, *gx);
  }
  void tangent_forward(const tangent_context<P>& t, const matrix&, const matrix* x_dot, cache& c,
                       matrix& y_dot) const {
    if (!x_dot) {
      y_dot = P::matrix_zeros(t.batch * out.pixels(), out.channels);
      return;
    }
    if (kind == pooling::max) {
      P::window_max_tangent(*x_dot, selection(t.batch, c), y_dot);  // the selected element's tangent
      return;
    }
    matrix w;
    vector v;
    P::gather_per_sample(*x_dot, index_, t.batch, out.features(), kernel * kernel, w);
    P::row_sums(w, v);
    to_rows(v, t.batch, c, y_dot);
  }
  /// Linear given the selection: the tangent of the adjoint is the adjoint of ġ.
  void tangent_backward(const tangent_context<P>& t, const matrix& x, const matrix*, const matrix&,
                        const matrix& g_dot, cache& c, matrix* gx_dot, vector&) const {
    if (gx_dot) adjoint(g_dot, x, t.batch, c, *gx_dot);
  }

 private:
  /// Average pooling's per-output sums v, ordered as the output's elements, as the
  /// (batch · pixels) × C output, divided by the window's real elements.
  void to_rows(const vector& v, std::size_t batch, cache& c, matrix& y) const {
    if (uniform_) {
      P::reshape(v, batch * out.pixels(), out.channels, y);
      P::scale(y, scalar(1.0 / double(kernel * kernel)));
    } else {
      P::reshape(v, batch, out.features(), y);
      P::scale_columns(y, inverse_count(c));
      P::reshape(y, batch * out.pixels(), out.channels, y);
    }
  }
  /// The (linear) adjoint of the pooling map (at the cached selection for max pooling): each
  /// output's adjoint onto the element it selected (max pooling), or spread evenly over its
  /// window's real elements and scattered back to the input (average pooling, whose padded
  /// slots are dropped).
  void adjoint(const matrix& g, const matrix& x, std::size_t batch, cache& c, matrix& gx) const {
    if (kind == pooling::max) {
      const auto& argmax = selection(batch, c);
      gx = P::matrix_zeros(P::rows(x), P::cols(x));
      P::window_max_adjoint_per_sample(g, window_pixels_, batch, kernel * kernel, argmax, gx);
      return;
    }
    const std::size_t kk = kernel * kernel, outputs = batch * out.features();
    workspace& w = scratch();
    matrix g_col;
    matrix& spread = w.spread;
    if (!uniform_) {
      P::reshape(g, batch, out.features(), g_col);
      P::scale_columns(g_col, inverse_count(c));
      P::reshape(g_col, outputs, 1, g_col);
    } else {
      P::reshape(g, outputs, 1, g_col);
    }
    // Each output's adjoint copied across its window: a per-sample gather with one-element
    // "samples" and a map that reads element 0 k·k times.
    P::gather_per_sample(g_col, broadcast_index_, outputs, 1, kk, spread);
    if (uniform_) P::scale(spread, scalar(1.0 / double(kk)));
    gx = P::matrix_zeros(P::rows(x), P::cols(x));
    P::scatter_add_per_sample(spread, index_, batch, gx);
  }
  /// Max pooling's selection, kept by the value pass; the derivative passes run after it on
  /// the same cache, so a selection of another batch size is a caller's error.
  const typename P::index_vector& selection(std::size_t batch, const cache& c) const {
    if (c.argmax.size() != batch * out.features())
      throw std::logic_error("bilevel::learners::pool: max pooling's backward and tangent passes need the value "
                             "pass of the same batch on the same cache first");
    return c.argmax;
  }
  /// Batch-sized temporaries (window matrices are k·k times the output), one set per thread
  /// for every pooling layer, so that a pass neither keeps them nor allocates them afresh.
  struct workspace {
    matrix cols, spread;
    vector v;
  };
  static workspace& scratch() {
    thread_local workspace w;
    return w;
  }
  /// One sample's 1 / (real elements) per output, made once per cache (the same for every batch).
  const vector& inverse_count(cache& c) const {
    if (P::size(c.inverse_count) != inverse_count_.size()) c.inverse_count = P::from_host(inverse_count_);
    return c.inverse_count;
  }
  /// Max pooling's map: output pixel q = oh·W_out + ow, window slot j = kh·k + kw, reads the
  /// sample's pixel ih·W_in + iw with ih = oh·s + kh − p, iw = ow·s + kw − p (−1: padding).
  void build_window_pixels() {
    const std::size_t kk = kernel * kernel;
    window_pixels_.assign(out.pixels() * kk, -1);
    for (std::size_t oh = 0, q = 0; oh < out.height; ++oh)
      for (std::size_t ow = 0; ow < out.width; ++ow, ++q)
        for (std::size_t kh = 0; kh < kernel; ++kh)
          for (std::size_t kw = 0; kw < kernel; ++kw) {
            const std::size_t ih = oh * stride + kh, iw = ow * stride + kw;  // + p: padded coordinates
            if (ih < padding || iw < padding || ih - padding >= in.height || iw - padding >= in.width) continue;
            window_pixels_[q * kk + kh * kernel + kw] = std::int64_t((ih - padding) * in.width + (iw - padding));
          }
  }
  /// Average pooling's window index: output element r = (oh·W_out + ow)·C + c, window slot
  /// j = kh·k + kw, reads the sample's element (ih·W_in + iw)·C + c with ih = oh·s + kh − p,
  /// iw = ow·s + kw − p; a padded slot reads −1 (zero).
  void build_maps() {
    const std::size_t kk = kernel * kernel;
    index_.assign(out.features() * kk, -1);
    inverse_count_.assign(out.features(), scalar(0));
    uniform_ = true;
    std::size_t r = 0;
    for (std::size_t oh = 0; oh < out.height; ++oh)
      for (std::size_t ow = 0; ow < out.width; ++ow)
        for (std::size_t ch = 0; ch < in.channels; ++ch, ++r) {
          std::int64_t* w = index_.data() + r * kk;
          std::size_t real = 0;
          for (std::size_t kh = 0; kh < kernel; ++kh)
            for (std::size_t kw = 0; kw < kernel; ++kw) {
              const std::size_t ih = oh * stride + kh, iw = ow * stride + kw;  // + p: padded coordinates
              if (ih < padding || iw < padding || ih - padding >= in.height || iw - padding >= in.width) continue;
              const auto e = std::int64_t(((ih - padding) * in.width + (iw - padding)) * in.channels + ch);
              w[kh * kernel + kw] = e;
              ++real;
            }
          // padding <= k/2 leaves a real element in every window (see the constructor)
          inverse_count_[r] = scalar(1.0 / double(real));
          if (real != kk) uniform_ = false;
        }
  }
  std::vector<std::int64_t> window_pixels_;    ///< max pooling: build_window_pixels(), at construction
  std::vector<std::int64_t> index_;            ///< average pooling: build_maps(), at construction
  std::vector<std::int64_t> broadcast_index_;  ///< average pooling: k·k zeros (see adjoint)
  std::vector<scalar> inverse_count_;          ///< one sample's 1 / (real elements) per output
  bool uniform_ = true;                        ///< every window lies inside the input (no padded slot)
};

template <nn_tensor_policy P>
struct global_avg_pool {
  using matrix = typename P::matrix;
  using vector = vector_t<P>;
  using scalar = scalar_t<P>;
  struct cache {};
  geometry in, out;

  explicit global_avg_pool(geometry input) : in(input), out{1, 1, input.channels} {
    if (input.pixels() == 0 || input.channels == 0)
      throw std::invalid_argument("bilevel::learners::global_avg_pool: the input " + shape_text(input) + " is empty");
    const std::size_t hw = in.pixels(), ch = in.channels;
    sum_index_.resize(ch * hw);
    for (std::size_t c = 0; c < ch; ++c)
      for (std::size_t q = 0; q < hw; ++q) sum_index_[c * hw + q] = std::int64_t(q * ch + c);
    spread_index_.resize(hw * ch);
    for (std::size_t q = 0; q < hw; ++q)
      for (std::size_t c = 0; c < ch; ++c) spread_index_[q * ch + c] = std::int64_t(c);
  }
  [[nodiscard]] geometry input_shape() const { return in; }
  [[nodiscard]] geometry output_shape() const { return out; }
  [[nodiscard]] std::size_t num_parameters() const { return 0; }

  void forward(const pass_context<P>& p, const matrix& x, matrix& y, cache&) const { mean(x, p.batch, y); }
  void backward(const pass_context<P>& p, const matrix&, const matrix& g, cache&, matrix* gx, vector&) const {
    if (gx) spread(g, p.batch, *gx);
  }
  void tangent_forward(const tangent_context<P>& t, const matrix&, const matrix* x_dot, cache&, matrix& y_dot) const {
    if (x_dot) mean(*x_dot, t.batch, y_dot);
    else y_dot = P::matrix_zeros(t.batch, out.channels);
  }
  void tangent_backward(const tangent_context<P>& t, const matrix&, const matrix*, const matrix&, const matrix& g_dot,
                        cache&, matrix* gx_dot, vector&) const {
    if (gx_dot) spread(g_dot, t.batch, *gx_dot);
  }

 private:
  /// y (batch × C) = each sample's and channel's mean: its pixels gathered into a row, summed.
  void mean(const matrix& x, std::size_t batch, matrix& y) const {
    matrix rows;
    vector v;
    P::gather_per_sample(x, sum_index_, batch, in.channels, in.pixels(), rows);
    P::row_sums(rows, v);
    P::reshape(v, batch, in.channels, y);
    P::scale(y, scalar(1.0 / double(in.pixels())));
  }
  /// The adjoint: gx (batch · H · W) × C, every pixel of a sample and channel g's entry / (H·W).
  void spread(const matrix& g, std::size_t batch, matrix& gx) const {
    P::gather_per_sample(g, spread_index_, batch, in.pixels(), in.channels, gx);
    P::scale(gx, scalar(1.0 / double(in.pixels())));
  }
  std::vector<std::int64_t> sum_index_;     ///< row c of a sample, slot q: pixel q's channel c
  std::vector<std::int64_t> spread_index_;  ///< pixel q's channel c: the sample's mean of channel c
};

}  // namespace bilevel::learners
