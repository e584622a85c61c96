// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// LFM-CW's class weights (Gala & Xie, arXiv 2112.00275; reconstruction, see docs/methods.md,
/// "LFM-CW") as a Weighting of the re-learner W2, whose batches hold real samples and synthetic
/// ones (learners/synthetic_batches.hpp):
///
///     weight_i = 1                   for a real sample,
///     weight_i = γ · c_{y_i}         for a synthetic sample of class y_i,
///     c_k = 2 σ( ω_k · (e_k(W1) − ē(W1)) ),
///
/// e_k the first learner's mean loss on the reference validation samples of class k, ē the
/// mean over classes: the classes W1 gets most wrong get the most synthetic data (c up to 2),
/// the ones it masters the least (c down to 0), and ω ∈ R^C, learned on the top level,
/// sets how strongly. Inputs: slot 0 = W1's parameters (its solution), slot 1 = ω.
/// Exact products in both: closed form in ω; through e_k(W1) via reference_losses.
///
/// On the policy's operations throughout (nothing batch-sized crosses to the host on a device
/// back end): d = D u with the constant C × n matrix D_kj = 1[ỹ_j = k]/n_k − 1/(C n_{ỹ_j}),
/// and a batch's synthetic rows select classes through their one-hot targets. The batch's
/// synthetic/real mask (from its ids) is the one batch-sized upload, made with the batch.
#include <cstddef>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "bilevel/core/elementwise.hpp"
#include "bilevel/core/learner.hpp"
#include "bilevel/learners/classification_batch.hpp"
#include "bilevel/learners/reference_losses.hpp"
#include "bilevel/learners/sample_weighting.hpp"
#include "bilevel/learners/synthetic_batches.hpp"

namespace bilevel::learners {

template <nn_tensor_policy P>
class class_mistake_weighting {
 public:
  using vector = vector_t<P>;
  using matrix = typename P::matrix;
  static constexpr std::size_t num_inputs = 2;

  /// `first_learner_widths`: W1's MLP; `references`: the reference validation samples (every
  /// class among them); `synthetic_weight`: γ.
  class_mistake_weighting(const std::vector<std::size_t>& first_learner_widths, const data::dataset& references,
                          double synthetic_weight = 1.0)
      : class_mistake_weighting(reference_losses<P>(first_learner_widths, references), references, synthetic_weight) {}
  /// W1 the network of a design (a CNN, a ResNet), without mixed operations: no input here
  /// carries an architecture for it.
  class_mistake_weighting(const network_design& first_learner, const data::dataset& references,
                          double synthetic_weight = 1.0)
      : class_mistake_weighting(reference_losses<P>(first_learner, references), references, synthetic_weight) {}

  [[nodiscard]] std::size_t input_size(std::size_t slot) const { return slot == 0 ? refs_.num_parameters() : classes_; }
  [[nodiscard]] std::size_t classes() const { return classes_; }

  /// c_k for every class at (W1, ω), read on the host (a metric).
  [[nodiscard]] std::vector<double> class_weights(const vector& w1, const vector& omega) const {
    const auto c = P::to_host(state(w1, omega).c);
    return {c.begin(), c.end()};
  }

  vector gather(input_list<P> in, const classification_batch<P>& b, const sample_signals<P>&) const {
    const auto s = state(*in[0], *in[1]);
    const rows r = batch_rows(b);
    vector w = r.real;  // 1 on real rows, γ c_{y_i} on synthetic ones
    P::gemv(scalar_t<P>(gamma_), r.synthetic_targets, false, s.c, scalar_t<P>(1), w);
    return w;
  }

  vector scatter(input_list<P> in, const classification_batch<P>& b, const sample_signals<P>&, const vector& rho,
                 std::size_t slot) const {
    const auto s = state(*in[0], *in[1]);
    const rows r = batch_rows(b);
    if (P::size(rho) != b.size())
      throw std::invalid_argument("bilevel::learners::class_mistake_weighting: " + std::to_string(P::size(rho)) +
                                  " adjoints for a batch of " + std::to_string(b.size()));
    // Σ over synthetic rows of class k of ρ_i γ ∂c_k/∂(ω_k d_k)
    vector per_class = P::zeros(classes_);
    P::gemv(scalar_t<P>(gamma_), r.synthetic_targets, true, rho, scalar_t<P>(0), per_class);
    P::hadamard(per_class, s.slope, per_class);
    vector out;
    if (slot == 1) {
      P::hadamard(per_class, s.d, out);
      return out;
    }
    vector beta;  // coefficients of d_k; Σ_k β_k d_k = Σ_j (Dᵀβ)_j u_j
    P::hadamard(per_class, s.omega, beta);
    vector wj = P::zeros(refs_.size());
    P::gemv(scalar_t<P>(1), centring_, true, beta, scalar_t<P>(0), wj);
    return refs_.vjp(*in[0], wj);
  }

