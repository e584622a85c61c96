// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// convolution<P>: a 2-D convolution (stride, zero padding, dilation, groups, optional bias)
/// as a layer of the open layer concept (layer_concept.hpp).
///
/// It is computed by im2col: one sample's index map (the same for every sample, so for any
/// batch size) gathers the patches of every output pixel into a (samples · H_out · W_out) ×
/// (k · k · C_in) matrix, zero where a window overhangs the padding, and the layer is then an
/// affine map of the patches; col2im is the index map's adjoint scatter-add. With groups, the
/// patch columns are ordered group-major, (group, kh, kw, channel in the group), so that group
/// g's patches are the contiguous column block [g · F, (g + 1) · F), F = k · k · C_in / groups,
/// and group g's output channels [g · C_g, (g + 1) · C_g), C_g = C_out / groups, are that block
/// times its own F × C_g weight block. On a host back end the patches are gathered a few
/// samples at a time and never kept (detail::patch_chunk): every pass gathers them again from
/// its input, so a network's memory is its activations, not k² times them.
///
/// The map is bilinear in (θ, x) and gather/scatter are linear, so the tangent passes are the
/// affine map's on the gathered patches and their tangents.
///
/// On the host policies (Eigen and xtensor; core/tensor_policy.hpp) two kinds of convolution
/// skip the patches altogether and run direct loops over the input, through a map of (output
/// pixel, tap) → input pixel:
/// - depthwise ones (groups == C_in == C_out: DARTS's sep_conv and dil_conv, followed by a
///   bias-free 1x1 `linear`), depthwise_maps: per output pixel and tap, the input pixel's
///   channels times that tap's per-channel weights (as grouped patch products they would be
///   C small products of k · k columns each);
/// - dense ones (one group, any kernel, stride, padding and dilation, except a 1x1 map that is
///   the identity, which is a plain product already), dense_conv_maps: register-blocked loops
///   that read each input row in place (policy/detail/dense_conv_maps.hpp says why: im2col
///   and the GEMM's packing copied each patch element twice for 16 to 64 multiply-adds; a
///   ResNet's 3x3 convolutions ran 2-5x faster without them).
///
/// Parameters, at the layer's offset in θ: per group, its F × C_g row-major weight block (row
/// (kh · k + kw) · C_in/groups + c, column the output channel in the group), groups one after
/// another, then the bias (C_out entries) unless `bias` is false.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <random>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "bilevel/learners/layers/detail/bias_rows.hpp"
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

/// Elements of gathered patches a convolution works on at once on a host back end (default
/// 2^20, 4 MB of floats): the passes take as many samples as fit, at least one. Larger chunks
/// make fewer, larger GEMMs; smaller ones stay in a smaller cache. A process-wide setting,
/// read at every pass (the tests lower it to check that chunking changes no result).
inline std::size_t& patch_chunk_elements() {
  static std::size_t elements = std::size_t(1) << 20;
  return elements;
}

namespace detail {

/// How many samples a patch map gathers at once. On a host back end the patches of a few
/// samples at a time (patch_chunk_elements()) stay in cache and are never kept: each pass
/// gathers them again from its input, which costs far less than storing k²-times-the-input
/// patches for every convolution of a network (they were most of a DARTS supernet's memory,
/// and allocating them afresh most of a ResNet's page faults). A device back end
/// (P::whole_batch_maps) takes the whole batch in one gather and one GEMM.
template <nn_tensor_policy P>
[[nodiscard]] std::size_t patch_chunk(std::size_t batch, std::size_t patch_elements_per_sample) {
  if constexpr (requires { requires P::whole_batch_maps; }) {
    return batch;
  } else {
    const std::size_t n = patch_chunk_elements() / std::max<std::size_t>(patch_elements_per_sample, 1);
    return std::clamp<std::size_t>(n, 1, std::max<std::size_t>(batch, 1));
  }
}

/// A gather of per-sample patches (through an index map, -1 for a zero) followed by a
/// block-diagonal affine map: `groups` column blocks of `fan_in` patch columns, each times its
/// own fan_in × fan_out weight block, giving `groups` blocks of fan_out output columns, plus
/// an optional bias over all of them. Used by convolution and factorized_reduce.
///
/// Every pass works through the batch in chunks of samples (patch_chunk): it gathers a
/// chunk's patches (and their tangents) from the input it is given, multiplies, and writes the
/// chunk's rows of the output; weight gradients accumulate over the chunks. The cache holds
/// only these chunk-sized work buffers. A map that is the identity (a 1x1 convolution with
/// stride 1 and no padding) multiplies the input itself.
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

