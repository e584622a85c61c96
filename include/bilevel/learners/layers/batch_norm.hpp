// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// batch_norm<P>: batch normalization over the channels of an activation (PyTorch's
/// BatchNorm2d; BatchNorm1d on flat 1 × 1 inputs), a layer of the open layer concept.
///
/// Each channel c is normalized over the n = batch · height · width rows of the activation
/// matrix (every sample and every pixel):
///
///   training    μ = mean(x),  σ² = mean((x − μ)²) (biased),  s = 1/√(σ² + eps),
///               x̂ = (x − μ) s,  y = γ x̂ + β (affine) or y = x̂ (not affine)
///   evaluation  the same with the running mean and variance in place of μ and σ²: a
///               per-channel affine map with no batch dependence.
///
/// γ and β are the layer's 2·C parameters at ctx.offset (γ first), initialized to 1 and 0;
/// a non-affine layer (DARTS's search cells) has none. Training mode is differentiated
/// through the batch statistics, exactly, as autograd does in PyTorch: the backward pass gives
/// the exact input gradient and the two tangent passes the exact R-operator, including the
/// second-order terms through μ and σ (the formulas are at the passes below).
///
/// State. The running mean (initially 0) and variance (initially 1) are kept in the layer and
/// change only in commit(), which folds the batch statistics the value pass cached:
///   running = (1 − momentum) · running + momentum · batch
/// with the unbiased batch variance σ² n / (n − 1), as PyTorch. The network calls commit once
/// per real optimizer step (sequential::on_real_step, which the solver calls), never for a
/// look-ahead or virtual step, an HVP or a finite difference, so the statistics are those of
/// the batches training actually stepped on. state() gives the running means, then the
/// running variances (for checkpoints); restore() takes them back.
///
/// Errors: zero channels, a momentum outside [0, 1] or eps <= 0 at construction; in training
/// mode, a single value per channel (one sample of one pixel: the variance is undefined), as
/// PyTorch.
#include <cmath>
#include <cstddef>
#include <random>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "bilevel/core/elementwise.hpp"
#include "bilevel/learners/layers/layer_concept.hpp"

namespace bilevel::learners {

namespace detail {
/// x ↦ 1/√(x + eps): the inverse standard deviation from a variance.
struct inverse_std {
  using bilevel_device_callable = void;
  double eps;
  template <class S>
  BILEVEL_HOST_DEVICE S operator()(S x) const { return S(1.0 / ::sqrt(double(x) + eps)); }
};
}  // namespace detail

template <nn_tensor_policy P>
struct batch_norm {
  using matrix = typename P::matrix;
  using vector = vector_t<P>;
  using scalar = scalar_t<P>;
  /// What the value pass keeps: its mode, the batch statistics (training), the per-channel
  /// inverse standard deviation s (of the batch, or of the running variance) and x̂.
  struct cache {
    pass_mode mode = pass_mode::training;
    std::size_t rows = 0;  ///< n, values per channel
    vector mean, var;      ///< training: the batch mean and biased variance
    vector inv_std;        ///< s
    matrix x_hat;          ///< x̂
  };

  explicit batch_norm(geometry shape, bool affine = true, double momentum = 0.1, double eps = 1e-5)
      : shape_(shape), affine_(affine), momentum_(momentum), eps_(eps) {
    const std::string who = "bilevel::learners::batch_norm: ";
    if (shape.channels == 0) throw std::invalid_argument(who + "zero channels (shape " + shape_text(shape) + ")");
    if (!(momentum >= 0.0 && momentum <= 1.0))
      throw std::invalid_argument(who + "momentum " + std::to_string(momentum) + " is outside [0, 1]");
    if (!(eps > 0.0)) throw std::invalid_argument(who + "eps " + std::to_string(eps) + " must be > 0");
    running_mean_ = P::zeros(shape.channels);
    running_var_ = P::zeros(shape.channels);
    P::fill(running_var_, scalar(1));
  }

