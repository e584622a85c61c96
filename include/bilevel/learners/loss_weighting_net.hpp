// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// Meta-Weight-Net's weighting function (Shu et al., NeurIPS 2019): each sample's weight is a
/// small network of its own (detached) loss,
///     c_i = V(ℓ_i; Θ) = σ(w2ᵀ relu(w1 ℓ_i + b1) + b2),   Θ = (w1, b1, w2, b2) ∈ R^{3H+1},
/// read by the classifier from an upper level as its input 0. As a Weighting (see
/// sample_weighting.hpp) it provides c, the VJP Σ r_i ∂c_i/∂Θ and the JVP ∂c/∂Θ · u, exactly.
/// The network is tiny (H = 100 in the paper) but is evaluated with the policy's operations,
/// so on the CUDA policy the batch's losses never leave the device.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "bilevel/core/elementwise.hpp"
#include "bilevel/core/learner.hpp"
#include "bilevel/learners/activation.hpp"
#include "bilevel/learners/classification_batch.hpp"
#include "bilevel/learners/sample_weighting.hpp"

namespace bilevel::learners {

struct loss_weighting_net {
  std::size_t hidden = 100;
  static constexpr std::size_t num_inputs = 1;
  [[nodiscard]] std::size_t input_size(std::size_t) const { return 3 * hidden + 1; }

  /// PyTorch's default Linear initialisation, U(±1/√fan_in), seeded.
  template <tensor_policy P>
  [[nodiscard]] vector_t<P> initial_parameters(std::uint64_t seed) const {
    std::mt19937_64 gen(seed);
    std::uniform_real_distribution<double> first(-1.0, 1.0), second(-1.0 / std::sqrt(double(hidden)),
                                                                       1.0 / std::sqrt(double(hidden)));
    std::vector<scalar_t<P>> t(3 * hidden + 1);
    for (std::size_t j = 0; j < 2 * hidden; ++j) t[j] = scalar_t<P>(first(gen));
    for (std::size_t j = 2 * hidden; j < t.size(); ++j) t[j] = scalar_t<P>(second(gen));
    return P::from_host(t);
  }

  template <nn_tensor_policy P>
  vector_t<P> gather(input_list<P> in, const classification_batch<P>&, const sample_signals<P>& s) const {
    const forward_pass<P> f(*this, *in[0], s.losses);
    return f.c;
  }
  /// Σ_i r_i ∂c_i/∂Θ: back through the sigmoid (δ_i = r_i c_i (1 − c_i)), then the hidden
  /// layer as a network's backward pass does.
  template <nn_tensor_policy P>
  vector_t<P> scatter(input_list<P> in, const classification_batch<P>&, const sample_signals<P>& s,
                      const vector_t<P>& r, std::size_t = 0) const {
    using matrix = typename P::matrix;
    const forward_pass<P> f(*this, *in[0], s.losses);
    const std::size_t H = hidden, B = P::size(s.losses);
    vector_t<P> delta, part, g = P::zeros(3 * H + 1);
    P::transform(f.c, delta, elementwise::logistic_slope_from_value{});
    P::hadamard(delta, r, delta);
    P::gemv(scalar_t<P>(1), f.hidden, true, delta, scalar_t<P>(0), part);  // w2
    P::set_segment(part, g, 2 * H);
    matrix d, w2, dh;
    P::reshape(delta, B, 1, d);
    P::column_sums(d, part);  // b2
    P::set_segment(part, g, 3 * H);
    P::unflatten(*in[0], 2 * H, 1, H, w2);
    P::gemm(scalar_t<P>(1), d, false, w2, false, scalar_t<P>(0), dh);  // into the hidden units
    P::hadamard(dh, f.slope, dh);
    P::gemv(scalar_t<P>(1), dh, true, s.losses, scalar_t<P>(0), part);  // w1
    P::set_segment(part, g, 0);
    P::column_sums(dh, part);  // b1
    P::set_segment(part, g, H);
    return g;
  }
  /// ∂c/∂Θ · u = c (1 − c) ⊙ ż, ż = relu(A) u_w2 + (relu'(A) ⊙ (ℓ u_w1ᵀ + 1 u_b1ᵀ)) w2 + u_b2.
  template <nn_tensor_policy P>
  vector_t<P> gather_tangent(input_list<P> in, const classification_batch<P>&, const sample_signals<P>& s,
                             const vector_t<P>& u, std::size_t = 0) const {
    using matrix = typename P::matrix;
    const forward_pass<P> f(*this, *in[0], s.losses);
    check_size<P>(u);
    const std::size_t H = hidden;
    vector_t<P> part, z_dot, w2, out;
    matrix a_dot;
    f.pre_activation(u, a_dot);
    P::hadamard(a_dot, f.slope, a_dot);
    P::segment(u, 2 * H, H, part);
    P::gemv(scalar_t<P>(1), f.hidden, false, part, scalar_t<P>(0), z_dot);
    P::segment(*in[0], 2 * H, H, w2);
    P::gemv(scalar_t<P>(1), a_dot, false, w2, scalar_t<P>(1), z_dot);
    add_output_bias<P>(z_dot, u, H);
    P::transform(f.c, out, elementwise::logistic_slope_from_value{});
    P::hadamard(out, z_dot, out);
    return out;
  }

