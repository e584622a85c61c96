// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// A teacher that reads the student's internal states (Fan et al., "Learning to Reweight with
/// Deep Interactions", AAAI 2021): each sample's weight is a small network of what the
/// student computed for it,
///     s_i = [ h_i/‖h_i‖ , softmax(z_i) , ℓ_i , onehot(y_i) ] ∈ R^{F + 2C + 1},
///     c_i = σ(w2ᵀ relu(W1 s_i + b1) + b2),    φ = (W1, b1, w2, b2) ∈ R^{H(D+2)+1},
/// h_i the features entering the student's last layer (penultimate layer), z_i its logits,
/// ℓ_i its loss, y_i the (possibly noisy) label. The states are detached: the student treats
/// c as constants and φ learns only through the validation loss after the student's step,
/// as Meta-Weight-Net's net does. Reconstruction: the paper's teacher architecture and update
/// equations were not available (see ../shared/reference/algorithms.md §7); this follows
/// its abstract and introduction (penultimate states, logits, loss, label) and normalises h
/// and z so the teacher's input has a fixed scale whatever the student's.
///
/// As a Weighting (sample_weighting.hpp) it gives c, Σ r_i ∂c_i/∂φ and ∂c/∂φ · u exactly,
/// computed on the host (B × D times D × H per call).
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "bilevel/core/learner.hpp"
#include "bilevel/learners/classification_batch.hpp"
#include "bilevel/learners/sample_weighting.hpp"

namespace bilevel::learners {

struct teacher_weighting_net {
  std::size_t features = 0;  ///< F, the width of the student's penultimate layer
  std::size_t classes = 0;   ///< C
  std::size_t hidden = 100;  ///< H

  static constexpr std::size_t num_inputs = 1;
  [[nodiscard]] std::size_t state_size() const { return features + 2 * classes + 1; }
  [[nodiscard]] std::size_t input_size(std::size_t) const { return hidden * (state_size() + 2) + 1; }

  /// PyTorch's default Linear initialisation, U(±1/√fan_in), seeded.
  template <tensor_policy P>
  [[nodiscard]] vector_t<P> initial_parameters(std::uint64_t seed) const {
    std::mt19937_64 gen(seed);
    const double a1 = 1.0 / std::sqrt(double(state_size())), a2 = 1.0 / std::sqrt(double(hidden));
    std::uniform_real_distribution<double> first(-a1, a1), second(-a2, a2);
    std::vector<scalar_t<P>> t(input_size(0));
    const std::size_t layer1 = hidden * (state_size() + 1);
    for (std::size_t j = 0; j < t.size(); ++j) t[j] = scalar_t<P>(j < layer1 ? first(gen) : second(gen));
    return P::from_host(t);
  }

  template <tensor_policy P>
  vector_t<P> gather(input_list<P> in, const classification_batch<P>& b, const sample_signals<P>& s) const {
    const pass f = forward<P>(in, b, s);
    return P::from_host(std::vector<scalar_t<P>>(f.c.begin(), f.c.end()));
  }

  /// Σ_i r_i ∂c_i/∂φ.
  template <tensor_policy P>
  vector_t<P> scatter(input_list<P> in, const classification_batch<P>& b, const sample_signals<P>& s,
                      const vector_t<P>& r, std::size_t = 0) const {
    const pass f = forward<P>(in, b, s);
    const auto rh = P::to_host(r);
    const std::size_t D = state_size(), H = hidden, B = f.c.size();
    std::vector<double> g(input_size(0), 0.0);
    double* gW1 = g.data();
    double* gb1 = gW1 + H * D;
    double* gw2 = gb1 + H;
    double& gb2 = g[H * (D + 2)];
    for (std::size_t i = 0; i < B; ++i) {
      const double delta = double(rh[i]) * f.c[i] * (1.0 - f.c[i]);
      gb2 += delta;
      const double* si = &f.states[i * D];
      for (std::size_t j = 0; j < H; ++j) {
        const double a = f.pre[i * H + j];
        if (a <= 0) continue;
        gw2[j] += delta * a;
        const double dh = delta * f.theta[H * (D + 1) + j];
        gb1[j] += dh;
        double* row = gW1 + j * D;
        for (std::size_t k = 0; k < D; ++k) row[k] += dh * si[k];
      }
    }
    return P::from_host(std::vector<scalar_t<P>>(g.begin(), g.end()));
  }