  [[nodiscard]] geometry input_shape() const { return shape_; }
  [[nodiscard]] geometry output_shape() const { return shape_; }
  [[nodiscard]] std::size_t num_parameters() const { return affine_ ? 2 * shape_.channels : 0; }
  [[nodiscard]] bool affine() const { return affine_; }
  [[nodiscard]] double momentum() const { return momentum_; }
  [[nodiscard]] double eps() const { return eps_; }
  [[nodiscard]] const vector& running_mean() const { return running_mean_; }
  [[nodiscard]] const vector& running_var() const { return running_var_; }

  /// γ = 1, β = 0.
  void initialize(std::span<scalar> params, std::mt19937_64&) const {
    for (std::size_t i = 0; i < params.size(); ++i) params[i] = scalar(i < shape_.channels ? 1 : 0);
  }

  void forward(const pass_context<P>& p, const matrix& x, matrix& y, cache& c) const {
    const std::size_t n = P::rows(x), C = shape_.channels;
    if (P::cols(x) != C)
      throw std::invalid_argument("bilevel::learners::batch_norm: the input has " + std::to_string(P::cols(x)) +
                                  " channels, the layer normalizes " + std::to_string(C));
    c.mode = p.mode;
    c.rows = n;
    vector shift;
    if (p.mode == pass_mode::training) {
      if (n < 2)
        throw std::invalid_argument("bilevel::learners::batch_norm: expected more than 1 value per channel in "
                                    "training mode, got " + std::to_string(n) +
                                    " (a batch of one sample of one pixel has no variance)");
      P::column_sums(x, c.mean);
      P::scale(c.mean, scalar(1.0 / double(n)));
      shift = c.mean;
      P::scale(shift, scalar(-1));
      c.x_hat = x;
      P::add_row(c.x_hat, shift);  // x − μ
      matrix sq;
      P::hadamard(c.x_hat, c.x_hat, sq);
      P::column_sums(sq, c.var);
      P::scale(c.var, scalar(1.0 / double(n)));
      P::transform(c.var, c.inv_std, detail::inverse_std{eps_});
    } else {
      shift = running_mean_;
      P::scale(shift, scalar(-1));
      c.x_hat = x;
      P::add_row(c.x_hat, shift);
      P::transform(running_var_, c.inv_std, detail::inverse_std{eps_});
    }
    P::scale_columns(c.x_hat, c.inv_std);
    y = c.x_hat;
    if (affine_) {
      P::scale_columns(y, gamma(p.theta, p.offset));
      P::add_row(y, beta(p.theta, p.offset));
    }
  }

  /// With g = ∂L/∂y and a = γ ⊙ g (a = g when not affine), per channel:
  ///   ∂L/∂γ = Σ_rows g ⊙ x̂,   ∂L/∂β = Σ_rows g,
  ///   ∂L/∂x = J a,  J = s Π  with  Π a = a − mean(a) − x̂ · mean(a ⊙ x̂)   (training),
  ///                 J = s                                               (evaluation).
  /// (J is the Jacobian ∂x̂/∂x of one channel's column, which is symmetric.)
  void backward(const pass_context<P>& p, const matrix&, const matrix& g, cache& c, matrix* gx,
                vector& grad) const {
    if (affine_) {
      matrix gxh;
      P::hadamard(g, c.x_hat, gxh);
      set_parameter_gradient(gxh, g, p.offset, grad);
    }
    if (!gx) return;
    matrix a = g;
    if (affine_) P::scale_columns(a, gamma(p.theta, p.offset));
    apply_jacobian(c, a, *gx);
  }

