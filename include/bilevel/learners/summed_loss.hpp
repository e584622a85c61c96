// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// A sum of learners that share the upper variable θ and read one input each:
///
///     L(θ; in_1, …, in_K, batch) = Σ_k L_k(θ; in_k, batch),
///
/// e.g. Small-Group Learning's top level, Σ_k L_val(V_k*, A_k) over K learners, θ = [A_1 | … |
/// A_K] and L_k an architecture_loss reading its block (methods/small_group_learning.hpp).
/// Every term sees the same batch. First order only (gradient and input gradient): it is
/// meant as a top level, whose objective is never differentiated through.
#include <cstddef>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "bilevel/core/device_loss.hpp"

namespace bilevel::learners {

template <class Term>
  requires input_differentiable_learner<Term> && declares_inputs<Term>
class summed_loss {
 public:
  using policy = typename Term::policy;
  using batch_type = typename Term::batch_type;
  using vector = vector_t<policy>;

  explicit summed_loss(std::vector<Term> terms) : terms_(std::move(terms)) {
    if (terms_.empty()) throw std::invalid_argument("bilevel::learners::summed_loss: no terms");
    for (std::size_t k = 0; k < terms_.size(); ++k) {
      if (terms_[k].num_inputs() != 1)
        throw std::invalid_argument("bilevel::learners::summed_loss: term " + std::to_string(k) + " reads " +
                                    std::to_string(terms_[k].num_inputs()) + " inputs, each must read one");
      if (terms_[k].num_parameters() != terms_[0].num_parameters())
        throw std::invalid_argument("bilevel::learners::summed_loss: the terms' variables differ in size");
    }
  }

  [[nodiscard]] std::size_t num_parameters() const { return terms_[0].num_parameters(); }
  [[nodiscard]] std::size_t num_inputs() const { return terms_.size(); }
  [[nodiscard]] std::size_t input_size(std::size_t k) const { return terms_.at(k).input_size(0); }
  [[nodiscard]] const std::vector<Term>& terms() const { return terms_; }

  double loss(const vector& theta, input_list<policy> in, const batch_type& b) const {
    double total = 0;
    for (std::size_t k = 0; k < terms_.size(); ++k) total += terms_[k].loss(theta, in.subspan(k, 1), b);
    return total;
  }
  double gradient(const vector& theta, input_list<policy> in, const batch_type& b, vector& out) const {
    double total = 0;
    vector g;
    for (std::size_t k = 0; k < terms_.size(); ++k) {
      total += terms_[k].gradient(theta, in.subspan(k, 1), b, k == 0 ? out : g);
      if (k > 0) policy::axpy(scalar_t<policy>(1), g, out);
    }
    return total;
  }
  /// The same, the terms' losses added into the slot on the policy's storage
  /// (core/device_loss.hpp).
  void loss(const vector& theta, input_list<policy> in, const batch_type& b, loss_slot<policy> slot) const {
    for (std::size_t k = 0; k < terms_.size(); ++k) loss_into(terms_[k], theta, in.subspan(k, 1), b, slot);
  }
  void gradient(const vector& theta, input_list<policy> in, const batch_type& b, vector& out,
                loss_slot<policy> slot) const {
    vector g;
    for (std::size_t k = 0; k < terms_.size(); ++k) {
      gradient_into(terms_[k], theta, in.subspan(k, 1), b, k == 0 ? out : g, slot);
      if (k > 0) policy::axpy(scalar_t<policy>(1), g, out);
    }
  }
  /// Only term k reads input k.
  void input_gradient(const vector& theta, input_list<policy> in, const batch_type& b, std::size_t k,
                      vector& out) const {
    terms_.at(k).input_gradient(theta, in.subspan(k, 1), b, 0, out);
  }

 private:
  std::vector<Term> terms_;
};

}  // namespace bilevel::learners
