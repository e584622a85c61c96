// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// convolution<P>: a 2-D convolution (stride, zero padding, dilation, groups, optional bias)
/// as a layer of the open layer concept (layer_concept.hpp).
///
/// It is computed by im2col, as conv2d_layer: one sample's index map (the same for every
/// sample, so for any batch size) gathers the patches of every output pixel into a
/// (batch · H_out · W_out) × (k · k · C_in) matrix, zero where a window overhangs the padding,
/// and the layer is then an affine map of the patches; col2im is the index map's adjoint
/// scatter-add. With groups, the patch columns are ordered group-major, (group, kh, kw,
/// channel in the group), so that group g's patches are the contiguous column block
/// [g · F, (g + 1) · F), F = k · k · C_in / groups, and group g's output channels
/// [g · C_g, (g + 1) · C_g), C_g = C_out / groups, are that block times its own F × C_g
/// weight block (P::columns, P::gemm_by_segment, P::set_columns; the transposed products for
/// the backward passes). With one group the order is (kh, kw, channel), conv2d_layer's, and no
/// column block is copied.
///
/// The map is bilinear in (θ, x) and gather/scatter are linear, so the tangent passes are the
/// affine map's (detail::affine_map) on the gathered patches and their tangents.
///
/// Depthwise convolutions (groups == C_in == C_out: DARTS's sep_conv and dil_conv, followed by
/// a bias-free 1x1 `linear`) take the same grouped path: C GEMVs of k · k weights each. A
/// specialised path (k · k `scale_columns` over (kh, kw, channel)-ordered blocks, one weight
/// row per kernel tap) would do k · k operations instead of C, but needs each tap's weights as a
/// contiguous row, which the per-group parameter layout does not give; the grouped path was
/// chosen because it is simpler and shares every pass with the dense case.
///
/// Parameters, at the layer's offset in θ: per group, its F × C_g row-major weight block (row
/// (kh · k + kw) · C_in/groups + c, column the output channel in the group), groups one after
/// another, then the bias (C_out entries) unless `bias` is false.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <random>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "bilevel/learners/layers/affine.hpp"
#include "bilevel/learners/layers/layer_concept.hpp"

namespace bilevel::learners {

/// A convolution's options, as PyTorch's nn.Conv2d names them (channels = out_channels). With
/// designated initializers the fields must be named in this declaration order, e.g.
/// `conv_options{.channels = 16, .kernel = 3, .stride = 2, .padding = 1, .bias = false}`.
struct conv_options {
  std::size_t channels = 0;  ///< output channels
  std::size_t kernel = 0;    ///< k: a k × k window
  std::size_t stride = 1;
  std::size_t padding = 0;   ///< zeros on each side
  std::size_t dilation = 1;  ///< spacing of the window's taps
  std::size_t groups = 1;    ///< divides both channel counts; groups == C_in == C_out is depthwise
  bool bias = true;
};

namespace detail {

/// A gather of per-sample patches (through an index map, -1 for a zero) followed by a
/// block-diagonal affine map: `groups` column blocks of `fan_in` patch columns, each times its
/// own fan_in × fan_out weight block, giving `groups` blocks of fan_out output columns, plus
/// an optional bias over all of them. Used by convolution and factorized_reduce.
template <nn_tensor_policy P>
struct grouped_patch_map {
  using matrix = typename P::matrix;
  using vector = vector_t<P>;
  using scalar = scalar_t<P>;

  std::vector<std::int64_t> index;  ///< one sample's patches: out_pixels rows × groups · fan_in columns
  std::size_t out_pixels = 0, groups = 1, fan_in = 0, fan_out = 0;
  bool bias = true;

  [[nodiscard]] std::size_t weights() const { return groups * fan_in * fan_out; }
  [[nodiscard]] std::size_t num_parameters() const { return weights() + (bias ? groups * fan_out : 0); }

  /// forward: the gathered patches, one matrix per group (one group: the whole patch matrix).
  struct cache {
    std::vector<matrix> blocks;
  };

  void forward(const pass_context<P>& p, const matrix& x, matrix& y, cache& c) const {
    gather(x, p.batch, c.blocks);
    assemble(P::rows(c.blocks[0]), fan_out, y, [&](std::size_t g, matrix& yg) {
      group(g, p.offset).forward(p.theta, c.blocks[g], yg);
    });
    add_bias(p.theta, p.offset, y);
  }

  void backward(const pass_context<P>& p, const matrix& x, const matrix& gy, const cache& c, matrix* gx,
                vector& grad) const {
    matrix dcols, tmp;
    assemble_if(gx != nullptr, P::rows(gy), fan_in, dcols, [&](std::size_t g, matrix* dg) {
      group(g, p.offset).backward(p.theta, c.blocks[g], part(gy, g, fan_out, tmp), dg, grad);
    });
    if (bias) {
      vector db;
      P::column_sums(gy, db);
      P::set_segment(db, grad, p.offset + weights());
    }
    if (gx) col2im(dcols, x, p.batch, *gx);
  }

