// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// Meta-Weight-Net's weighting function (Shu et al., NeurIPS 2019): each sample's weight is a
/// small network of its own (detached) loss,
///     c_i = V(ℓ_i; Θ) = σ(w2ᵀ relu(w1 ℓ_i + b1) + b2),   Θ = (w1, b1, w2, b2) ∈ R^{3H+1},
/// read by the classifier from an upper level as its input 0. As a Weighting (see
/// sample_weighting.hpp) it provides c, the VJP Σ r_i ∂c_i/∂Θ and the JVP ∂c/∂Θ · u, exactly.
/// The network is tiny (H = 100 in the paper) and evaluated per batch on the host.
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

  template <tensor_policy P>
  vector_t<P> gather(input_list<P> in, const classification_batch<P>&, const sample_signals<P>& s) const {
    const auto theta = host<P>(in);
    const auto l = P::to_host(s.losses);
    std::vector<scalar_t<P>> c(l.size());
    for (std::size_t i = 0; i < l.size(); ++i) c[i] = scalar_t<P>(weight(theta, double(l[i])));
    return P::from_host(c);
  }
  /// Σ_i r_i ∂c_i/∂Θ.
  template <tensor_policy P>
  vector_t<P> scatter(input_list<P> in, const classification_batch<P>&, const sample_signals<P>& s,
                      const vector_t<P>& r, std::size_t = 0) const {
    const auto theta = host<P>(in);
    const auto l = P::to_host(s.losses), rh = P::to_host(r);
    std::vector<double> g(theta.size(), 0.0);
    const std::size_t H = hidden;
    for (std::size_t i = 0; i < l.size(); ++i) {
      const double c = weight(theta, double(l[i]));
      const double delta = double(rh[i]) * c * (1.0 - c);  // through the sigmoid
      for (std::size_t j = 0; j < H; ++j) {
        const double a = theta[j] * double(l[i]) + theta[H + j];
        if (a > 0) {
          g[2 * H + j] += delta * a;                     // w2
          const double dh = delta * theta[2 * H + j];    // into the hidden unit
          g[j] += dh * double(l[i]);                     // w1
          g[H + j] += dh;                                // b1
        }
      }
      g[3 * H] += delta;  // b2
    }
    return P::from_host(std::vector<scalar_t<P>>(g.begin(), g.end()));
  }
  /// ∂c/∂Θ · u.
  template <tensor_policy P>
  vector_t<P> gather_tangent(input_list<P> in, const classification_batch<P>&, const sample_signals<P>& s,
                             const vector_t<P>& u, std::size_t = 0) const {
    const auto theta = host<P>(in);
    const auto l = P::to_host(s.losses), uh = P::to_host(u);
    const std::size_t H = hidden;
    std::vector<scalar_t<P>> out(l.size());
    for (std::size_t i = 0; i < l.size(); ++i) {
      const double c = weight(theta, double(l[i]));
      double z_dot = double(uh[3 * H]);
      for (std::size_t j = 0; j < H; ++j) {
        const double a = theta[j] * double(l[i]) + theta[H + j];
        if (a > 0) z_dot += double(uh[2 * H + j]) * a + theta[2 * H + j] * (double(uh[j]) * double(l[i]) + double(uh[H + j]));
      }
      out[i] = scalar_t<P>(c * (1.0 - c) * z_dot);
    }
    return P::from_host(out);
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
  std::vector<double> host(input_list<P> in) const {
    const auto t = P::to_host(*in[0]);
    if (t.size() != 3 * hidden + 1)
      throw std::invalid_argument("bilevel::learners::loss_weighting_net: parameters have " + std::to_string(t.size()) +
                                  " entries, a net with " + std::to_string(hidden) + " hidden units has " +
                                  std::to_string(3 * hidden + 1));
    return {t.begin(), t.end()};
  }
};

}  // namespace bilevel::learners
