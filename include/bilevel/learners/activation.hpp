// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// Element-wise activations with the first and second derivatives that exact
/// Hessian-vector products need (σ'' enters the R-op through the backward pass).
#include <bit>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "bilevel/core/elementwise.hpp"

namespace bilevel::learners {

enum class activation { identity, relu, tanh, sigmoid };

inline std::string to_string(activation a) {
  switch (a) {
    case activation::identity: return "identity";
    case activation::relu: return "relu";
    case activation::tanh: return "tanh";
    case activation::sigmoid: return "sigmoid";
  }
  return "unknown";
}

/// σ(z), σ'(z), σ''(z) as functors (plain structs, so a device back end can run them).
struct activation_value {
  activation a;
  template <class S> S operator()(S z) const {
    switch (a) {
      case activation::relu: return z > S(0) ? z : S(0);
      case activation::tanh: return std::tanh(z);
      case activation::sigmoid: return S(1) / (S(1) + std::exp(-z));
      default: return z;
    }
  }
};
struct activation_slope {
  activation a;
  template <class S> S operator()(S z) const {
    switch (a) {
      case activation::relu: return z > S(0) ? S(1) : S(0);  // the subgradient 0 at 0, as PyTorch
      case activation::tanh: { const S t = std::tanh(z); return S(1) - t * t; }
      case activation::sigmoid: { const S s = S(1) / (S(1) + std::exp(-z)); return s * (S(1) - s); }
      default: return S(1);
    }
  }
};
struct activation_curvature {
  activation a;
  template <class S> S operator()(S z) const {
    switch (a) {
      case activation::tanh: { const S t = std::tanh(z); return S(-2) * t * (S(1) - t * t); }
      case activation::sigmoid: { const S s = S(1) / (S(1) + std::exp(-z)); return s * (S(1) - s) * (S(1) - S(2) * s); }
      default: return S(0);  // piecewise linear: zero almost everywhere
    }
  }
};

/// (a, z) ↦ a · σ'(z): the backward pass's g ⊙ σ'(z) and the tangent's σ'(z) ⊙ ż in one map
/// rather than a slope matrix and then a product (the same product, so the same rounding).
struct activation_slope_product {
  activation a;
  template <class S> S operator()(S x, S z) const { return x * activation_slope{a}(z); }
};

/// (ġ, z, g, ż) ↦ ġ·σ'(z) + (g·σ''(z))·ż: the tangent of the backward pass's g ⊙ σ'(z), its
/// four products in one map, rounded as the composed form rounds them (the slope product,
/// then g ⊙ σ'' ⊙ ż added).
struct activation_tangent_adjoint {
  activation a;
  template <class S> S operator()(S g_dot, S z, S g, S z_dot) const {
    return g_dot * activation_slope{a}(z) + g * activation_curvature{a}(z) * z_dot;
  }
};

/// The ReLU's maps on their own, for layers that know their kind before the loop: without
/// activation_value's per-element switch the policy's loop is a branch-free select the
/// compiler vectorises. Same formulas as the relu cases above, so the same results; the
/// products fold σ'(z) ∈ {0, 1} into the one multiplication hadamard(a, σ'(z)) would do.
struct relu_value {
  using bilevel_device_callable = void;
  template <class S>
  BILEVEL_HOST_DEVICE S operator()(S z) const { return z > S(0) ? z : S(0); }
};
/// (a, z) ↦ a · σ'(z): the backward pass's g ⊙ σ'(z) and both tangent passes' products.
struct relu_slope_product {
  using bilevel_device_callable = void;
  template <class S>
  BILEVEL_HOST_DEVICE S operator()(S a, S z) const {
    // σ'(z) ∈ {0, 1} assembled from bits: written as `z > 0 ? 1 : 0` (or S(z > 0)) the compiler
    // folds a·1 = a, is left with a multiplication on one branch only, and (floating-point
    // operations may trap) keeps the branch, so the loop does not vectorise.
    using bits = std::conditional_t<sizeof(S) == 8, std::uint64_t, std::uint32_t>;
    const bits mask = bits(0) - bits(z > S(0));
    return a * std::bit_cast<S>(bits(std::bit_cast<bits>(S(1)) & mask));
  }
};

}  // namespace bilevel::learners