  vector gather_tangent(input_list<P> in, const classification_batch<P>& b, const sample_signals<P>&, const vector& t,
                        std::size_t slot) const {
    const auto s = state(*in[0], *in[1]);
    const rows r = batch_rows(b);
    vector c_dot;
    if (slot == 1) {
      P::hadamard(s.d, t, c_dot);
    } else {
      vector d_dot = P::zeros(classes_);
      P::gemv(scalar_t<P>(1), centring_, false, refs_.jvp(*in[0], t), scalar_t<P>(0), d_dot);
      P::hadamard(s.omega, d_dot, c_dot);
    }
    P::hadamard(c_dot, s.slope, c_dot);
    vector out = P::zeros(b.size());
    P::gemv(scalar_t<P>(gamma_), r.synthetic_targets, false, c_dot, scalar_t<P>(0), out);
    return out;
  }

 private:
  class_mistake_weighting(reference_losses<P> refs, const data::dataset& references, double synthetic_weight)
      : refs_(std::move(refs)), classes_(references.num_classes), gamma_(synthetic_weight),
        per_class_(references.num_classes, 0) {
    if (refs_.arch_size() > 0)
      throw std::invalid_argument("bilevel::learners::class_mistake_weighting: W1's network has mixed operations, "
                                  "and no input here carries their architecture");
    for (int y : refs_.labels()) ++per_class_[std::size_t(y)];
    for (std::size_t k = 0; k < classes_; ++k)
      if (per_class_[k] == 0)
        throw std::invalid_argument("bilevel::learners::class_mistake_weighting: no reference sample of class " +
                                    std::to_string(k));
    if (!(gamma_ >= 0.0)) throw std::invalid_argument("bilevel::learners::class_mistake_weighting: γ must be >= 0");
    const std::size_t n = refs_.size();
    std::vector<scalar_t<P>> D(classes_ * n);
    for (std::size_t j = 0; j < n; ++j) {
      const auto y = std::size_t(refs_.labels()[j]);
      for (std::size_t k = 0; k < classes_; ++k)
        D[k * n + j] = scalar_t<P>((k == y ? 1.0 / double(per_class_[y]) : 0.0) -
                                   1.0 / (double(classes_) * double(per_class_[y])));
    }
    centring_ = P::matrix_from_host(classes_, n, D);
  }

  struct values {
    vector omega, d, c, slope;  // slope_k = ∂c_k/∂(ω_k d_k) = 2σ'(ω_k d_k)
  };
  values state(const vector& w1, const vector& omega) const {
    if (P::size(w1) != refs_.num_parameters() || P::size(omega) != classes_)
      throw std::invalid_argument("bilevel::learners::class_mistake_weighting: expects W1's " +
                                  std::to_string(refs_.num_parameters()) + " parameters and " +
                                  std::to_string(classes_) + " class coefficients");
    values v;
    P::copy(omega, v.omega);
    v.d = P::zeros(classes_);
    P::gemv(scalar_t<P>(1), centring_, false, refs_.losses(w1), scalar_t<P>(0), v.d);
    vector sigma;
    P::hadamard(v.omega, v.d, sigma);
    P::transform(sigma, sigma, elementwise::logistic{});
    P::transform(sigma, v.slope, elementwise::logistic_slope_from_value{});
    P::scale(v.slope, scalar_t<P>(2));
    P::copy(sigma, v.c);
    P::scale(v.c, scalar_t<P>(2));
    return v;
  }

  /// A batch's rows as the products need them: the targets of its synthetic rows (real rows
  /// zeroed) and the indicator of its real rows.
  struct rows {
    matrix synthetic_targets;
    vector real;
  };
  rows batch_rows(const classification_batch<P>& b) const {
    if (P::cols(b.targets) != classes_ || P::rows(b.targets) != b.size())
      throw std::invalid_argument("bilevel::learners::class_mistake_weighting: batch targets are " +
                                  std::to_string(P::rows(b.targets)) + "x" + std::to_string(P::cols(b.targets)) +
                                  ", expected " + std::to_string(b.size()) + "x" + std::to_string(classes_));
    std::vector<scalar_t<P>> synthetic_rows(b.size()), real_rows(b.size());
    for (std::size_t i = 0; i < b.size(); ++i) {
      synthetic_rows[i] = scalar_t<P>(synthetic(b, i) ? 1 : 0);
      real_rows[i] = scalar_t<P>(1) - synthetic_rows[i];
    }
    rows r{b.targets, P::from_host(real_rows)};
    P::scale_rows(r.synthetic_targets, P::from_host(synthetic_rows));
    return r;
  }
  static bool synthetic(const classification_batch<P>& b, std::size_t i) { return b.ids[i] >= synthetic_id_base; }

  reference_losses<P> refs_;
  std::size_t classes_;
  double gamma_;
  std::vector<std::size_t> per_class_;
  matrix centring_;  ///< D (C × n): d = D u, the per-class mean losses minus their mean
};

}  // namespace bilevel::learners
