// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// Logistic regression with a learned weight per training sample: data reweighting in its
/// smallest form, with a smooth, strictly convex inner problem.
///
///     inner:  θ*(w) = argmin_θ  1/n Σ_i w_i ℓ_i(θ) + (c/2)‖θ‖²,   ℓ_i = log(1 + e^{−y_i x_iᵀθ})
///     outer:  min_w  1/m Σ_j ℓ_j^val(θ*(w))
///
/// With m_i = y_i x_iᵀθ and σ the logistic function:
///     ∇_θ = 1/n Xᵀ(w ⊙ r) + cθ,   r_i = −y_i σ(−m_i)
///     H v = 1/n Xᵀ(w ⊙ σ(m)σ(−m) ⊙ Xv) + c v        (y_i² = 1)
///     ∂L/∂w_i = ℓ_i/n,   (∂²L/∂w∂θ) v = r ⊙ (Xv)/n,   (∂²L/∂θ∂w) u = Xᵀ(r ⊙ u)/n
#include <cmath>
#include <cstddef>
#include <random>
#include <vector>

#include "bilevel/core/elementwise.hpp"
#include "bilevel/core/learner.hpp"
#include "bilevel/problems/ridge.hpp"

namespace bilevel::problems {

namespace detail {

/// Margins m = y ⊙ Xθ.
template <tensor_policy P>
void margins(const labelled_data<P>& d, const vector_t<P>& theta, vector_t<P>& m) {
  vector_t<P> xt;
  P::gemv(scalar_t<P>(1), d.x, false, theta, scalar_t<P>(0), xt);
  P::hadamard(d.y, xt, m);
}
/// r = −y ⊙ σ(−m): the derivative of each sample's loss with respect to x_iᵀθ.
template <tensor_policy P>
void loss_slopes(const labelled_data<P>& d, const vector_t<P>& m, vector_t<P>& r) {
  vector_t<P> s;
  P::transform(m, s, elementwise::negative_logistic_of_negative{});
  P::hadamard(d.y, s, r);
}
}  // namespace detail

/// Two Gaussian blobs in `features` dimensions with labels ±1; `flip` of the training labels
/// are flipped (the corrupted samples a learned weighting should turn down).
template <tensor_policy P>
struct logistic_problem {
  labelled_data<P> train, validation;
  std::vector<bool> flipped;

  static logistic_problem synthetic(std::size_t n_train, std::size_t n_val, std::size_t features, double flip,
                                    unsigned seed) {
    std::mt19937_64 gen(seed);
    std::normal_distribution<double> normal;
    std::uniform_real_distribution<double> uniform;
    std::vector<double> mean(features);
    for (auto& v : mean) v = normal(gen) / std::sqrt(double(features));
    logistic_problem p;
    auto make = [&](std::size_t n, double flip_rate, std::vector<bool>* flips) {
      std::vector<double> x(n * features), y(n);
      for (std::size_t r = 0; r < n; ++r) {
        const double label = r % 2 ? 1.0 : -1.0;
        for (std::size_t c = 0; c < features; ++c) x[r * features + c] = label * mean[c] + normal(gen);
        const bool f = uniform(gen) < flip_rate;
        if (flips) flips->push_back(f);
        y[r] = f ? -label : label;
      }
      return labelled_data<P>::from_host(n, features, std::move(x), std::move(y));
    };
    p.train = make(n_train, flip, &p.flipped);
    p.validation = make(n_val, 0.0, nullptr);
    return p;
  }
};

template <tensor_policy P>
class weighted_logistic_loss {
 public:
  using policy = P;
  using batch_type = full_batch;
  using vector = vector_t<P>;
  using scalar = scalar_t<P>;

  weighted_logistic_loss(labelled_data<P> data, double l2) : d_(std::move(data)), l2_(l2) {}
  [[nodiscard]] std::size_t num_parameters() const { return d_.cols; }
  [[nodiscard]] std::size_t num_inputs() const { return 1; }
  [[nodiscard]] std::size_t input_size(std::size_t) const { return d_.rows; }

