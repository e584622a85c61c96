// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// ResNets for small images, as the reweighting papers train them.
///
/// resnet<P>(o): the CIFAR ResNets of He et al. (2016, §4.2), ResNet-20/32/44/56/110
/// (depth 6n + 2): a 3x3 convolution to `width` channels, batch norm, ReLU; three stages of
/// n basic blocks (3x3 convolution, BN, ReLU, 3x3 convolution, BN, plus the shortcut, ReLU)
/// at width, 2·width and 4·width channels, the first block of stages 2 and 3 at stride 2;
/// global average pooling and a linear classifier. The shortcut that changes shape is
/// option A (subsampling and zero channels, parameter-free), as in the Meta-Weight-Net code's
/// ResNet-32, or option B (1x1 convolution and BN). Convolutions have no bias (a BN follows).
///
/// wide_resnet<P>(o): WRN-d-k (Zagoruyko & Komodakis, 2016), depth 6n + 4, widths 16k, 32k,
/// 64k (16 being `width`), pre-activation blocks (BN, ReLU, 3x3 convolution, BN, ReLU, dropout, 3x3
/// convolution) whose shortcut is the identity or, where the shape changes, a 1x1
/// convolution of the pre-activated input; a final BN and ReLU before the pooling.
///
/// Both return the layers for `sequential<P, Weighting>(o.input, resnet<P>(o), ...)`.
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "bilevel/learners/layers/batch_norm.hpp"
#include "bilevel/learners/layers/chain.hpp"
#include "bilevel/learners/layers/convolution.hpp"
#include "bilevel/learners/layers/dropout.hpp"
#include "bilevel/learners/layers/graph.hpp"
#include "bilevel/learners/layers/identity.hpp"
#include "bilevel/learners/layers/linear.hpp"
#include "bilevel/learners/layers/nonlinearity.hpp"
#include "bilevel/learners/layers/pooling.hpp"
#include "bilevel/learners/layers/shortcut.hpp"

