// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// LFM-CW's class weights (Gala & Xie, arXiv 2112.00275; reconstruction, see algorithms.md
/// §5) as a Weighting of the re-learner W2, whose batches hold real samples and synthetic
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
#include <cmath>
#include <cstddef>
#include <stdexcept>
#include <string>
#include <vector>

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
  static constexpr std::size_t num_inputs = 2;

  class_mistake_weighting(const std::vector<std::size_t>& first_learner_widths, const data::dataset& references,
                          double synthetic_weight = 1.0)
      : refs_(first_learner_widths, references), classes_(references.num_classes), gamma_(synthetic_weight),
        per_class_(references.num_classes, 0) {
    for (int y : refs_.labels()) ++per_class_[std::size_t(y)];
    for (std::size_t k = 0; k < classes_; ++k)
      if (per_class_[k] == 0)
        throw std::invalid_argument("bilevel::learners::class_mistake_weighting: no reference sample of class " +
                                    std::to_string(k));
    if (!(gamma_ >= 0.0)) throw std::invalid_argument("bilevel::learners::class_mistake_weighting: γ must be >= 0");
  }

  [[nodiscard]] std::size_t input_size(std::size_t slot) const { return slot == 0 ? refs_.num_parameters() : classes_; }
  [[nodiscard]] std::size_t classes() const { return classes_; }

  /// c_k for every class at (W1, ω).
  [[nodiscard]] std::vector<double> class_weights(const vector& w1, const vector& omega) const {
    return state(w1, omega).c;
  }

  vector gather(input_list<P> in, const classification_batch<P>& b, const sample_signals<P>&) const {
    const auto s = state(*in[0], *in[1]);
    std::vector<scalar_t<P>> w(b.size());
    for (std::size_t i = 0; i < b.size(); ++i)
      w[i] = scalar_t<P>(synthetic(b, i) ? gamma_ * s.c[label(b, i)] : 1.0);
    return P::from_host(w);
  }

  vector scatter(input_list<P> in, const classification_batch<P>& b, const sample_signals<P>&, const vector& rho,
                 std::size_t slot) const {
    const auto s = state(*in[0], *in[1]);
    const auto rh = P::to_host(rho);
    std::vector<double> per_class(classes_, 0.0);  // Σ over synthetic rows of class k of ρ_i γ ∂c_k/∂(its argument)
    for (std::size_t i = 0; i < b.size(); ++i)
      if (synthetic(b, i)) per_class[label(b, i)] += double(rh[i]) * gamma_ * s.slope[label(b, i)];
    if (slot == 1) {
      std::vector<scalar_t<P>> out(classes_);
      for (std::size_t k = 0; k < classes_; ++k) out[k] = scalar_t<P>(per_class[k] * s.d[k]);
      return P::from_host(out);
    }
    std::vector<double> beta(classes_);  // coefficients of d_k
    double mean = 0;
    for (std::size_t k = 0; k < classes_; ++k) mean += (beta[k] = per_class[k] * s.omega[k]) / double(classes_);
    std::vector<double> wj(refs_.size());  // Σ_k β_k d_k = Σ_k (β_k − β̄) e_k = Σ_j w_j u_j
    for (std::size_t j = 0; j < wj.size(); ++j) {
      const auto k = std::size_t(refs_.labels()[j]);
      wj[j] = (beta[k] - mean) / double(per_class_[k]);
    }
    return refs_.vjp(*in[0], wj);
  }

  vector gather_tangent(input_list<P> in, const classification_batch<P>& b, const sample_signals<P>&, const vector& t,
                        std::size_t slot) const {
    const auto s = state(*in[0], *in[1]);
    std::vector<double> c_dot(classes_, 0.0);
    if (slot == 1) {
      const auto th = P::to_host(t);
      for (std::size_t k = 0; k < classes_; ++k) c_dot[k] = s.slope[k] * s.d[k] * double(th[k]);
    } else {
      const auto u_dot = refs_.jvp(*in[0], t);
      std::vector<double> e_dot(classes_, 0.0);
      for (std::size_t j = 0; j < u_dot.size(); ++j) {
        const auto k = std::size_t(refs_.labels()[j]);
        e_dot[k] += u_dot[j] / double(per_class_[k]);
      }
      double mean = 0;
      for (double e : e_dot) mean += e / double(classes_);
      for (std::size_t k = 0; k < classes_; ++k) c_dot[k] = s.slope[k] * s.omega[k] * (e_dot[k] - mean);
    }
    std::vector<scalar_t<P>> out(b.size(), scalar_t<P>(0));
    for (std::size_t i = 0; i < b.size(); ++i)
      if (synthetic(b, i)) out[i] = scalar_t<P>(gamma_ * c_dot[label(b, i)]);
    return P::from_host(out);
  }

 private:
  struct values {
    std::vector<double> omega, d, c, slope;  // slope_k = ∂c_k/∂(ω_k d_k) = 2σ'(ω_k d_k)
  };
  values state(const vector& w1, const vector& omega) const {
    if (P::size(w1) != refs_.num_parameters() || P::size(omega) != classes_)
      throw std::invalid_argument("bilevel::learners::class_mistake_weighting: expects W1's " +
                                  std::to_string(refs_.num_parameters()) + " parameters and " +
                                  std::to_string(classes_) + " class coefficients");
    values v;
    const auto oh = P::to_host(omega);
    v.omega.assign(oh.begin(), oh.end());
    const auto u = refs_.losses(w1);
    std::vector<double> e(classes_, 0.0);
    for (std::size_t j = 0; j < u.size(); ++j) {
      const auto k = std::size_t(refs_.labels()[j]);
      e[k] += u[j] / double(per_class_[k]);
    }
    double mean = 0;
    for (double x : e) mean += x / double(classes_);
    for (std::size_t k = 0; k < classes_; ++k) {
      const double a = v.omega[k] * (e[k] - mean);
      const double sig = a >= 0 ? 1.0 / (1.0 + std::exp(-a)) : std::exp(a) / (1.0 + std::exp(a));
      v.d.push_back(e[k] - mean);
      v.c.push_back(2.0 * sig);
      v.slope.push_back(2.0 * sig * (1.0 - sig));
    }
    return v;
  }
  static bool synthetic(const classification_batch<P>& b, std::size_t i) { return b.ids[i] >= synthetic_id_base; }
  std::size_t label(const classification_batch<P>& b, std::size_t i) const {
    const int y = b.labels.at(i);
    if (y < 0 || std::size_t(y) >= classes_)
      throw std::out_of_range("bilevel::learners::class_mistake_weighting: label " + std::to_string(y));
    return std::size_t(y);
  }

  reference_losses<P> refs_;
  std::size_t classes_;
  double gamma_;
  std::vector<std::size_t> per_class_;
};

}  // namespace bilevel::learners