  /// Nothing is kept between passes: the value pass's input is all the others need.
  struct cache {};

  void forward(const pass_context<P>& p, const matrix& x, matrix& y, cache&) const {
    workspace& c = scratch();
    if (chunked(p.batch)) shape(y, p.batch * out_pixels, groups * fan_out);
    for_chunks(p.batch, [&](const chunk& k) {
      const matrix& cols = patches(rows_of(x, k, in_rows(x, p.batch), c.x), k.count, c.cols, c.blocks);
      matrix& yc = k.whole ? y : c.y;
      assemble(k.count * out_pixels, fan_out, yc, c.block, [&](std::size_t g, matrix& yg) {
        P::gemm_by_segment(scalar(1), group_block(cols, c.blocks, g), false, p.theta, group_offset(p.offset, g),
                           fan_in, fan_out, false, scalar(0), yg);
      });
      add_bias(p.theta, p.offset, yc);
      if (!k.whole) P::set_row_block(yc, y, k.first * out_pixels);
    });
  }

  void backward(const pass_context<P>& p, const matrix& x, const matrix& gy, cache&, matrix* gx,
                vector& grad) const {
    workspace& c = scratch();
    const std::size_t rows_in = in_rows(x, p.batch);
    if (gx && chunked(p.batch)) shape(*gx, P::rows(x), P::cols(x));
    for_chunks(p.batch, [&](const chunk& k) {
      const matrix& cols = patches(rows_of(x, k, rows_in, c.x), k.count, c.cols, c.blocks);
      const matrix& gyc = rows_of(gy, k, out_pixels, c.g);
      const scalar beta = k.first == 0 ? scalar(0) : scalar(1);  // weight gradients add up over chunks
      for (std::size_t g = 0; g < groups; ++g)
        P::gemm_into_segment(scalar(1), group_block(cols, c.blocks, g), true, part(gyc, g, fan_out, c.part), false,
                             beta, grad, group_offset(p.offset, g));
      if (!gx) return;
      assemble(k.count * out_pixels, fan_in, c.dcols, c.block, [&](std::size_t g, matrix& dg) {
        P::gemm_by_segment(scalar(1), part(gyc, g, fan_out, c.part), false, p.theta, group_offset(p.offset, g),
                           fan_in, fan_out, true, scalar(0), dg);
      });
      col2im(c.dcols, k, rows_in, P::cols(x), k.whole ? *gx : c.gx);
      if (!k.whole) P::set_row_block(c.gx, *gx, k.first * rows_in);
    });
    if (bias) detail::bias_gradient_into<P>(gy, p.offset + weights(), grad);
  }

  void tangent_forward(const tangent_context<P>& t, const matrix& x, const matrix* x_dot, cache&,
                       matrix& y_dot) const {
    workspace& c = scratch();
    const std::size_t rows_in = in_rows(x, t.batch);
    if (chunked(t.batch)) shape(y_dot, t.batch * out_pixels, groups * fan_out);
    for_chunks(t.batch, [&](const chunk& k) {
      const matrix& cols = patches(rows_of(x, k, rows_in, c.x), k.count, c.cols, c.blocks);
      const matrix* cols_dot =
          x_dot ? &patches(rows_of(*x_dot, k, rows_in, c.x_dot), k.count, c.cols_dot, c.blocks_dot) : nullptr;
      matrix& yc = k.whole ? y_dot : c.y;
      assemble(k.count * out_pixels, fan_out, yc, c.block, [&](std::size_t g, matrix& yg) {
        const std::size_t at = group_offset(t.offset, g);
        P::gemm_by_segment(scalar(1), group_block(cols, c.blocks, g), false, t.v, at, fan_in, fan_out, false,
                           scalar(0), yg);
        if (cols_dot)
          P::gemm_by_segment(scalar(1), group_block(*cols_dot, c.blocks_dot, g), false, t.theta, at, fan_in, fan_out,
                             false, scalar(1), yg);
      });
      add_bias(t.v, t.offset, yc);
      if (!k.whole) P::set_row_block(yc, y_dot, k.first * out_pixels);
    });
  }

