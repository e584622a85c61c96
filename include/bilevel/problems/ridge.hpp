// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// Ridge regression with a learned penalty per feature: the reference bilevel problem with
/// closed forms for both the inner solution and the hypergradient.
///
///     inner:  θ*(λ) = argmin_θ  1/(2n) ‖Xθ − y‖² + ½ Σ_i e^{λ_i} θ_i²
///     outer:  min_λ  F(λ) = 1/(2m) ‖X_v θ*(λ) − y_v‖²
///
/// With A = XᵀX/n + diag(e^λ): θ* = A⁻¹ Xᵀy/n and, by the implicit function theorem,
///     dF/dλ_i = −e^{λ_i} θ*_i [A⁻¹ ∇_θ F]_i.
/// The penalty is parametrised by its logarithm so that the upper variable is unconstrained.
/// Tests, examples and benchmarks share this problem (ensmallen keeps its test problems in
/// the library for the same reason).
#include <cmath>
#include <cstddef>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "bilevel/core/elementwise.hpp"
#include "bilevel/core/learner.hpp"
#include "bilevel/detail/dense_solve.hpp"

namespace bilevel::problems {

/// A data set (features and targets) held both on the back end and on the host (for closed forms).
template <tensor_policy P>
struct labelled_data {
  typename P::matrix x;
  vector_t<P> y;
  std::size_t rows = 0, cols = 0;
  std::vector<double> host_x, host_y;  ///< row-major copies in double

  static labelled_data from_host(std::size_t rows, std::size_t cols, std::vector<double> x, std::vector<double> y) {
    if (x.size() != rows * cols || y.size() != rows)
      throw std::invalid_argument("bilevel::problems::labelled_data: " + std::to_string(x.size()) + " inputs and " +
                                  std::to_string(y.size()) + " targets do not make " + std::to_string(rows) + " rows of " +
                                  std::to_string(cols) + " features");
    if (rows == 0) throw std::invalid_argument("bilevel::problems::labelled_data: no rows");
    labelled_data d;
    d.rows = rows;
    d.cols = cols;
    std::vector<scalar_t<P>> xs(x.begin(), x.end()), ys(y.begin(), y.end());
    d.x = P::matrix_from_host(rows, cols, xs);
    d.y = P::from_host(ys);
    d.host_x = std::move(x);
    d.host_y = std::move(y);
    return d;
  }
};

/// Synthetic regression: Gaussian features, a target that depends on the first `informative`
/// features only, Gaussian noise. Learned penalties should grow on the uninformative ones.
template <tensor_policy P>
struct ridge_problem {
  labelled_data<P> train, validation;

  static ridge_problem synthetic(std::size_t n_train, std::size_t n_val, std::size_t features,
                                 std::size_t informative, double noise, unsigned seed) {
    std::mt19937_64 gen(seed);
    std::normal_distribution<double> normal;
    std::vector<double> w(features, 0.0);
    for (std::size_t i = 0; i < std::min(informative, features); ++i) w[i] = 1.0 + 0.5 * normal(gen);
    auto make = [&](std::size_t n) {
      std::vector<double> x(n * features), y(n);
      for (std::size_t r = 0; r < n; ++r) {
        double t = 0.0;
        for (std::size_t c = 0; c < features; ++c) {
          x[r * features + c] = normal(gen);
          t += x[r * features + c] * w[c];
        }
        y[r] = t + noise * normal(gen);
      }
      return labelled_data<P>::from_host(n, features, std::move(x), std::move(y));
    };
    ridge_problem p{make(n_train), make(n_val)};
    return p;
  }

  /// θ*(λ), on the host, by Cholesky.
  [[nodiscard]] std::vector<double> solution(const std::vector<double>& log_penalty) const {
    auto a = system_matrix(log_penalty);
    std::vector<double> b(train.cols, 0.0);
    for (std::size_t r = 0; r < train.rows; ++r)
      for (std::size_t c = 0; c < train.cols; ++c) b[c] += train.host_x[r * train.cols + c] * train.host_y[r] / train.rows;
    bilevel::detail::cholesky_solve(a, b);
    return b;
  }

  /// F(λ) at the exact inner solution.
  [[nodiscard]] double validation_loss(const std::vector<double>& theta) const {
    double s = 0.0;
    for (double r : residual(validation, theta)) s += r * r;
    return 0.5 * s / validation.rows;
  }

  /// dF/dλ in closed form (see the file comment).
  [[nodiscard]] std::vector<double> hypergradient(const std::vector<double>& log_penalty) const {
    const auto theta = solution(log_penalty);
    const auto r = residual(validation, theta);
    std::vector<double> z(train.cols, 0.0);
    for (std::size_t i = 0; i < validation.rows; ++i)
      for (std::size_t c = 0; c < train.cols; ++c) z[c] += validation.host_x[i * train.cols + c] * r[i] / validation.rows;
    bilevel::detail::cholesky_solve(system_matrix(log_penalty), z);
    std::vector<double> g(train.cols);
    for (std::size_t c = 0; c < train.cols; ++c) g[c] = -std::exp(log_penalty[c]) * theta[c] * z[c];
    return g;
  }