  /// V(ℓ; Θ) for one loss value.
  [[nodiscard]] double weight(const std::vector<double>& theta, double loss) const {
    const std::size_t H = hidden;
    double z = theta[3 * H];
    for (std::size_t j = 0; j < H; ++j) {
      const double a = theta[j] * loss + theta[H + j];
      if (a > 0) z += theta[2 * H + j] * a;
    }
    return z >= 0 ? 1.0 / (1.0 + std::exp(-z)) : std::exp(z) / (1.0 + std::exp(z));
  }

 private:
  template <tensor_policy P>
  void check_size(const vector_t<P>& theta) const {
    if (P::size(theta) != 3 * hidden + 1)
      throw std::invalid_argument("bilevel::learners::loss_weighting_net: parameters have " +
                                  std::to_string(P::size(theta)) + " entries, a net with " + std::to_string(hidden) +
                                  " hidden units has " + std::to_string(3 * hidden + 1));
  }
  /// z += Θ[3H] (the output bias, read where it lives: no host transfer).
  template <nn_tensor_policy P>
  static void add_output_bias(vector_t<P>& z, const vector_t<P>& theta, std::size_t H) {
    typename P::matrix column;
    vector_t<P> bias;
    P::reshape(z, P::size(z), 1, column);
    P::segment(theta, 3 * H, 1, bias);
    P::add_row(column, bias);
    P::row_sums(column, z);
  }
  /// The net at Θ for every loss of the batch, computed where the policy computes (a kernel
  /// per operation on the CUDA policy): pre-activations A = ℓ w1ᵀ + 1 b1ᵀ (B × H), hidden
  /// units relu(A), their slopes, and c = σ(relu(A) w2 + b2).
  template <nn_tensor_policy P>
  struct forward_pass {
    const loss_weighting_net& net;
    const vector_t<P>& theta;
    const vector_t<P>& losses;
    typename P::matrix hidden, slope;
    vector_t<P> c;

    forward_pass(const loss_weighting_net& n, const vector_t<P>& th, const vector_t<P>& l)
        : net(n), theta(th), losses(l) {
      n.check_size<P>(th);
      const std::size_t H = n.hidden;
      typename P::matrix a;
      pre_activation(th, a);
      P::transform(a, hidden, activation_value{activation::relu});
      P::transform(a, slope, activation_slope{activation::relu});
      vector_t<P> w2, z;
      P::segment(th, 2 * H, H, w2);
      P::gemv(scalar_t<P>(1), hidden, false, w2, scalar_t<P>(0), z);
      add_output_bias<P>(z, th, H);
      P::transform(z, c, elementwise::logistic{});
    }
    /// ℓ p_w1ᵀ + 1 p_b1ᵀ for a parameter-shaped p (Θ itself, or a tangent).
    void pre_activation(const vector_t<P>& p, typename P::matrix& out) const {
      const std::size_t H = net.hidden, B = P::size(losses);
      typename P::matrix l, w1;
      vector_t<P> b1;
      P::reshape(losses, B, 1, l);
      P::unflatten(p, 0, 1, H, w1);
      P::gemm(scalar_t<P>(1), l, false, w1, false, scalar_t<P>(0), out);
      P::segment(p, H, H, b1);
      P::add_row(out, b1);
    }
  };
};

}  // namespace bilevel::learners