namespace bilevel::learners {

enum class resnet_shortcut { a_subsample_pad, b_projection };

struct resnet_options {
  geometry input{28, 28, 1};
  std::size_t classes = 10;
  std::size_t depth = 20;   ///< 6n + 2: 20, 32, 44, 56, 110
  std::size_t width = 16;   ///< channels of the first stage
  resnet_shortcut shortcut = resnet_shortcut::a_subsample_pad;
};

struct wide_resnet_options {
  geometry input{28, 28, 1};
  std::size_t classes = 10;
  std::size_t depth = 16;   ///< 6n + 4: 10, 16, 22, 28, 40
  std::size_t widen = 2;    ///< k
  std::size_t width = 16;   ///< channels of the stem; the stages have width·k, 2·width·k, 4·width·k
  double dropout = 0.0;     ///< inside each block, between its convolutions
  std::uint64_t seed = 1;   ///< dropout masks
};

namespace detail {

template <nn_tensor_policy P>
convolution<P> conv3x3(geometry in, std::size_t channels, std::size_t stride) {
  return convolution<P>(in, conv_options{.channels = channels, .kernel = 3, .stride = stride, .padding = 1, .bias = false});
}
template <nn_tensor_policy P>
convolution<P> conv1x1(geometry in, std::size_t channels, std::size_t stride) {
  return convolution<P>(in, conv_options{.channels = channels, .kernel = 1, .stride = stride, .bias = false});
}

inline std::size_t blocks_per_stage(std::size_t depth, std::size_t extra, const char* who) {
  if (depth < 6 + extra || (depth - extra) % 6 != 0)
    throw std::invalid_argument(std::string(who) + ": depth " + std::to_string(depth) + " is not 6n + " +
                                std::to_string(extra) + " with n >= 1");
  return (depth - extra) / 6;
}

}  // namespace detail

template <nn_tensor_policy P>
std::vector<any_layer<P>> resnet(const resnet_options& o) {
  const std::size_t n = detail::blocks_per_stage(o.depth, 2, "bilevel::learners::resnet");
  if (o.width == 0 || o.classes == 0) throw std::invalid_argument("bilevel::learners::resnet: width and classes must be >= 1");
  graph<P> g(o.input);
  const auto stem = detail::conv3x3<P>(o.input, o.width, 1);
  std::size_t x = g.add(g.input(), chain<P>({stem, batch_norm<P>(stem.output_shape()),
                                              nonlinearity<P>(stem.output_shape(), activation::relu)}));
  for (std::size_t stage = 0; stage < 3; ++stage)
    for (std::size_t b = 0; b < n; ++b) {
      const geometry in = g.shape(x);
      const std::size_t channels = o.width << stage, stride = stage > 0 && b == 0 ? 2 : 1;
      const auto c1 = detail::conv3x3<P>(in, channels, stride);
      const auto c2 = detail::conv3x3<P>(c1.output_shape(), channels, 1);
      const geometry out = c2.output_shape();
      chain<P> branch({c1, batch_norm<P>(out), nonlinearity<P>(out, activation::relu), c2, batch_norm<P>(out)});
      any_layer<P> skip = identity_layer<P>(in);
      if (!(in == out)) {
        if (o.shortcut == resnet_shortcut::a_subsample_pad) {
          skip = shortcut_a<P>(in, channels, stride);
        } else {
          const auto proj = detail::conv1x1<P>(in, channels, stride);
          skip = chain<P>({proj, batch_norm<P>(out)});
        }
      }
      const std::size_t sum = g.sum({{x, std::move(branch)}, {x, std::move(skip)}});
      x = g.add(sum, nonlinearity<P>(out, activation::relu));
    }
  const geometry out = g.output_shape();
  return {std::move(g), global_avg_pool<P>(out), linear<P>({1, 1, out.channels}, o.classes)};
}

template <nn_tensor_policy P>
std::vector<any_layer<P>> wide_resnet(const wide_resnet_options& o) {
  const std::size_t n = detail::blocks_per_stage(o.depth, 4, "bilevel::learners::wide_resnet");
  if (o.widen == 0 || o.width == 0 || o.classes == 0)
    throw std::invalid_argument("bilevel::learners::wide_resnet: widen, width and classes must be >= 1");
  graph<P> g(o.input);
  std::size_t x = g.add(g.input(), detail::conv3x3<P>(o.input, o.width, 1));
  std::uint64_t seed = o.seed;
  for (std::size_t stage = 0; stage < 3; ++stage)
    for (std::size_t b = 0; b < n; ++b) {
      const geometry in = g.shape(x);
      const std::size_t channels = (o.width * o.widen) << stage, stride = stage > 0 && b == 0 ? 2 : 1;
      const std::size_t a = g.add(x, chain<P>({batch_norm<P>(in), nonlinearity<P>(in, activation::relu)}));
      const auto c1 = detail::conv3x3<P>(in, channels, stride);
      const geometry out = c1.output_shape();
      std::vector<any_layer<P>> branch = {c1, batch_norm<P>(out), nonlinearity<P>(out, activation::relu)};
      if (o.dropout > 0) branch.push_back(dropout<P>(out, o.dropout, seed++));
      branch.push_back(detail::conv3x3<P>(out, channels, 1));
      const bool same = in == out;
      x = same ? g.sum({{a, chain<P>(std::move(branch))}, {x, identity_layer<P>(in)}})
               : g.sum({{a, chain<P>(std::move(branch))}, {a, detail::conv1x1<P>(in, channels, stride)}});
    }
  const geometry out = g.shape(x);
  g.add(x, chain<P>({batch_norm<P>(out), nonlinearity<P>(out, activation::relu)}));
  return {std::move(g), global_avg_pool<P>(out), linear<P>({1, 1, out.channels}, o.classes)};
}

}  // namespace bilevel::learners
