// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// The network both learned weightings end in (Meta-Weight-Net's V, loss_weighting_net.hpp, and
/// the deep-interactions teacher, teacher_weighting_net.hpp): each sample's weight is
///     c_i = σ(w2ᵀ relu(W1 s_i + b1) + b2),   φ = (W1, b1, w2, b2) ∈ R^{H(D+2)+1},
/// s_i the sample's state (a row of S, B × D), W1 H × D row-major. A pass at (φ, S) gives c,
/// the VJP Σ_i r_i ∂c_i/∂φ and the JVP ∂c/∂φ · u exactly, with the policy's operations: on
/// the CUDA policy nothing of the batch comes to the host. W1, w2 and the biases enter the
/// products where they lie in φ (gemm_by_segment, layers/detail/bias_rows.hpp): no copy of a
/// segment per pass; each bias is added in the pass of the map after it (the ReLU, the
/// logistic, their tangents), and each bias's gradient summed in the pass of that map's
/// adjoint: 5 operations for the weights, 6 for the JVP and 6 for the VJP.
#include <cstddef>
#include <stdexcept>
#include <string>

#include "bilevel/core/elementwise.hpp"
#include "bilevel/core/tensor_policy.hpp"
#include "bilevel/learners/activation.hpp"
#include "bilevel/learners/layers/detail/bias_rows.hpp"

namespace bilevel::learners {

template <nn_tensor_policy P>
class weighting_head_pass {
 public:
  using vector = vector_t<P>;
  using matrix = typename P::matrix;
  using scalar = scalar_t<P>;

  /// Number of parameters of a head with `hidden` units on D-dimensional states.
  static constexpr std::size_t parameters(std::size_t hidden, std::size_t state_size) {
    return hidden * (state_size + 2) + 1;
  }

  /// The forward pass; throws naming `who` if φ has the wrong size.
  weighting_head_pass(const vector& phi, const matrix& states, std::size_t hidden, const char* who)
      : phi_(phi), states_(states), hidden_(hidden), d_(P::cols(states)) {
    if (P::size(phi) != parameters(hidden, d_))
      throw std::invalid_argument(std::string("bilevel::learners::") + who + ": parameters have " +
                                  std::to_string(P::size(phi)) + " entries, a head with " + std::to_string(hidden) +
                                  " hidden units on " + std::to_string(d_) + "-dimensional states has " +
                                  std::to_string(parameters(hidden, d_)));
    // Each bias added in the pass of the map after it (layers/detail/bias_rows.hpp): the ReLU
    // of the hidden units, the logistic of the output.
    matrix z;
    hidden_product(phi, pre_);
    detail::add_bias_row_then_map<P>(phi, hidden_ * d_, pre_, hidden_units_, relu_value{});
    P::gemm_by_segment(scalar(1), hidden_units_, false, phi, w2_offset(), hidden, 1, false, scalar(0), z);
    detail::add_bias_row_then_map<P>(phi, output_bias_offset(), z, c_column_, elementwise::logistic{});
    P::row_sums(c_column_, c_);  // the B × 1 column as a vector
  }

  /// c, one weight per sample.
  [[nodiscard]] const vector& weights() const { return c_; }

  /// Σ_i r_i ∂c_i/∂φ: back through the sigmoid (δ_i = r_i c_i (1 − c_i)), then the hidden
  /// layer as a network's backward pass does.
  [[nodiscard]] vector vjp(const vector& r) const {
    const std::size_t H = hidden_, B = P::rows(states_);
    vector g;
    P::resize(g, parameters(H, d_));  // each of W1, b1, w2 and b2 is written below
    matrix r_column, d, dh;
    P::reshape(r, B, 1, r_column);
    // Each map's adjoint and the gradient of the bias before it in one pass (bias_rows.hpp).
    detail::map_then_bias_gradient_into<P>(d, g, output_bias_offset(), elementwise::logistic_slope_from_value_times{},
                                           c_column_, r_column);                                 // δ, b2
    P::gemm_into_segment(scalar(1), hidden_units_, true, d, false, scalar(0), g, w2_offset());  // w2
    P::gemm_by_segment(scalar(1), d, false, phi_, w2_offset(), 1, H, false, scalar(0), dh);  // into the hidden units
    detail::map_then_bias_gradient_into<P>(dh, g, H * d_, relu_slope_product{}, dh, pre_);   // ⊙ relu'(A), b1
    P::gemm_into_segment(scalar(1), dh, true, states_, false, scalar(0), g, 0);               // W1 (H × D)
    return g;
  }

  /// ∂c/∂φ · u = c (1 − c) ⊙ ż, ż = relu(A) u_w2 + (relu'(A) ⊙ (S U1ᵀ + 1 u_b1ᵀ)) w2 + u_b2.
  [[nodiscard]] vector jvp(const vector& u) const {
    if (P::size(u) != P::size(phi_))
      throw std::invalid_argument("bilevel::learners::weighting_head_pass: a tangent of " +
                                  std::to_string(P::size(u)) + " entries for " + std::to_string(P::size(phi_)) +
                                  " parameters");
    const std::size_t H = hidden_;
    vector out;
    matrix a_dot, zd, out_column;
    hidden_product(u, a_dot);
    detail::add_bias_row_then_map<P>(u, H * d_, a_dot, a_dot, relu_slope_product{}, pre_);  // ⊙ relu'(A)
    P::gemm_by_segment(scalar(1), hidden_units_, false, u, w2_offset(), H, 1, false, scalar(0), zd);
    P::gemm_by_segment(scalar(1), a_dot, false, phi_, w2_offset(), H, 1, false, scalar(1), zd);
    detail::add_bias_row_then_map<P>(u, output_bias_offset(), zd, out_column, slope_from_value_times{}, c_column_);
    P::row_sums(out_column, out);
    return out;
  }

 private:
  /// (ż, c) ↦ c(1 − c)·ż: the logistic's tangent from its value.
  struct slope_from_value_times {
    using bilevel_device_callable = void;
    template <class S>
    BILEVEL_HOST_DEVICE S operator()(S z_dot, S c) const {
      return elementwise::logistic_slope_from_value_times{}(c, z_dot);
    }
  };
  [[nodiscard]] std::size_t w2_offset() const { return hidden_ * (d_ + 1); }
  [[nodiscard]] std::size_t output_bias_offset() const { return hidden_ * (d_ + 2); }
  /// S p_W1ᵀ (B × H) for a parameter-shaped p (φ itself, or a tangent); its bias p_b1 is added
  /// with the map that follows.
  void hidden_product(const vector& p, matrix& out) const {
    P::gemm_by_segment(scalar(1), states_, false, p, 0, hidden_, d_, true, scalar(0), out);
  }

  const vector& phi_;
  const matrix& states_;
  std::size_t hidden_, d_;
  matrix pre_, hidden_units_;  // A = S W1ᵀ + 1 b1ᵀ and relu(A), B × H
  matrix c_column_;            // c as a B × 1 column (the JVP's other operand)
  vector c_;
};

}  // namespace bilevel::learners
