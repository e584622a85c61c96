// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// factorized_reduce<P>: DARTS's FactorizedReduce without its leading ReLU and trailing batch
/// normalization (a network builder adds those): on an H × W × C_in input (H and W even),
///
///   y = concat_channels(conv_a(x), conv_b(x[:, :, 1:, 1:]))
///
/// each conv 1 × 1, stride 2, no bias, C_in → C_out / 2, so y is H/2 × W/2 × C_out. Output
/// pixel (i, j) thus reads input pixel (2i, 2j) for its first half of channels and
/// (2i + 1, 2j + 1) for its second half.
///
/// It is one gather, whose index map gives output pixel (i, j) the 2 · C_in columns
/// x(2i, 2j, ·) then x(2i + 1, 2j + 1, ·), followed by a 2-group block GEMM (convolution.hpp's
/// detail::grouped_patch_map): parameters W_a (C_in × C_out/2, row-major) then W_b, likewise.
///
/// Odd sizes are rejected: in PyTorch the shifted branch then gives (H − 1)/2 rows and the
/// first (H + 1)/2, and the concatenation fails (DARTS requires even sizes).
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <random>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "bilevel/learners/layers/convolution.hpp"
#include "bilevel/learners/layers/layer_concept.hpp"

namespace bilevel::learners {

template <nn_tensor_policy P>
struct factorized_reduce : detail::patch_layer<P> {
  using base = detail::patch_layer<P>;
  using base::in, base::out, base::map;

  /// `channels`: C_out, even and >= 2. Throws std::invalid_argument for zero sizes, an odd
  /// C_out or an odd height or width.
  factorized_reduce(geometry input, std::size_t channels) {
    in = input;
    const std::string who = "bilevel::learners::factorized_reduce: ";
    if (input.height == 0 || input.width == 0 || input.channels == 0)
      throw std::invalid_argument(who + "the input " + shape_text(input) + " has a zero size");
    if (channels == 0 || channels % 2 != 0)
      throw std::invalid_argument(who + "output channels must be even and >= 2, not " + std::to_string(channels));
    if (input.height % 2 != 0 || input.width % 2 != 0)
      throw std::invalid_argument(who + "the input " + shape_text(input) +
                                  " has an odd height or width (DARTS's FactorizedReduce needs even sizes)");
    out = {input.height / 2, input.width / 2, channels};
    map.out_pixels = out.pixels();
    map.groups = 2;
    map.fan_in = input.channels;
    map.fan_out = channels / 2;
    map.bias = false;
    map.index = pixel_index();
    map.finish(in);
  }

 private:
  /// Row i · W_out + j: columns [0, C_in) read pixel (2i, 2j), columns [C_in, 2 C_in) pixel
  /// (2i + 1, 2j + 1), both inside the (even-sized) input.
  [[nodiscard]] std::vector<std::int64_t> pixel_index() const {
    const auto c_in = std::int64_t(in.channels), w = std::int64_t(in.width);
    std::vector<std::int64_t> idx;
    idx.reserve(out.pixels() * 2 * in.channels);
    for (std::int64_t i = 0; i < std::int64_t(out.height); ++i)
      for (std::int64_t j = 0; j < std::int64_t(out.width); ++j)
        for (std::int64_t shift = 0; shift < 2; ++shift)
          for (std::int64_t c = 0; c < c_in; ++c) idx.push_back(((2 * i + shift) * w + 2 * j + shift) * c_in + c);
    return idx;
  }
};

}  // namespace bilevel::learners
