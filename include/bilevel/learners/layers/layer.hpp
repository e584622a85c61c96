// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// What every layer of a sequential network provides, and the geometry it passes on.
///
/// Activations travel as matrices of (batch · height · width) rows × channels, row-major, so
/// an image batch in NHWC order and a dense batch (height = width = 1) are the same thing,
/// and a convolution is a gather (im2col) followed by the GEMM a dense layer does.
///
/// A layer implements four passes, all written against the policy:
///   forward(θ, in, out, cache)                       the value pass; keeps what the others need
///   backward(θ, in, g_out, cache, g_in*, grad)       adjoints: its parameter segment of grad,
///                                                    and g_in unless it is the first layer
///   tangent_forward(θ, v, in, in_dot*, cache, out_dot)             Ṙ of the value pass along v
///   tangent_backward(θ, v, in, in_dot*, g_out, g_out_dot, cache, g_in_dot*, grad_dot)
///                                                    Ṙ of the backward pass: its HVP segment
/// (in_dot == nullptr means a zero input tangent: the data). This is Pearlmutter's
/// R-operator, one layer at a time: exact, and about twice the GEMMs of the gradient. Every
/// pass gets the θ of the value pass; layers with weights read them there, in place.
#include <any>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "bilevel/core/tensor_policy.hpp"

namespace bilevel::learners {

/// Height × width × channels of one sample's activation.
struct geometry {
  std::size_t height = 1, width = 1, channels = 0;
  [[nodiscard]] std::size_t features() const { return height * width * channels; }
  [[nodiscard]] std::size_t pixels() const { return height * width; }
  friend bool operator==(const geometry&, const geometry&) = default;
};

/// "HxWxC", for messages.
inline std::string shape_text(const geometry& g) {
  return std::to_string(g.height) + "x" + std::to_string(g.width) + "x" + std::to_string(g.channels);
}

/// What a layer keeps from its value pass.
template <tensor_policy P>
struct layer_cache {
  typename P::matrix cols;            ///< im2col patches (convolution) or window contents (pooling)
  typename P::matrix choice;          ///< max-pooling: one-hot rows, the window element each output took
  // A mixed operation's candidates, each a little network of its own:
  vector_t<P> mix;                                   ///< softmax(α) of this edge
  std::vector<std::vector<typename P::matrix>> sub;  ///< per candidate: its activations
  std::vector<std::vector<layer_cache>> sub_cache;   ///< per candidate: its layers' caches
  std::vector<std::vector<typename P::matrix>> sub_g;  ///< per candidate: its layers' output adjoints
  std::any boxed;                                    ///< an any_layer's own cache
};

}  // namespace bilevel::learners
