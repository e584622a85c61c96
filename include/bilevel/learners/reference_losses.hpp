// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// A first learner's per-sample losses on a fixed set of reference (validation) samples,
/// u_j(W1) = ℓ(W1; x̃_j, ỹ_j), with the two exact products weightings built on them need:
///   vjp(W1, β) = Σ_j β_j ∇u_j(W1)    (W1's gradient with per-reference weights),
///   jvp(W1, t) = (⟨∇u_j(W1), t⟩)_j    (per-sample loss tangents, W1's R-operator).
/// The "mistakes" that LFM's sample weights and LFM-CW's class weights are driven by.
///
/// The first learner is an MLP (given by its widths) or any sequential network; when that
/// network has mixed operations (LFM's architecture-search form) the losses also depend on
/// its architecture A, which every member then takes, and two more products exist:
///   arch_vjp(W1, β, A) = Σ_j β_j ∂u_j/∂A   (the architecture gradient with weights β),
///   arch_jvp(W1, t, A) = (⟨∂u_j/∂A, t⟩)_j   (one single-sample backward pass per reference:
///                                            exact, about the cost of one pass over them).
#include <cstddef>
#include <stdexcept>
#include <string>
#include <vector>

#include "bilevel/core/device_loss.hpp"
#include "bilevel/learners/classification_batch.hpp"
#include "bilevel/learners/mlp.hpp"
#include "bilevel/learners/sample_weighting.hpp"
#include "bilevel/learners/networks/network_design.hpp"
#include "bilevel/learners/sequential.hpp"

namespace bilevel::learners {

template <nn_tensor_policy P>
class reference_losses {
 public:
  using vector = vector_t<P>;

  reference_losses(const std::vector<std::size_t>& first_learner_widths, const data::dataset& references)
      : reference_losses(mlp<P, sample_weights>(first_learner_widths, activation::relu, loss_kind::cross_entropy,
                                                sample_weights(references.rows)),
                         references) {}

  /// The first learner's network on `input`-shaped samples, from its layers (which may hold
  /// mixed operations).
  reference_losses(geometry input, const std::vector<layer::spec>& first_learner_layers,
                   const data::dataset& references)
      : reference_losses(layer_specs{input, first_learner_layers}, references) {}
  /// The first learner's network of a design (a ResNet, the DARTS supernet, ...).
  reference_losses(const network_design& first_learner, const data::dataset& references)
      : reference_losses(build_network<P, sample_weights>(first_learner, sample_weights(references.rows)),
                         references) {}

  [[nodiscard]] std::size_t size() const { return batch_.size(); }
  [[nodiscard]] std::size_t num_parameters() const { return net_.num_parameters(); }
  /// Entries of the first learner's architecture (0 without mixed operations).
  [[nodiscard]] std::size_t arch_size() const { return net_.arch_size(); }
  [[nodiscard]] const classification_batch<P>& batch() const { return batch_; }
  [[nodiscard]] const std::vector<int>& labels() const { return batch_.labels; }

  /// (u_j(W1))_j, on the policy's device.
  [[nodiscard]] vector losses(const vector& w1, const vector* arch = nullptr) const {
    const auto in = inputs(ones_, arch);
    return net_.forward(w1, batch_, input_list<P>(in)).losses;
  }
  /// Σ_j β_j ∇u_j(W1): the gradient of (1/n) Σ_j (n β_j) u_j.
  [[nodiscard]] vector vjp(const vector& w1, const vector& beta, const vector* arch = nullptr) const {
    const vector wv = scaled_weights(beta);
    const auto in = inputs(wv, arch);
    vector out;
    gradient_into(net_, w1, input_list<P>(in), batch_, out);
    return out;
  }
  /// u̇_j = ⟨∇u_j(W1), t⟩: n times the mixed product of the weighted loss at unit weights.
  [[nodiscard]] vector jvp(const vector& w1, const vector& t, const vector* arch = nullptr) const {
    vector per;
    const auto in = inputs(ones_, arch);
    net_.mixed_vjp(w1, input_list<P>(in), batch_, 0, t, per);
    P::scale(per, scalar_t<P>(size()));
    return per;
  }
  /// Σ_j β_j ∂u_j/∂A, the architecture gradient of (1/n) Σ_j (n β_j) u_j.
  [[nodiscard]] vector arch_vjp(const vector& w1, const vector& beta, const vector& arch) const {
    const vector wv = scaled_weights(beta);
    const auto in = inputs(wv, &arch);
    vector out;
    net_.input_gradient(w1, input_list<P>(in), batch_, net_.arch_slot(), out);
    return out;
  }
  /// (⟨∂u_j/∂A, t⟩)_j. The network has no per-sample tangent along A, so each reference's
  /// architecture gradient is taken on its own (a batch of one: exact). Each is a dot product
  /// read on the host: n small transfers, in the architecture-search form only.
  [[nodiscard]] vector arch_jvp(const vector& w1, const vector& t, const vector& arch) const {
    if (singles_.empty())
      for (std::size_t j = 0; j < size(); ++j) {
        const std::size_t row[] = {j};
        singles_.push_back(make_batch<P>(references_, row));
      }
    const auto in = inputs(ones_, &arch);
    std::vector<scalar_t<P>> out(size());
    vector g;
    for (std::size_t j = 0; j < size(); ++j) {
      net_.input_gradient(w1, input_list<P>(in), singles_[j], net_.arch_slot(), g);
      out[j] = scalar_t<P>(P::dot(g, t));
    }
    return P::from_host(out);
  }

 private:
  reference_losses(sequential<P, sample_weights> net, const data::dataset& references)
      : net_(std::move(net)), references_(references) {
    if (references.rows == 0) throw std::invalid_argument("bilevel::learners::reference_losses: no reference samples");
    // ids 0..n−1: the per-reference weights are a table over them
    std::vector<std::size_t> all(references_.rows);
    for (std::size_t j = 0; j < references_.rows; ++j) references_.ids[j] = all[j] = j;
    batch_ = make_batch<P>(references_, all);
    ones_ = P::zeros(references_.rows);
    P::fill(ones_, scalar_t<P>(1));
  }

  [[nodiscard]] vector scaled_weights(const vector& beta) const {
    if (P::size(beta) != size())
      throw std::invalid_argument("bilevel::learners::reference_losses: " + std::to_string(P::size(beta)) +
                                  " weights for " + std::to_string(size()) + " reference samples");
    vector w;
    P::copy(beta, w);
    P::scale(w, scalar_t<P>(size()));
    return w;
  }
  /// The network's inputs: per-reference weights, then the architecture when it has one.
  [[nodiscard]] std::vector<const vector*> inputs(const vector& weights, const vector* arch) const {
    if ((arch != nullptr) != (arch_size() > 0))
      throw std::invalid_argument(std::string("bilevel::learners::reference_losses: the first learner's network ") +
                                  (arch_size() > 0 ? "has mixed operations but no architecture was given"
                                                   : "has no mixed operations but an architecture was given"));
    std::vector<const vector*> in = {&weights};
    if (arch) in.push_back(arch);
    return in;
  }

  sequential<P, sample_weights> net_;
  data::dataset references_;
  classification_batch<P> batch_;
  mutable std::vector<classification_batch<P>> singles_;  ///< one batch per reference, built when first needed
  vector ones_;
};

}  // namespace bilevel::learners