  void tangent_backward(const tangent_context<P>& t, const matrix& x, const matrix* x_dot, const matrix& gy,
                        const matrix& gy_dot, cache&, matrix* gx_dot, vector& grad_dot) const {
    workspace& c = scratch();
    const std::size_t rows_in = in_rows(x, t.batch);
    if (gx_dot && chunked(t.batch)) shape(*gx_dot, P::rows(x), P::cols(x));
    for_chunks(t.batch, [&](const chunk& k) {
      const matrix& cols = patches(rows_of(x, k, rows_in, c.x), k.count, c.cols, c.blocks);
      const matrix* cols_dot =
          x_dot ? &patches(rows_of(*x_dot, k, rows_in, c.x_dot), k.count, c.cols_dot, c.blocks_dot) : nullptr;
      const matrix& gyc = rows_of(gy, k, out_pixels, c.g);
      const matrix& gyc_dot = rows_of(gy_dot, k, out_pixels, c.g_dot);
      const scalar beta = k.first == 0 ? scalar(0) : scalar(1);
      // grad_dot = Xᵀ ġ (+ Ẋᵀ g), per group.
      for (std::size_t g = 0; g < groups; ++g) {
        const std::size_t at = group_offset(t.offset, g);
        P::gemm_into_segment(scalar(1), group_block(cols, c.blocks, g), true, part(gyc_dot, g, fan_out, c.part_dot),
                             false, beta, grad_dot, at);
        if (cols_dot)
          P::gemm_into_segment(scalar(1), group_block(*cols_dot, c.blocks_dot, g), true, part(gyc, g, fan_out, c.part),
                               false, scalar(1), grad_dot, at);
      }
      if (!gx_dot) return;
      // ġx = col2im(ġ Wᵀ + g Vᵀ).
      assemble(k.count * out_pixels, fan_in, c.dcols, c.block, [&](std::size_t g, matrix& dg) {
        const std::size_t at = group_offset(t.offset, g);
        P::gemm_by_segment(scalar(1), part(gyc_dot, g, fan_out, c.part_dot), false, t.theta, at, fan_in, fan_out,
                           true, scalar(0), dg);
        P::gemm_by_segment(scalar(1), part(gyc, g, fan_out, c.part), false, t.v, at, fan_in, fan_out, true,
                           scalar(1), dg);
      });
      col2im(c.dcols, k, rows_in, P::cols(x), k.whole ? *gx_dot : c.gx);
      if (!k.whole) P::set_row_block(c.gx, *gx_dot, k.first * rows_in);
    });
    if (bias) detail::bias_gradient_into<P>(gy_dot, t.offset + weights(), grad_dot);
  }

