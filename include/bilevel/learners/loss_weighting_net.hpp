// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// Meta-Weight-Net's weighting function (Shu et al., NeurIPS 2019): each sample's weight is a
/// small network of its own (detached) loss,
///     c_i = V(ℓ_i; Θ) = σ(w2ᵀ relu(w1 ℓ_i + b1) + b2),   Θ = (w1, b1, w2, b2) ∈ R^{3H+1},
/// read by the classifier from an upper level as its input 0. As a Weighting (see
/// sample_weighting.hpp) it provides c, the VJP Σ r_i ∂c_i/∂Θ and the JVP ∂c/∂Θ · u, exactly.
/// It is the weighting head (weighting_head.hpp) on one-dimensional states, so Θ is laid out
/// (w1, b1, w2, b2) and evaluated with the policy's operations: on the CUDA policy the batch's
/// losses never leave the device.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "bilevel/core/learner.hpp"
#include "bilevel/learners/classification_batch.hpp"
#include "bilevel/learners/sample_weighting.hpp"
#include "bilevel/learners/weighting_head.hpp"

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
    const auto l = states<P>(s);
    return head<P>(*in[0], l).weights();
  }
  /// Σ_i r_i ∂c_i/∂Θ.
  template <nn_tensor_policy P>
  vector_t<P> scatter(input_list<P> in, const classification_batch<P>&, const sample_signals<P>& s,
                      const vector_t<P>& r, std::size_t = 0) const {
    const auto l = states<P>(s);
    return head<P>(*in[0], l).vjp(r);
  }
  /// ∂c/∂Θ · u.
  template <nn_tensor_policy P>
  vector_t<P> gather_tangent(input_list<P> in, const classification_batch<P>&, const sample_signals<P>& s,
                             const vector_t<P>& u, std::size_t = 0) const {
    const auto l = states<P>(s);
    return head<P>(*in[0], l).jvp(u);
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
  /// Each sample's state is its loss alone: S = ℓ as a B × 1 matrix.
  template <nn_tensor_policy P>
  static typename P::matrix states(const sample_signals<P>& s) {
    typename P::matrix l;
    P::reshape(s.losses, P::size(s.losses), 1, l);
    return l;
  }
  template <nn_tensor_policy P>
  weighting_head_pass<P> head(const vector_t<P>& theta, const typename P::matrix& states) const {
    return weighting_head_pass<P>(theta, states, hidden, "loss_weighting_net");
  }
};

}  // namespace bilevel::learners