  void tangent_forward(const tangent_context<P>& t, const matrix* x_dot, const cache& c, matrix& y_dot) const {
    std::vector<matrix> blocks_dot;
    if (x_dot) gather(*x_dot, t.batch, blocks_dot);
    assemble(P::rows(c.blocks[0]), fan_out, y_dot, [&](std::size_t g, matrix& yg) {
      group(g, t.offset).tangent_forward(t.theta, t.v, c.blocks[g], x_dot ? &blocks_dot[g] : nullptr, yg);
    });
    add_bias(t.v, t.offset, y_dot);
  }

  void tangent_backward(const tangent_context<P>& t, const matrix& x, const matrix* x_dot, const matrix& gy,
                        const matrix& gy_dot, const cache& c, matrix* gx_dot, vector& grad_dot) const {
    std::vector<matrix> blocks_dot;
    if (x_dot) gather(*x_dot, t.batch, blocks_dot);
    matrix dcols_dot, tmp, tmp_dot;
    assemble_if(gx_dot != nullptr, P::rows(gy), fan_in, dcols_dot, [&](std::size_t g, matrix* dg) {
      group(g, t.offset).tangent_backward(t.theta, t.v, c.blocks[g], x_dot ? &blocks_dot[g] : nullptr,
                                          part(gy, g, fan_out, tmp), part(gy_dot, g, fan_out, tmp_dot), dg,
                                          grad_dot);
    });
    if (bias) {
      vector db;
      P::column_sums(gy_dot, db);
      P::set_segment(db, grad_dot, t.offset + weights());
    }
    if (gx_dot) col2im(dcols_dot, x, t.batch, *gx_dot);
  }

 private:
  /// Group g's weights as a bias-free affine map at their place in θ.
  [[nodiscard]] affine_map<P> group(std::size_t g, std::size_t offset) const {
    return {fan_in, fan_out, offset + g * fan_in * fan_out, false};
  }
  /// Group g's column block of m (m itself for one group).
  const matrix& part(const matrix& m, std::size_t g, std::size_t width, matrix& tmp) const {
    if (groups == 1) return m;
    P::columns(m, g * width, width, tmp);
    return tmp;
  }
  void gather(const matrix& x, std::size_t batch, std::vector<matrix>& blocks) const {
    blocks.resize(groups);
    if (groups == 1) {
      P::gather_per_sample(x, index, batch, out_pixels, fan_in, blocks[0]);
      return;
    }
    matrix cols;
    P::gather_per_sample(x, index, batch, out_pixels, groups * fan_in, cols);
    for (std::size_t g = 0; g < groups; ++g) P::columns(cols, g * fan_in, fan_in, blocks[g]);
  }
  /// out = the groups' blocks side by side, block g (width columns) written by f(g, block).
  template <class F>
  void assemble(std::size_t rows, std::size_t width, matrix& out, F f) const {
    if (groups == 1) {
      f(0, out);
      return;
    }
    out = P::matrix_zeros(rows, groups * width);
    matrix block;
    for (std::size_t g = 0; g < groups; ++g) {
      f(g, block);
      P::set_columns(block, out, g * width);
    }
  }
  /// As assemble, when the output is wanted; f(g, nullptr) otherwise.
  template <class F>
  void assemble_if(bool wanted, std::size_t rows, std::size_t width, matrix& out, F f) const {
    if (!wanted) {
      for (std::size_t g = 0; g < groups; ++g) f(g, nullptr);
      return;
    }
    assemble(rows, width, out, [&](std::size_t g, matrix& block) { f(g, &block); });
  }
  void add_bias(const vector& params, std::size_t offset, matrix& y) const {
    if (!bias) return;
    vector b;
    P::segment(params, offset + weights(), groups * fan_out, b);
    P::add_row(y, b);
  }
  void col2im(const matrix& dcols, const matrix& x, std::size_t batch, matrix& gx) const {
    gx = P::matrix_zeros(P::rows(x), P::cols(x));
    P::scatter_add_per_sample(dcols, index, batch, gx);
  }
};

/// What convolution and factorized_reduce share: the shapes, a grouped_patch_map (which
/// the derived layer fills with its index), He-uniform initial weights and the map's passes.
template <nn_tensor_policy P>
struct patch_layer {
  using matrix = typename P::matrix;
  using vector = vector_t<P>;
  using scalar = scalar_t<P>;
  using cache = typename grouped_patch_map<P>::cache;

  geometry in, out;
  grouped_patch_map<P> map;

  [[nodiscard]] geometry input_shape() const { return in; }
  [[nodiscard]] geometry output_shape() const { return out; }
  [[nodiscard]] std::size_t num_parameters() const { return map.num_parameters(); }
  /// He-uniform weights (bound √(6 / fan_in), fan_in = one output's inputs), zero bias.
  void initialize(std::span<scalar> params, std::mt19937_64& gen) const {
    std::uniform_real_distribution<double> u(-1.0, 1.0);
    const double bound = std::sqrt(6.0 / double(map.fan_in));
    for (std::size_t i = 0; i < map.weights(); ++i) params[i] = scalar(bound * u(gen));
    for (std::size_t i = map.weights(); i < map.num_parameters(); ++i) params[i] = scalar(0);
  }