 private:
  /// Work buffers for one chunk, shared by every patch map of the thread (passes of layers
  /// run one at a time; per-layer buffers would add up to gigabytes in a DARTS supernet).
  /// Nothing in them outlives a pass.
  struct workspace {
    matrix x, x_dot, g, g_dot;               // the chunk's rows of the pass's inputs
    matrix cols, cols_dot;                   // its patches (and their tangents)
    std::vector<matrix> blocks, blocks_dot;  // per group (groups > 1)
    matrix y, dcols, gx, part, part_dot, block;
  };
  static workspace& scratch() {
    thread_local workspace w;
    return w;
  }
  /// Samples [first, first + count) of the batch; `whole` when that is all of it.
  struct chunk {
    std::size_t first, count;
    bool whole;
  };
  /// Calls f on each chunk of the batch, in order.
  template <class F>
  void for_chunks(std::size_t batch, F f) const {
    const std::size_t n = patch_chunk<P>(batch, out_pixels * groups * fan_in);
    for (std::size_t first = 0; first < batch; first += n) f(chunk{first, std::min(n, batch - first), n >= batch});
  }
  /// Whether the passes go chunk by chunk (and so write their outputs' rows in place).
  [[nodiscard]] bool chunked(std::size_t batch) const {
    return patch_chunk<P>(batch, out_pixels * groups * fan_in) < batch;
  }
  /// Gives m the shape r × c unless it has it (its contents are then overwritten row by row).
  static void shape(matrix& m, std::size_t r, std::size_t c) {
    if (P::rows(m) != r || P::cols(m) != c) m = P::matrix_zeros(r, c);
  }
  [[nodiscard]] static std::size_t in_rows(const matrix& x, std::size_t batch) { return P::rows(x) / batch; }
  /// The chunk's rows of m (per_sample rows a sample), or m itself for the whole batch.
  static const matrix& rows_of(const matrix& m, const chunk& k, std::size_t per_sample, matrix& tmp) {
    if (k.whole) return m;
    P::row_block(m, k.first * per_sample, k.count * per_sample, tmp);
    return tmp;
  }
  [[nodiscard]] std::size_t group_offset(std::size_t offset, std::size_t g) const {
    return offset + g * fan_in * fan_out;
  }
  /// A chunk's patches of x (count samples): one matrix, split per group into `blocks` when
  /// there are several groups. The identity map is x itself.
  const matrix& patches(const matrix& x, std::size_t count, matrix& cols, std::vector<matrix>& blocks) const {
    const matrix* all = &x;
    if (!identity()) {
      P::gather_per_sample(x, index, count, out_pixels, groups * fan_in, cols);
      all = &cols;
    }
    if (groups > 1) {
      blocks.resize(groups);
      for (std::size_t g = 0; g < groups; ++g) P::columns(*all, g * fan_in, fan_in, blocks[g]);
    }
    return *all;
  }
  [[nodiscard]] const matrix& group_block(const matrix& cols, const std::vector<matrix>& blocks,
                                          std::size_t g) const {
    return groups == 1 ? cols : blocks[g];
  }

 public:
  /// Whether every sample's patch matrix is the sample itself (identity index, no padding).
  [[nodiscard]] bool identity() const { return identity_; }
  /// Records whether `index` is the identity map on samples of `input` (call after setting
  /// it): then each sample's patch matrix is the sample's own rows.
  void finish(geometry input) {
    identity_ = groups == 1 && fan_in == input.channels && index.size() == input.features();
    for (std::size_t i = 0; identity_ && i < index.size(); ++i) identity_ = index[i] == std::int64_t(i);
  }

 private:
  bool identity_ = false;