 private:
  [[nodiscard]] bilevel::detail::dense_matrix system_matrix(const std::vector<double>& log_penalty) const {
    const std::size_t d = train.cols;
    bilevel::detail::dense_matrix a{d, std::vector<double>(d * d, 0.0)};
    for (std::size_t r = 0; r < train.rows; ++r)
      for (std::size_t i = 0; i < d; ++i)
        for (std::size_t j = 0; j < d; ++j)
          a(i, j) += train.host_x[r * d + i] * train.host_x[r * d + j] / train.rows;
    for (std::size_t i = 0; i < d; ++i) a(i, i) += std::exp(log_penalty.at(i));
    return a;
  }
  static std::vector<double> residual(const labelled_data<P>& data, const std::vector<double>& theta) {
    std::vector<double> r(data.rows);
    for (std::size_t i = 0; i < data.rows; ++i) {
      double t = -data.host_y[i];
      for (std::size_t c = 0; c < data.cols; ++c) t += data.host_x[i * data.cols + c] * theta[c];
      r[i] = t;
    }
    return r;
  }
};

/// The inner objective: 1/(2n)‖Xθ − y‖² + ½ Σ e^{λ_i} θ_i², reading λ (input slot 0).
/// Every product is exact and closed form.
template <tensor_policy P>
class ridge_training_loss {
 public:
  using policy = P;
  using batch_type = full_batch;
  using vector = vector_t<P>;
  using scalar = scalar_t<P>;

  explicit ridge_training_loss(labelled_data<P> data) : d_(std::move(data)) {}
  [[nodiscard]] std::size_t num_parameters() const { return d_.cols; }
  [[nodiscard]] std::size_t num_inputs() const { return 1; }
  [[nodiscard]] std::size_t input_size(std::size_t) const { return d_.cols; }

  double loss(const vector& theta, input_list<P> in, const batch_type&) const {
    vector r, pen;
    residual(theta, r);
    penalty(*in[0], pen);
    vector pt;
    P::hadamard(pen, theta, pt);
    return 0.5 * P::dot(r, r) / d_.rows + 0.5 * P::dot(pt, theta);
  }
  double gradient(const vector& theta, input_list<P> in, const batch_type&, vector& out) const {
    vector r, pen;
    residual(theta, r);
    P::gemv(scalar(1.0 / d_.rows), d_.x, true, r, scalar(0), out);
    penalty(*in[0], pen);
    vector pt;
    P::hadamard(pen, theta, pt);
    P::axpy(scalar(1), pt, out);
    return 0.5 * P::dot(r, r) / d_.rows + 0.5 * P::dot(pt, theta);
  }
  /// ∂L/∂λ_i = ½ e^{λ_i} θ_i².
  void input_gradient(const vector& theta, input_list<P> in, const batch_type&, std::size_t, vector& out) const {
    vector pen, pt;
    penalty(*in[0], pen);
    P::hadamard(pen, theta, pt);
    P::hadamard(pt, theta, out);
    P::scale(out, scalar(0.5));
  }
  void hvp(const vector&, input_list<P> in, const batch_type&, const vector& v, vector& out) const {
    vector xv, pen, pv;
    P::gemv(scalar(1), d_.x, false, v, scalar(0), xv);
    P::gemv(scalar(1.0 / d_.rows), d_.x, true, xv, scalar(0), out);
    penalty(*in[0], pen);
    P::hadamard(pen, v, pv);
    P::axpy(scalar(1), pv, out);
  }
  /// ∂²L/∂λ_i∂θ_j = δ_ij e^{λ_i} θ_i: diagonal, so both mixed products are e^λ ⊙ θ ⊙ v.
  void mixed_vjp(const vector& theta, input_list<P> in, const batch_type&, std::size_t, const vector& v, vector& out) const {
    vector pen, pt;
    penalty(*in[0], pen);
    P::hadamard(pen, theta, pt);
    P::hadamard(pt, v, out);
  }
  void mixed_jvp(const vector& theta, input_list<P> in, const batch_type& b, std::size_t s, const vector& u, vector& out) const {
    mixed_vjp(theta, in, b, s, u, out);
  }

 private:
  void residual(const vector& theta, vector& r) const {
    P::gemv(scalar(1), d_.x, false, theta, scalar(0), r);
    P::axpy(scalar(-1), d_.y, r);
  }
  static void penalty(const vector& log_penalty, vector& out) {
    P::transform(log_penalty, out, elementwise::exponential{});
  }
  labelled_data<P> d_;
};

/// An upper objective that is a least-squares loss on a lower level's solution (input slot
/// 0), 1/(2m)‖X_v θ − y_v‖², and does not depend on its own variables directly (e.g. the
/// penalties λ act only through θ*(λ)). `own_parameters` is the size of those variables.
template <tensor_policy P>
class validation_least_squares {
 public:
  using policy = P;
  using batch_type = full_batch;
  using vector = vector_t<P>;
  using scalar = scalar_t<P>;

  validation_least_squares(labelled_data<P> data, std::size_t own_parameters)
      : d_(std::move(data)), own_(own_parameters) {}
  [[nodiscard]] std::size_t num_parameters() const { return own_; }
  [[nodiscard]] std::size_t num_inputs() const { return 1; }
  [[nodiscard]] std::size_t input_size(std::size_t) const { return d_.cols; }

  double loss(const vector&, input_list<P> in, const batch_type&) const {
    vector r;
    residual(*in[0], r);
    return 0.5 * P::dot(r, r) / d_.rows;
  }
  double gradient(const vector& own, input_list<P> in, const batch_type& b, vector& out) const {
    out = P::zeros(P::size(own));
    return loss(own, in, b);
  }
  void input_gradient(const vector&, input_list<P> in, const batch_type&, std::size_t, vector& out) const {
    vector r;
    residual(*in[0], r);
    P::gemv(scalar(1.0 / d_.rows), d_.x, true, r, scalar(0), out);
  }

 private:
  void residual(const vector& theta, vector& r) const {
    P::gemv(scalar(1), d_.x, false, theta, scalar(0), r);
    P::axpy(scalar(-1), d_.y, r);
  }
  labelled_data<P> d_;
  std::size_t own_;
};

}  // namespace bilevel::problems