  double loss(const vector& theta, input_list<P> in, const batch_type&) const {
    vector per_sample;
    losses(theta, per_sample);
    return P::dot(*in[0], per_sample) / d_.rows + 0.5 * l2_ * P::dot(theta, theta);
  }
  double gradient(const vector& theta, input_list<P> in, const batch_type& b, vector& out) const {
    vector m, r, wr;
    detail::margins(d_, theta, m);
    detail::loss_slopes(d_, m, r);
    P::hadamard(*in[0], r, wr);
    P::gemv(scalar(1.0 / d_.rows), d_.x, true, wr, scalar(0), out);
    P::axpy(scalar(l2_), theta, out);
    return loss(theta, in, b);
  }
  void input_gradient(const vector& theta, input_list<P>, const batch_type&, std::size_t, vector& out) const {
    losses(theta, out);
    P::scale(out, scalar(1.0 / d_.rows));
  }
  void hvp(const vector& theta, input_list<P> in, const batch_type&, const vector& v, vector& out) const {
    vector m, curv, xv, t;
    detail::margins(d_, theta, m);
    P::transform(m, curv, elementwise::logistic_slope{});
    P::gemv(scalar(1), d_.x, false, v, scalar(0), xv);
    P::hadamard(curv, xv, t);
    P::hadamard(*in[0], t, xv);
    P::gemv(scalar(1.0 / d_.rows), d_.x, true, xv, scalar(0), out);
    P::axpy(scalar(l2_), v, out);
  }
  void mixed_vjp(const vector& theta, input_list<P>, const batch_type&, std::size_t, const vector& v, vector& out) const {
    vector m, r, xv;
    detail::margins(d_, theta, m);
    detail::loss_slopes(d_, m, r);
    P::gemv(scalar(1), d_.x, false, v, scalar(0), xv);
    P::hadamard(r, xv, out);
    P::scale(out, scalar(1.0 / d_.rows));
  }
  void mixed_jvp(const vector& theta, input_list<P>, const batch_type&, std::size_t, const vector& u, vector& out) const {
    vector m, r, ru;
    detail::margins(d_, theta, m);
    detail::loss_slopes(d_, m, r);
    P::hadamard(r, u, ru);
    P::gemv(scalar(1.0 / d_.rows), d_.x, true, ru, scalar(0), out);
  }

 private:
  void losses(const vector& theta, vector& out) const {
    vector m;
    detail::margins(d_, theta, m);
    P::transform(m, out, elementwise::softplus_of_negative{});
  }
  labelled_data<P> d_;
  double l2_;
};

/// Mean logistic loss of a lower level's solution (input slot 0) on held-out data; its own
/// variables (e.g. the per-sample weights) act only through that solution.
template <tensor_policy P>
class validation_logistic_loss {
 public:
  using policy = P;
  using batch_type = full_batch;
  using vector = vector_t<P>;
  using scalar = scalar_t<P>;

  validation_logistic_loss(labelled_data<P> data, std::size_t own_parameters)
      : d_(std::move(data)), own_(own_parameters) {}
  [[nodiscard]] std::size_t num_parameters() const { return own_; }
  [[nodiscard]] std::size_t num_inputs() const { return 1; }
  [[nodiscard]] std::size_t input_size(std::size_t) const { return d_.cols; }

  double loss(const vector&, input_list<P> in, const batch_type&) const {
    vector m, l;
    detail::margins(d_, *in[0], m);
    P::transform(m, l, elementwise::softplus_of_negative{});
    return P::sum(l) / d_.rows;
  }
  double gradient(const vector& own, input_list<P> in, const batch_type& b, vector& out) const {
    out = P::zeros(P::size(own));
    return loss(own, in, b);
  }
  void input_gradient(const vector&, input_list<P> in, const batch_type&, std::size_t, vector& out) const {
    vector m, r;
    detail::margins(d_, *in[0], m);
    detail::loss_slopes(d_, m, r);
    P::gemv(scalar(1.0 / d_.rows), d_.x, true, r, scalar(0), out);
  }

 private:
  labelled_data<P> d_;
  std::size_t own_;
};

}  // namespace bilevel::problems
