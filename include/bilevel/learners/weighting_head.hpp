// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// The network both learned weightings end in (Meta-Weight-Net's V, loss_weighting_net.hpp, and
/// the deep-interactions teacher, teacher_weighting_net.hpp): each sample's weight is
///     c_i = σ(w2ᵀ relu(W1 s_i + b1) + b2),   φ = (W1, b1, w2, b2) ∈ R^{H(D+2)+1},
/// s_i the sample's state (a row of S, B × D), W1 H × D row-major. A pass at (φ, S) gives c,
/// the VJP Σ_i r_i ∂c_i/∂φ and the JVP ∂c/∂φ · u exactly, with the policy's operations: on
/// the CUDA policy nothing of the batch comes to the host.
#include <cstddef>
#include <stdexcept>
#include <string>

#include "bilevel/core/elementwise.hpp"
#include "bilevel/core/tensor_policy.hpp"
#include "bilevel/learners/activation.hpp"

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
    matrix a;
    pre_activation(phi, a);
    P::transform(a, hidden_units_, activation_value{activation::relu});
    P::transform(a, slope_, activation_slope{activation::relu});
    vector w2, z;
    P::segment(phi, hidden * (d_ + 1), hidden, w2);
    P::gemv(scalar(1), hidden_units_, false, w2, scalar(0), z);
    add_output_bias(z, phi);
    P::transform(z, c_, elementwise::logistic{});
  }

  /// c, one weight per sample.
  [[nodiscard]] const vector& weights() const { return c_; }

  /// Σ_i r_i ∂c_i/∂φ: back through the sigmoid (δ_i = r_i c_i (1 − c_i)), then the hidden
  /// layer as a network's backward pass does.
  [[nodiscard]] vector vjp(const vector& r) const {
    const std::size_t H = hidden_, B = P::rows(states_);
    vector delta, part, g = P::zeros(parameters(H, d_));
    P::transform(c_, delta, elementwise::logistic_slope_from_value{});
    P::hadamard(delta, r, delta);
    P::gemv(scalar(1), hidden_units_, true, delta, scalar(0), part);  // w2
    P::set_segment(part, g, H * (d_ + 1));
    matrix d, w2, dh;
    P::reshape(delta, B, 1, d);
    P::column_sums(d, part);  // b2
    P::set_segment(part, g, H * (d_ + 2));
    P::unflatten(phi_, H * (d_ + 1), 1, H, w2);
    P::gemm(scalar(1), d, false, w2, false, scalar(0), dh);  // into the hidden units
    P::hadamard(dh, slope_, dh);
    P::gemm_into_segment(scalar(1), dh, true, states_, false, scalar(0), g, 0);  // W1 (H × D)
    P::column_sums(dh, part);  // b1
    P::set_segment(part, g, H * d_);
    return g;
  }

  /// ∂c/∂φ · u = c (1 − c) ⊙ ż, ż = relu(A) u_w2 + (relu'(A) ⊙ (S U1ᵀ + 1 u_b1ᵀ)) w2 + u_b2.
  [[nodiscard]] vector jvp(const vector& u) const {
    if (P::size(u) != P::size(phi_))
      throw std::invalid_argument("bilevel::learners::weighting_head_pass: a tangent of " +
                                  std::to_string(P::size(u)) + " entries for " + std::to_string(P::size(phi_)) +
                                  " parameters");
    const std::size_t H = hidden_;
    vector part, z_dot, w2, out;
    matrix a_dot;
    pre_activation(u, a_dot);
    P::hadamard(a_dot, slope_, a_dot);
    P::segment(u, H * (d_ + 1), H, part);
    P::gemv(scalar(1), hidden_units_, false, part, scalar(0), z_dot);
    P::segment(phi_, H * (d_ + 1), H, w2);
    P::gemv(scalar(1), a_dot, false, w2, scalar(1), z_dot);
    add_output_bias(z_dot, u);
    P::transform(c_, out, elementwise::logistic_slope_from_value{});
    P::hadamard(out, z_dot, out);
    return out;
  }

 private:
  /// S p_W1ᵀ + 1 p_b1ᵀ (B × H) for a parameter-shaped p (φ itself, or a tangent).
  void pre_activation(const vector& p, matrix& out) const {
    matrix w1;
    vector b1;
    P::unflatten(p, 0, hidden_, d_, w1);
    P::gemm(scalar(1), states_, false, w1, true, scalar(0), out);
    P::segment(p, hidden_ * d_, hidden_, b1);
    P::add_row(out, b1);
  }
  /// z += p's output bias, read where it lives (no host transfer).
  void add_output_bias(vector& z, const vector& p) const {
    matrix column;
    vector bias;
    P::reshape(z, P::size(z), 1, column);
    P::segment(p, hidden_ * (d_ + 2), 1, bias);
    P::add_row(column, bias);
    P::row_sums(column, z);
  }

  const vector& phi_;
  const matrix& states_;
  std::size_t hidden_, d_;
  matrix hidden_units_, slope_;  // relu(A) and relu'(A), B × H
  vector c_;
};

}  // namespace bilevel::learners