  void forward(const pass_context<P>& p, const matrix& x, matrix& y, cache& c) const { map.forward(p, x, y, c); }
  void backward(const pass_context<P>& p, const matrix& x, const matrix& g, cache& c, matrix* gx, vector& grad) const {
    map.backward(p, x, g, c, gx, grad);
  }
  void tangent_forward(const tangent_context<P>& t, const matrix&, const matrix* x_dot, cache& c,
                       matrix& y_dot) const {
    map.tangent_forward(t, x_dot, c, y_dot);
  }
  void tangent_backward(const tangent_context<P>& t, const matrix& x, const matrix* x_dot, const matrix& g,
                        const matrix& g_dot, cache& c, matrix* gx_dot, vector& grad_dot) const {
    map.tangent_backward(t, x, x_dot, g, g_dot, c, gx_dot, grad_dot);
  }
};

}  // namespace detail

template <nn_tensor_policy P>
struct convolution : detail::patch_layer<P> {
  using base = detail::patch_layer<P>;
  using base::in, base::out, base::map;
  conv_options options;

  /// Output size as PyTorch's: (H + 2p − d(k − 1) − 1) / s + 1 each way. Throws
  /// std::invalid_argument for a zero size, groups that do not divide both channel counts or a
  /// kernel that does not fit the padded input.
  convolution(geometry input, conv_options o) : options(o) {
    in = input;
    const std::string who = "bilevel::learners::convolution: ";
    if (input.height == 0 || input.width == 0 || input.channels == 0)
      throw std::invalid_argument(who + "the input " + shape_text(input) + " has a zero size");
    if (o.channels == 0) throw std::invalid_argument(who + "channels must be >= 1");
    if (o.kernel == 0) throw std::invalid_argument(who + "kernel must be >= 1");
    if (o.stride == 0) throw std::invalid_argument(who + "stride must be >= 1");
    if (o.dilation == 0) throw std::invalid_argument(who + "dilation must be >= 1");
    if (o.groups == 0) throw std::invalid_argument(who + "groups must be >= 1");
    if (input.channels % o.groups != 0 || o.channels % o.groups != 0)
      throw std::invalid_argument(who + std::to_string(o.groups) + " groups do not divide " +
                                  std::to_string(input.channels) + " input and " + std::to_string(o.channels) +
                                  " output channels");
    const std::size_t span = o.dilation * (o.kernel - 1) + 1;  // the window's extent
    if (input.height + 2 * o.padding < span || input.width + 2 * o.padding < span)
      throw std::invalid_argument(who + "a " + std::to_string(o.kernel) + "x" + std::to_string(o.kernel) +
                                  " kernel (dilation " + std::to_string(o.dilation) + ") does not fit a " +
                                  std::to_string(input.height) + "x" + std::to_string(input.width) +
                                  " input padded by " + std::to_string(o.padding));
    out = {(input.height + 2 * o.padding - span) / o.stride + 1, (input.width + 2 * o.padding - span) / o.stride + 1,
           o.channels};
    map.out_pixels = out.pixels();
    map.groups = o.groups;
    map.fan_in = o.kernel * o.kernel * (input.channels / o.groups);
    map.fan_out = o.channels / o.groups;
    map.bias = o.bias;
    map.index = patch_index();
  }

 private:
  /// One sample's im2col index: patch row oh · W_out + ow, column g · F + (kh · k + kw) · C_g,in + c
  /// reads the sample's element (ih · W_in + iw) · C_in + g · C_g,in + c, with
  /// ih = oh · s + kh · d − p (iw likewise), or −1 (zero padding).
  [[nodiscard]] std::vector<std::int64_t> patch_index() const {
    const std::size_t k = options.kernel, cg = in.channels / options.groups;
    std::vector<std::int64_t> idx(out.pixels() * map.groups * map.fan_in, -1);
    std::size_t i = 0;
    for (std::size_t oh = 0; oh < out.height; ++oh)
      for (std::size_t ow = 0; ow < out.width; ++ow)
        for (std::size_t g = 0; g < options.groups; ++g)
          for (std::size_t kh = 0; kh < k; ++kh)
            for (std::size_t kw = 0; kw < k; ++kw)
              for (std::size_t c = 0; c < cg; ++c, ++i) {
                const auto ih = std::int64_t(oh * options.stride + kh * options.dilation) - std::int64_t(options.padding);
                const auto iw = std::int64_t(ow * options.stride + kw * options.dilation) - std::int64_t(options.padding);
                if (ih < 0 || iw < 0 || ih >= std::int64_t(in.height) || iw >= std::int64_t(in.width)) continue;
                idx[i] = (ih * std::int64_t(in.width) + iw) * std::int64_t(in.channels) + std::int64_t(g * cg + c);
              }
    return idx;
  }
};

}  // namespace bilevel::learners
