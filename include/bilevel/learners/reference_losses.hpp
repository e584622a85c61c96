// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// A first learner's per-sample losses on a fixed set of reference (validation) samples,
/// u_j(W1) = ℓ(W1; x̃_j, ỹ_j), with the two exact products weightings built on them need:
///   vjp(W1, β) = Σ_j β_j ∇u_j(W1)    (W1's gradient with per-reference weights),
///   jvp(W1, t) = (⟨∇u_j(W1), t⟩)_j    (per-sample loss tangents, W1's R-operator).
/// The "mistakes" that LFM's sample weights and LFM-CW's class weights are driven by.
#include <cstddef>
#include <stdexcept>
#include <vector>

#include "bilevel/core/learner.hpp"
#include "bilevel/learners/classification_batch.hpp"
#include "bilevel/learners/mlp.hpp"
#include "bilevel/learners/sample_weighting.hpp"

namespace bilevel::learners {

template <nn_tensor_policy P>
class reference_losses {
 public:
  using vector = vector_t<P>;

  reference_losses(const std::vector<std::size_t>& first_learner_widths, const data::dataset& references)
      : net_(first_learner_widths, activation::relu, loss_kind::cross_entropy, sample_weights(references.rows)) {
    if (references.rows == 0) throw std::invalid_argument("bilevel::learners::reference_losses: no reference samples");
    data::dataset renumbered = references;  // ids 0..n−1: the per-reference weights are a table over them
    std::vector<std::size_t> all(renumbered.rows);
    for (std::size_t j = 0; j < renumbered.rows; ++j) renumbered.ids[j] = all[j] = j;
    batch_ = make_batch<P>(renumbered, all);
    ones_ = P::zeros(renumbered.rows);
    P::fill(ones_, scalar_t<P>(1));
  }

  [[nodiscard]] std::size_t size() const { return batch_.size(); }
  [[nodiscard]] std::size_t num_parameters() const { return net_.num_parameters(); }
  [[nodiscard]] const classification_batch<P>& batch() const { return batch_; }
  [[nodiscard]] const std::vector<int>& labels() const { return batch_.labels; }

  [[nodiscard]] std::vector<double> losses(const vector& w1) const {
    const auto u = P::to_host(net_.forward(w1, batch_).losses);
    return {u.begin(), u.end()};
  }
  /// Σ_j β_j ∇u_j(W1): the gradient of (1/n) Σ_j (n β_j) u_j.
  [[nodiscard]] vector vjp(const vector& w1, const std::vector<double>& beta) const {
    std::vector<scalar_t<P>> w(size());
    for (std::size_t j = 0; j < size(); ++j) w[j] = scalar_t<P>(beta.at(j) * double(size()));
    const vector wv = P::from_host(w);
    const vector* in[] = {&wv};
    vector out;
    net_.gradient(w1, input_list<P>(in), batch_, out);
    return out;
  }
  /// u̇_j = ⟨∇u_j(W1), t⟩: n times the mixed product of the weighted loss at unit weights.
  [[nodiscard]] std::vector<double> jvp(const vector& w1, const vector& t) const {
    vector per;
    const vector* in[] = {&ones_};
    net_.mixed_vjp(w1, input_list<P>(in), batch_, 0, t, per);
    const auto h = P::to_host(per);
    std::vector<double> out(h.size());
    for (std::size_t j = 0; j < h.size(); ++j) out[j] = double(h[j]) * double(size());
    return out;
  }

 private:
  mlp<P, sample_weights> net_;
  classification_batch<P> batch_;
  vector ones_;
};

}  // namespace bilevel::learners