  /// Along (v, ẋ) with γ̇, β̇ the parts of v:  ẏ = γ̇ ⊙ x̂ + β̇ + γ ⊙ x̂̇,  x̂̇ = J ẋ, which in
  /// training mode is s (ẋ − mean(ẋ) − x̂ · mean(x̂ ⊙ ẋ)): from μ̇ = mean(ẋ),
  /// (σ²)˙ = 2 mean((x − μ) ⊙ ẋ) and ṡ = −s³ mean((x − μ) ⊙ ẋ) = −s² k, k = mean(x̂ ⊙ ẋ).
  void tangent_forward(const tangent_context<P>& t, const matrix& x, const matrix* x_dot, cache& c,
                       matrix& y_dot) const {
    if (x_dot) {
      apply_jacobian(c, *x_dot, y_dot);
      if (affine_) P::scale_columns(y_dot, gamma(t.theta, t.offset));
    } else {
      y_dot = P::matrix_zeros(P::rows(x), P::cols(x));
    }
    if (affine_) {
      matrix d = c.x_hat;
      P::scale_columns(d, gamma(t.v, t.offset));
      P::axpy(scalar(1), d, y_dot);
      P::add_row(y_dot, beta(t.v, t.offset));
    }
  }

  /// The tangent of backward along (v, ẋ), with ġ the tangent of g and ȧ = γ̇ ⊙ g + γ ⊙ ġ
  /// (ȧ = ġ when not affine):
  ///   (∂L/∂γ)˙ = Σ_rows (ġ ⊙ x̂ + g ⊙ x̂̇),   (∂L/∂β)˙ = Σ_rows ġ,
  ///   (∂L/∂x)˙ = J ȧ + (training, ẋ given) s (−s k ⊙ Π a − x̂̇ ⊙ m − x̂ ⊙ mean(a ⊙ x̂̇)),
  /// m = mean(a ⊙ x̂), k = mean(x̂ ⊙ ẋ): the derivative of s (a − mean(a) − x̂ m) is
  /// ṡ Π a + s (ȧ − mean(ȧ) − x̂̇ m − x̂ ṁ) with ṡ = −s² k and ṁ = mean(ȧ ⊙ x̂) + mean(a ⊙ x̂̇).
  /// In evaluation mode J = s is constant, so only J ȧ remains.
  void tangent_backward(const tangent_context<P>& t, const matrix&, const matrix* x_dot, const matrix& g,
                        const matrix& g_dot, cache& c, matrix* gx_dot, vector& grad_dot) const {
    matrix xh_dot;  // x̂̇ = J ẋ
    if (x_dot) apply_jacobian(c, *x_dot, xh_dot);
    if (affine_) {
      matrix d;
      P::hadamard(g_dot, c.x_hat, d);
      if (x_dot) {
        matrix e;
        P::hadamard(g, xh_dot, e);
        P::axpy(scalar(1), e, d);
      }
      set_parameter_gradient(d, g_dot, t.offset, grad_dot);
    }
    if (!gx_dot) return;
    matrix a = g, a_dot = g_dot;
    if (affine_) {
      P::scale_columns(a, gamma(t.theta, t.offset));
      P::scale_columns(a_dot, gamma(t.theta, t.offset));
      matrix e = g;
      P::scale_columns(e, gamma(t.v, t.offset));
      P::axpy(scalar(1), e, a_dot);
    }
    apply_jacobian(c, a_dot, *gx_dot);
    if (c.mode != pass_mode::training || !x_dot) return;
    const double inv_n = 1.0 / double(c.rows);
    // k' = s ⊙ k, so that −s k' ⊙ Π a is ṡ Π a.
    vector k;
    P::hadamard(column_means(c.x_hat, *x_dot, inv_n), c.inv_std, k);
    P::scale(k, scalar(-1));
    matrix extra;
    project(c, a, extra);  // Π a
    P::scale_columns(extra, k);
    vector m = column_means(a, c.x_hat, inv_n);
    P::scale(m, scalar(-1));
    matrix e = xh_dot;
    P::scale_columns(e, m);
    P::axpy(scalar(1), e, extra);  // − x̂̇ ⊙ m
    vector q = column_means(a, xh_dot, inv_n);
    P::scale(q, scalar(-1));
    e = c.x_hat;
    P::scale_columns(e, q);
    P::axpy(scalar(1), e, extra);  // − x̂ ⊙ mean(a ⊙ x̂̇)
    P::scale_columns(extra, c.inv_std);
    P::axpy(scalar(1), extra, *gx_dot);
  }