  /// ∂c/∂φ · u.
  template <tensor_policy P>
  vector_t<P> gather_tangent(input_list<P> in, const classification_batch<P>& b, const sample_signals<P>& s,
                             const vector_t<P>& u, std::size_t = 0) const {
    const pass f = forward<P>(in, b, s);
    const auto uh = P::to_host(u);
    const std::size_t D = state_size(), H = hidden, B = f.c.size();
    std::vector<scalar_t<P>> out(B);
    for (std::size_t i = 0; i < B; ++i) {
      const double* si = &f.states[i * D];
      double z_dot = double(uh[H * (D + 2)]);
      for (std::size_t j = 0; j < H; ++j) {
        const double a = f.pre[i * H + j];
        if (a <= 0) continue;
        double a_dot = double(uh[H * D + j]);
        for (std::size_t k = 0; k < D; ++k) a_dot += double(uh[j * D + k]) * si[k];
        z_dot += double(uh[H * (D + 1) + j]) * a + f.theta[H * (D + 1) + j] * a_dot;
      }
      out[i] = scalar_t<P>(f.c[i] * (1.0 - f.c[i]) * z_dot);
    }
    return P::from_host(out);
  }

  /// The state vectors of a batch (B × D, row-major), as the teacher sees them.
  template <tensor_policy P>
  [[nodiscard]] std::vector<double> states(const classification_batch<P>& b, const sample_signals<P>& s) const {
    if (!s.features || !s.logits)
      throw std::invalid_argument("bilevel::learners::teacher_weighting_net: the student shows no features/logits");
    const std::size_t B = b.size(), D = state_size();
    if (P::rows(*s.features) != B || P::cols(*s.features) != features || P::cols(*s.logits) != classes)
      throw std::invalid_argument("bilevel::learners::teacher_weighting_net: built for " + std::to_string(features) +
                                  " features and " + std::to_string(classes) + " classes, the student shows " +
                                  std::to_string(P::cols(*s.features)) + " and " + std::to_string(P::cols(*s.logits)));
    const auto h = P::matrix_to_host(*s.features), z = P::matrix_to_host(*s.logits);
    const auto l = P::to_host(s.losses);
    std::vector<double> out(B * D, 0.0);
    for (std::size_t i = 0; i < B; ++i) {
      double* row = &out[i * D];
      double norm = 0;
      for (std::size_t k = 0; k < features; ++k) norm += double(h[i * features + k]) * double(h[i * features + k]);
      norm = norm > 0 ? 1.0 / std::sqrt(norm) : 0.0;
      for (std::size_t k = 0; k < features; ++k) row[k] = double(h[i * features + k]) * norm;
      double zmax = -std::numeric_limits<double>::infinity(), total = 0;
      for (std::size_t k = 0; k < classes; ++k) zmax = std::max(zmax, double(z[i * classes + k]));
      for (std::size_t k = 0; k < classes; ++k) total += (row[features + k] = std::exp(double(z[i * classes + k]) - zmax));
      for (std::size_t k = 0; k < classes; ++k) row[features + k] /= total;
      row[features + classes] = double(l[i]);
      const int y = b.labels.at(i);
      if (y >= 0 && std::size_t(y) < classes) row[features + classes + 1 + std::size_t(y)] = 1.0;
    }
    return out;
  }

 private:
  struct pass {
    std::vector<double> theta, states, pre, c;  // pre: B × H pre-activations
  };

  template <tensor_policy P>
  pass forward(input_list<P> in, const classification_batch<P>& b, const sample_signals<P>& s) const {
    pass f;
    const auto t = P::to_host(*in[0]);
    if (t.size() != input_size(0))
      throw std::invalid_argument("bilevel::learners::teacher_weighting_net: parameters have " + std::to_string(t.size()) +
                                  " entries, this teacher has " + std::to_string(input_size(0)));
    f.theta.assign(t.begin(), t.end());
    f.states = states<P>(b, s);
    const std::size_t D = state_size(), H = hidden, B = b.size();
    f.pre.assign(B * H, 0.0);
    f.c.assign(B, 0.0);
    for (std::size_t i = 0; i < B; ++i) {
      const double* si = &f.states[i * D];
      double z = f.theta[H * (D + 2)];
      for (std::size_t j = 0; j < H; ++j) {
        const double* w = &f.theta[j * D];
        double a = f.theta[H * D + j];
        for (std::size_t k = 0; k < D; ++k) a += w[k] * si[k];
        f.pre[i * H + j] = a;
        if (a > 0) z += f.theta[H * (D + 1) + j] * a;
      }
      f.c[i] = z >= 0 ? 1.0 / (1.0 + std::exp(-z)) : std::exp(z) / (1.0 + std::exp(z));
    }
    return f;
  }
};

}  // namespace bilevel::learners