  /// Group g's column block of m (m itself for one group).
  const matrix& part(const matrix& m, std::size_t g, std::size_t width, matrix& tmp) const {
    if (groups == 1) return m;
    P::columns(m, g * width, width, tmp);
    return tmp;
  }
  /// out = the groups' blocks side by side, block g (width columns) written by f(g, block).
  template <class F>
  void assemble(std::size_t rows, std::size_t width, matrix& out, matrix& block, F f) const {
    if (groups == 1) {
      f(0, out);
      return;
    }
    if (P::rows(out) != rows || P::cols(out) != groups * width) out = P::matrix_zeros(rows, groups * width);
    for (std::size_t g = 0; g < groups; ++g) {
      f(g, block);
      P::set_columns(block, out, g * width);
    }
  }
  void add_bias(const vector& params, std::size_t offset, matrix& y) const {
    if (bias) detail::add_bias_row<P>(params, offset + weights(), y);
  }
  /// gx (the chunk's input rows) = the patches' adjoint scatter of dcols.
  void col2im(const matrix& dcols, const chunk& k, std::size_t rows_in, std::size_t channels, matrix& gx) const {
    gx = P::matrix_zeros(k.count * rows_in, channels);
    if (identity()) P::axpy(scalar(1), dcols, gx);
    else P::scatter_add_per_sample(dcols, index, k.count, gx);
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
  void tangent_forward(const tangent_context<P>& t, const matrix& x, const matrix* x_dot, cache& c,
                       matrix& y_dot) const {
    map.tangent_forward(t, x, x_dot, c, y_dot);
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
  using typename base::matrix, typename base::vector, typename base::scalar, typename base::cache;
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
    map.finish(in);
    if constexpr (depthwise_maps<P>) {
      if (o.groups > 1 && o.groups == input.channels && o.channels == input.channels) path_ = path::depthwise;
    }
    if constexpr (dense_conv_maps<P>) {
      if (o.groups == 1 && !map.identity()) path_ = path::dense;
    }
    if (path_ != path::patches) taps_ = tap_index();
  }

  // On a policy with direct primitives (core/tensor_policy.hpp), a depthwise convolution
  // (groups == C_in == C_out) runs depthwise_maps and a dense one (one group, not a pointwise
  // identity map) dense_conv_maps, directly on the input through a map of (output pixel, tap)
  // → input pixel; every other convolution, and every convolution on other policies, runs
  // the grouped patch products. The parameters are the same either way.
  void forward(const pass_context<P>& p, const matrix& x, matrix& y, cache& c) const {
    if (path_ == path::patches) return base::forward(p, x, y, c);
    apply(x, p.batch, p.theta, p.offset, scalar(0), y);
    add_bias(p.theta, p.offset, y);
  }
  void backward(const pass_context<P>& p, const matrix& x, const matrix& g, cache& c, matrix* gx, vector& grad) const {
    if (path_ == path::patches) return base::backward(p, x, g, c, gx, grad);
    weight_adjoint(x, g, p.batch, scalar(0), grad, p.offset);
    bias_gradient(g, p.offset, grad);
    if (gx) input_adjoint(g, P::rows(x) / p.batch, p.batch, p.theta, p.offset, scalar(0), *gx);
  }
  /// ẏ = x ⊛ V (+ ẋ ⊛ W), + v_b.
  void tangent_forward(const tangent_context<P>& t, const matrix& x, const matrix* x_dot, cache& c,
                       matrix& y_dot) const {
    if (path_ == path::patches) return base::tangent_forward(t, x, x_dot, c, y_dot);
    apply(x, t.batch, t.v, t.offset, scalar(0), y_dot);
    if (x_dot) apply(*x_dot, t.batch, t.theta, t.offset, scalar(1), y_dot);
    add_bias(t.v, t.offset, y_dot);
  }
  /// ġ_W = adj_W(x, ġ) (+ adj_W(ẋ, g)); ġx = adj_x(ġ, W) + adj_x(g, V).
  void tangent_backward(const tangent_context<P>& t, const matrix& x, const matrix* x_dot, const matrix& g,
                        const matrix& g_dot, cache& c, matrix* gx_dot, vector& grad_dot) const {
    if (path_ == path::patches) return base::tangent_backward(t, x, x_dot, g, g_dot, c, gx_dot, grad_dot);
    weight_adjoint(x, g_dot, t.batch, scalar(0), grad_dot, t.offset);
    if (x_dot) weight_adjoint(*x_dot, g, t.batch, scalar(1), grad_dot, t.offset);
    bias_gradient(g_dot, t.offset, grad_dot);
    if (gx_dot) {
      const std::size_t in_pixels = P::rows(x) / t.batch;
      input_adjoint(g_dot, in_pixels, t.batch, t.theta, t.offset, scalar(0), *gx_dot);
      input_adjoint(g, in_pixels, t.batch, t.v, t.offset, scalar(1), *gx_dot);
    }
  }

 private:
  enum class path { patches, depthwise, dense };
  path path_ = path::patches;
  std::vector<std::int64_t> taps_;  ///< direct paths: (output pixel, tap) → input pixel or −1; else empty

  /// y = beta · y + x ⊛ (the weights at params[offset, …)), on a direct path.
  void apply(const matrix& x, std::size_t batch, const vector& params, std::size_t offset, scalar beta,
             matrix& y) const {
    if constexpr (depthwise_maps<P>) {
      if (path_ == path::depthwise) return P::depthwise_per_sample(x, taps_, batch, taps(), params, offset, beta, y);
    }
    if constexpr (dense_conv_maps<P>) {
      if (path_ == path::dense)
        return P::dense_conv_per_sample(x, taps_, batch, taps(), params, offset, out.channels, beta, y);
    }
  }
  /// grad[offset, + weights) = beta · grad[…] + the weights' adjoint of (x, g).
  void weight_adjoint(const matrix& x, const matrix& g, std::size_t batch, scalar beta, vector& grad,
                      std::size_t offset) const {
    if constexpr (depthwise_maps<P>) {
      if (path_ == path::depthwise)
        return P::depthwise_weight_adjoint_per_sample(x, g, taps_, batch, taps(), beta, grad, offset);
    }
    if constexpr (dense_conv_maps<P>) {
      if (path_ == path::dense) return P::dense_conv_weight_adjoint_per_sample(x, g, taps_, batch, taps(), beta, grad, offset);
    }
  }
  /// gx = beta · gx + the input's adjoint of g through the weights at params[offset, …).
  void input_adjoint(const matrix& g, std::size_t in_pixels, std::size_t batch, const vector& params,
                     std::size_t offset, scalar beta, matrix& gx) const {
    if constexpr (depthwise_maps<P>) {
      if (path_ == path::depthwise) {
        if (beta == scalar(0)) gx = P::matrix_zeros(batch * in_pixels, in.channels);
        return P::depthwise_input_adjoint_per_sample(g, taps_, batch, taps(), params, offset, gx);
      }
    }
    if constexpr (dense_conv_maps<P>) {
      if (path_ == path::dense)
        return P::dense_conv_input_adjoint_per_sample(g, taps_, batch, taps(), params, offset, in_pixels, in.channels,
                                                      beta, gx);
    }
  }
  [[nodiscard]] std::size_t taps() const { return options.kernel * options.kernel; }
  void add_bias(const vector& params, std::size_t offset, matrix& y) const {
    if (options.bias) detail::add_bias_row<P>(params, offset + map.weights(), y);
  }
  void bias_gradient(const matrix& g, std::size_t offset, vector& grad) const {
    if (options.bias) detail::bias_gradient_into<P>(g, offset + map.weights(), grad);
  }
  /// One sample's tap map: entry (oh · W_out + ow) · k² + kh · k + kw is the input pixel
  /// ih · W_in + iw the tap reads (ih = oh · s + kh · d − p, iw likewise), or −1 (padding).
  [[nodiscard]] std::vector<std::int64_t> tap_index() const {
    const std::size_t k = options.kernel;
    std::vector<std::int64_t> idx(out.pixels() * k * k, -1);
    std::size_t i = 0;
    for (std::size_t oh = 0; oh < out.height; ++oh)
      for (std::size_t ow = 0; ow < out.width; ++ow)
        for (std::size_t kh = 0; kh < k; ++kh)
          for (std::size_t kw = 0; kw < k; ++kw, ++i) {
            const auto ih = std::int64_t(oh * options.stride + kh * options.dilation) - std::int64_t(options.padding);
            const auto iw = std::int64_t(ow * options.stride + kw * options.dilation) - std::int64_t(options.padding);
            if (ih >= 0 && iw >= 0 && ih < std::int64_t(in.height) && iw < std::int64_t(in.width))
              idx[i] = ih * std::int64_t(in.width) + iw;
          }
    return idx;
  }

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