  /// Folds the batch statistics of a training-mode value pass into the running ones (a
  /// cache of an evaluation pass has none, and leaves them as they are).
  void commit(const pass_context<P>&, const cache& c) {
    if (c.mode != pass_mode::training || c.rows < 2) return;
    vector unbiased = c.var;
    P::scale(unbiased, scalar(double(c.rows) / double(c.rows - 1)));
    P::scale(running_mean_, scalar(1.0 - momentum_));
    P::axpy(scalar(momentum_), c.mean, running_mean_);
    P::scale(running_var_, scalar(1.0 - momentum_));
    P::axpy(scalar(momentum_), unbiased, running_var_);
  }

  /// The running means, then the running variances.
  [[nodiscard]] std::vector<double> state() const {
    const auto m = P::to_host(running_mean_), v = P::to_host(running_var_);
    std::vector<double> s(m.begin(), m.end());
    s.insert(s.end(), v.begin(), v.end());
    return s;
  }
  void restore(std::span<const double> s) {
    const std::size_t C = shape_.channels;
    if (s.size() != 2 * C)
      throw std::invalid_argument("bilevel::learners::batch_norm: restore got " + std::to_string(s.size()) +
                                  " values, the layer keeps " + std::to_string(2 * C) + " (" + std::to_string(C) +
                                  " running means, then " + std::to_string(C) + " running variances)");
    const std::vector<scalar> m(s.begin(), s.begin() + std::ptrdiff_t(C)), v(s.begin() + std::ptrdiff_t(C), s.end());
    running_mean_ = P::from_host(m);
    running_var_ = P::from_host(v);
  }

 private:
  vector gamma(const vector& theta, std::size_t offset) const {
    vector w;
    P::segment(theta, offset, shape_.channels, w);
    return w;
  }
  vector beta(const vector& theta, std::size_t offset) const {
    vector b;
    P::segment(theta, offset + shape_.channels, shape_.channels, b);
    return b;
  }
  /// grad's segment: [Σ_rows for_gamma, Σ_rows for_beta].
  void set_parameter_gradient(const matrix& for_gamma, const matrix& for_beta, std::size_t offset, vector& grad) const {
    vector s;
    P::column_sums(for_gamma, s);
    P::set_segment(s, grad, offset);
    P::column_sums(for_beta, s);
    P::set_segment(s, grad, offset + shape_.channels);
  }
  /// mean over rows of a ⊙ b, per channel.
  static vector column_means(const matrix& a, const matrix& b, double inv_n) {
    matrix ab;
    P::hadamard(a, b, ab);
    vector out;
    P::column_sums(ab, out);
    P::scale(out, scalar(inv_n));
    return out;
  }
  /// out = Π a = a − mean(a) − x̂ ⊙ mean(a ⊙ x̂), per channel (training mode).
  static void project(const cache& c, const matrix& a, matrix& out) {
    const double inv_n = 1.0 / double(c.rows);
    vector mean;
    P::column_sums(a, mean);
    P::scale(mean, scalar(-inv_n));
    vector m = column_means(a, c.x_hat, inv_n);
    P::scale(m, scalar(-1));
    out = c.x_hat;
    P::scale_columns(out, m);
    P::axpy(scalar(1), a, out);
    P::add_row(out, mean);
  }
  /// out = J a: s Π a in training mode, s a in evaluation.
  static void apply_jacobian(const cache& c, const matrix& a, matrix& out) {
    if (c.mode == pass_mode::training) {
      project(c, a, out);
    } else {
      out = a;
    }
    P::scale_columns(out, c.inv_std);
  }

  geometry shape_;
  bool affine_;
  double momentum_, eps_;
  vector running_mean_, running_var_;
};

}  // namespace bilevel::learners
