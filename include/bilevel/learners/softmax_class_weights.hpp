// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// Class weights as a learnable hyperparameter: one logit φ_k per class, and each sample of
/// class k weighs
///     c_k(φ) = C · softmax(φ)_k,        mean over the classes 1, every weight positive,
/// read by the classifier from an upper level as its input 0 (a Weighting, see
/// sample_weighting.hpp). The normalisation keeps the weights from scaling the classifier's
/// learning rate: a plain class_weights table learned by a hypergradient drifts towards small
/// weights on noisy or hard data (a smaller step lowers the look-ahead loss), which is then
/// what it learns instead of the balance between classes. φ = 0 is plain training.
///
/// The Jacobian is symmetric, J = diag(c) − c cᵀ / C, so the VJP and the JVP are one map,
///     J x = c ⊙ x − (c / C) (c · x),
/// applied to the per-class sums of the sample adjoints (scatter) or to a tangent of φ
/// (gather_tangent). Everything stays in the policy's storage (a 1 × C row): no host round
/// trip on a device policy.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <stdexcept>
#include <string>
#include <vector>

#include "bilevel/core/learner.hpp"
#include "bilevel/learners/classification_batch.hpp"
#include "bilevel/learners/sample_weighting.hpp"

namespace bilevel::learners {

struct softmax_class_weights {
  std::size_t classes = 0;
  static constexpr std::size_t num_inputs = 1;
  explicit softmax_class_weights(std::size_t n = 0) : classes(n) {}
  [[nodiscard]] std::size_t input_size(std::size_t) const { return classes; }

  /// c = C · softmax(φ), in the policy's storage.
  template <nn_tensor_policy P>
  vector_t<P> weights(const vector_t<P>& phi) const {
    return flat<P>(table<P>(phi));
  }
  /// The same on the host, for reading the learned weights back.
  [[nodiscard]] std::vector<double> weights(const std::vector<double>& phi) const {
    require_size(phi.size(), "weights");
    double top = phi.empty() ? 0.0 : phi[0];
    for (double v : phi) top = std::max(top, v);
    std::vector<double> c(phi.size());
    double sum = 0;
    for (std::size_t k = 0; k < c.size(); ++k) sum += c[k] = std::exp(phi[k] - top);
    for (double& v : c) v *= double(c.size()) / sum;
    return c;
  }

  template <nn_tensor_policy P>
  vector_t<P> gather(input_list<P> in, const classification_batch<P>& b, const sample_signals<P>& s) const {
    const vector_t<P> c = weights<P>(phi_of<P>(in));
    const vector_t<P>* at[] = {&c};
    return by_label_.gather(input_list<P>(at), b, s);
  }
  /// Σ_i r_i ∂c_{y_i}/∂φ = J s, s_k = Σ_{i: y_i = k} r_i.
  template <nn_tensor_policy P>
  vector_t<P> scatter(input_list<P> in, const classification_batch<P>& b, const sample_signals<P>& s,
                      const vector_t<P>& r, std::size_t = 0) const {
    return jacobian_times<P>(phi_of<P>(in), by_label_.scatter(in, b, s, r));
  }
  /// ∂c_{y_i}/∂φ · u = (J u)_{y_i}.
  template <nn_tensor_policy P>
  vector_t<P> gather_tangent(input_list<P> in, const classification_batch<P>& b, const sample_signals<P>& s,
                             const vector_t<P>& u, std::size_t = 0) const {
    const vector_t<P> dc = jacobian_times<P>(phi_of<P>(in), u);
    const vector_t<P>* at[] = {&dc};
    return by_label_.gather(input_list<P>(at), b, s);
  }

 private:
  class_weights by_label_{};

  void require_size(std::size_t n, const char* what) const {
    if (classes == 0 || n != classes)
      throw std::invalid_argument("bilevel::learners::softmax_class_weights::" + std::string(what) + ": " +
                                  std::to_string(n) + " logits for " + std::to_string(classes) + " classes");
  }
  template <nn_tensor_policy P>
  const vector_t<P>& phi_of(input_list<P> in) const {
    if (in.size() < 1 || in[0] == nullptr)
      throw std::invalid_argument("bilevel::learners::softmax_class_weights: no class logits given as input 0");
    return *in[0];
  }
  /// c as a 1 × C row.
  template <nn_tensor_policy P>
  typename P::matrix table(const vector_t<P>& phi) const {
    require_size(P::size(phi), "weights");
    typename P::matrix logits, c;
    P::reshape(phi, 1, classes, logits);
    P::row_softmax(logits, c);
    P::scale(c, scalar_t<P>(classes));
    return c;
  }
  template <nn_tensor_policy P>
  static vector_t<P> flat(const typename P::matrix& row) {
    vector_t<P> v = P::zeros(P::cols(row));
    P::flatten_into(row, v, 0);
    return v;
  }
  /// J x = c ⊙ x − (c / C)(c · x), with c · x kept as a 1-vector in the policy's storage.
  template <nn_tensor_policy P>
  vector_t<P> jacobian_times(const vector_t<P>& phi, const vector_t<P>& x) const {
    require_size(P::size(x), "jacobian_times");
    const typename P::matrix c = table<P>(phi);
    typename P::matrix xr, out, share = c;
    P::reshape(x, 1, classes, xr);
    P::hadamard(c, xr, out);
    vector_t<P> cx;
    P::row_dots(c, xr, cx);
    P::scale(share, scalar_t<P>(1.0 / double(classes)));
    P::scale_rows(share, cx);
    P::axpy(scalar_t<P>(-1), share, out);
    return flat<P>(out);
  }
};

}  // namespace bilevel::learners
