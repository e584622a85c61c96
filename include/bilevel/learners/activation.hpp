// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// Element-wise activations with the first and second derivatives that exact
/// Hessian-vector products need (σ'' enters the R-op through the backward pass).
#include <cmath>
#include <stdexcept>
#include <string>

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

}  // namespace bilevel::learners
