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
/// equations were not available (see docs/methods.md, "Deep interactions"); this follows
/// its abstract and introduction (penultimate states, logits, loss, label) and normalises h
/// and z so the teacher's input has a fixed scale whatever the student's.
///
/// As a Weighting (sample_weighting.hpp) it gives c, Σ r_i ∂c_i/∂φ and ∂c/∂φ · u exactly:
/// the weighting head (weighting_head.hpp) on these states, all with the policy's operations
/// (on the CUDA policy only the batch's labels go up, as one-hot rows).
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "bilevel/core/elementwise.hpp"
#include "bilevel/core/learner.hpp"
#include "bilevel/learners/classification_batch.hpp"
#include "bilevel/learners/sample_weighting.hpp"
#include "bilevel/learners/weighting_head.hpp"

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

  template <nn_tensor_policy P>
  vector_t<P> gather(input_list<P> in, const classification_batch<P>& b, const sample_signals<P>& s) const {
    const auto states = state_matrix<P>(b, s);
    return head<P>(*in[0], states).weights();
  }
  /// Σ_i r_i ∂c_i/∂φ.
  template <nn_tensor_policy P>
  vector_t<P> scatter(input_list<P> in, const classification_batch<P>& b, const sample_signals<P>& s,
                      const vector_t<P>& r, std::size_t = 0) const {
    const auto states = state_matrix<P>(b, s);
    return head<P>(*in[0], states).vjp(r);
  }
  /// ∂c/∂φ · u.
  template <nn_tensor_policy P>
  vector_t<P> gather_tangent(input_list<P> in, const classification_batch<P>& b, const sample_signals<P>& s,
                             const vector_t<P>& u, std::size_t = 0) const {
    const auto states = state_matrix<P>(b, s);
    return head<P>(*in[0], states).jvp(u);
  }

  /// The state vectors of a batch (B × D), as the teacher sees them, built where the policy
  /// computes: the four parts are computed as matrices, laid one after another in a vector,
  /// and read back row by row through an index map (the policy has no column concatenation).
  template <nn_tensor_policy P>
  [[nodiscard]] typename P::matrix state_matrix(const classification_batch<P>& b, const sample_signals<P>& s) const {
    using matrix = typename P::matrix;
    if (!s.features || !s.logits)
      throw std::invalid_argument("bilevel::learners::teacher_weighting_net: the student shows no features/logits");
    const std::size_t B = b.size(), F = features, C = classes, D = state_size();
    if (P::rows(*s.features) != B || P::cols(*s.features) != F || P::cols(*s.logits) != C)
      throw std::invalid_argument("bilevel::learners::teacher_weighting_net: built for " + std::to_string(F) +
                                  " features and " + std::to_string(C) + " classes, the student shows " +
                                  std::to_string(P::cols(*s.features)) + " and " + std::to_string(P::cols(*s.logits)));
    matrix h = *s.features, p, y;
    vector_t<P> scale;
    P::row_dots(h, h, scale);
    P::transform(scale, scale, elementwise::inverse_sqrt_or_zero{});
    P::scale_rows(h, scale);  // h/‖h‖ (0 for a zero row)
    P::row_softmax(*s.logits, p);
    std::vector<scalar_t<P>> onehot(B * C, scalar_t<P>(0));  // from the labels: host data of the batch
    for (std::size_t i = 0; i < B; ++i) {
      const int label = b.labels.at(i);
      if (label >= 0 && std::size_t(label) < C) onehot[i * C + std::size_t(label)] = scalar_t<P>(1);
    }
    y = P::matrix_from_host(B, C, onehot);
    vector_t<P> parts = P::zeros(B * D);
    P::flatten_into(h, parts, 0);
    P::flatten_into(p, parts, B * F);
    P::set_segment(s.losses, parts, B * (F + C));
    P::flatten_into(y, parts, B * (F + C + 1));
    matrix column, states;
    P::reshape(parts, B * D, 1, column);
    P::gather(column, interleaving(B), B, D, states);
    return states;
  }

 private:
  template <nn_tensor_policy P>
  weighting_head_pass<P> head(const vector_t<P>& phi, const typename P::matrix& states) const {
    return weighting_head_pass<P>(phi, states, hidden, "teacher_weighting_net");
  }
  /// Row i of the states reads h_i (B·F values at 0), softmax(z_i) (B·C at B·F), ℓ_i (B at
  /// B·(F + C)) and onehot(y_i) (B·C at B·(F + C + 1)) from the parts vector.
  [[nodiscard]] std::vector<std::int64_t> interleaving(std::size_t B) const {
    const std::size_t F = features, C = classes;
    std::vector<std::int64_t> index;
    index.reserve(B * state_size());
    for (std::size_t i = 0; i < B; ++i) {
      for (std::size_t k = 0; k < F; ++k) index.push_back(std::int64_t(i * F + k));
      for (std::size_t k = 0; k < C; ++k) index.push_back(std::int64_t(B * F + i * C + k));
      index.push_back(std::int64_t(B * (F + C) + i));
      for (std::size_t k = 0; k < C; ++k) index.push_back(std::int64_t(B * (F + C + 1) + i * C + k));
    }
    return index;
  }
};

}  // namespace bilevel::learners
