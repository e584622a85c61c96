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
#include "bilevel/learners/layers/column_ops.hpp"
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
    const double inv_n = 1.0 / double(n);
    vector neg_mean;
    if (p.mode == pass_mode::training) {
      if (n < 2)
        throw std::invalid_argument("bilevel::learners::batch_norm: expected more than 1 value per channel in "
                                    "training mode, got " + std::to_string(n) +
                                    " (a batch of one sample of one pixel has no variance)");
      P::column_sums(x, c.mean);
      P::scale(c.mean, scalar(inv_n));
      neg_mean = scaled(c.mean, -1.0);
    } else {
      neg_mean = scaled(running_mean_, -1.0);
    }
    shift_columns<P>(x, neg_mean, c.x_hat);  // x − μ
    if (p.mode == pass_mode::training) {
      column_sums_of_product<P>(c.x_hat, c.x_hat, c.var);
      P::scale(c.var, scalar(inv_n));
      P::transform(c.var, c.inv_std, detail::inverse_std{eps_});
    } else {
      P::transform(running_var_, c.inv_std, detail::inverse_std{eps_});
    }
    scale_columns_of<P>(c.x_hat, c.inv_std, c.x_hat);  // (x − μ) s, in place
    if (affine_) combine_columns<P>({{c.x_hat, gamma(p.theta, p.offset)}}, beta(p.theta, p.offset), y);
    else y = c.x_hat;
  }

  /// With g = ∂L/∂y, a = γ ⊙ g (a = g when not affine) and w = s γ, per channel:
  ///   ∂L/∂γ = Σ_rows g ⊙ x̂,   ∂L/∂β = Σ_rows g,
  ///   ∂L/∂x = J a,  J = s Π  with  Π a = a − mean(a) − x̂ · mean(a ⊙ x̂)   (training),
  ///                 J = s                                               (evaluation),
  /// i.e. ∂L/∂x = w g − w mean(g ⊙ x̂) x̂ − w mean(g) in training mode: one pass for the two
  /// column sums, one for the combination. (J is the Jacobian ∂x̂/∂x of one channel's column,
  /// which is symmetric.)
  void backward(const pass_context<P>& p, const matrix&, const matrix& g, cache& c, matrix* gx,
                vector& grad) const {
    if (!affine_ && !gx) return;
    vector sum_g, sum_g_xhat;
    column_sums_pair<P>(g, c.x_hat, sum_g, sum_g_xhat);
    if (affine_) {
      P::set_segment(sum_g_xhat, grad, p.offset);
      P::set_segment(sum_g, grad, p.offset + shape_.channels);
    }
    if (!gx) return;
    const vector w = affine_ ? times(c.inv_std, gamma(p.theta, p.offset)) : c.inv_std;
    if (c.mode == pass_mode::training) {
      const double inv_n = 1.0 / double(c.rows);
      combine_columns<P>({{g, w}, {c.x_hat, times(w, sum_g_xhat, -inv_n)}}, times(w, sum_g, -inv_n), *gx);
    } else {
      scale_columns_of<P>(g, w, *gx);
    }
  }

  /// Along (v, ẋ) with γ̇, β̇ the parts of v:  ẏ = γ̇ ⊙ x̂ + β̇ + γ ⊙ x̂̇,  x̂̇ = J ẋ, which in
  /// training mode is s (ẋ − mean(ẋ) − x̂ · mean(x̂ ⊙ ẋ)): from μ̇ = mean(ẋ),
  /// (σ²)˙ = 2 mean((x − μ) ⊙ ẋ) and ṡ = −s³ mean((x − μ) ⊙ ẋ) = −s² k, k = mean(x̂ ⊙ ẋ).
  /// With w = s γ: ẏ = w ẋ + (γ̇ − w k) x̂ + β̇ − w mean(ẋ), one combination.
  void tangent_forward(const tangent_context<P>& t, const matrix& x, const matrix* x_dot, cache& c,
                       matrix& y_dot) const {
    const vector g_ = affine_ ? gamma(t.theta, t.offset) : ones();
    const vector gamma_dot = affine_ ? gamma(t.v, t.offset) : zeros(), beta_dot = affine_ ? beta(t.v, t.offset) : zeros();
    if (!x_dot) {
      if (affine_) combine_columns<P>({{c.x_hat, gamma_dot}}, beta_dot, y_dot);
      else y_dot = P::matrix_zeros(P::rows(x), P::cols(x));
      return;
    }
    const vector w = times(c.inv_std, g_);
    if (c.mode != pass_mode::training) {
      combine_columns<P>({{*x_dot, w}, {c.x_hat, gamma_dot}}, beta_dot, y_dot);
      return;
    }
    const double inv_n = 1.0 / double(c.rows);
    vector sum_xd, sum_xd_xhat;
    column_sums_pair<P>(*x_dot, c.x_hat, sum_xd, sum_xd_xhat);
    combine_columns<P>({{*x_dot, w}, {c.x_hat, plus(gamma_dot, times(w, sum_xd_xhat, -inv_n))}},
                       plus(beta_dot, times(w, sum_xd, -inv_n)), y_dot);
  }

  /// The tangent of backward along (v, ẋ), with ġ the tangent of g and ȧ = γ̇ ⊙ g + γ ⊙ ġ
  /// (ȧ = ġ when not affine):
  ///   (∂L/∂γ)˙ = Σ_rows (ġ ⊙ x̂ + g ⊙ x̂̇),   (∂L/∂β)˙ = Σ_rows ġ,
  ///   (∂L/∂x)˙ = J ȧ + (training, ẋ given) s (−s k ⊙ Π a − x̂̇ ⊙ m − x̂ ⊙ mean(a ⊙ x̂̇)),
  /// m = mean(a ⊙ x̂), k = mean(x̂ ⊙ ẋ): the derivative of s (a − mean(a) − x̂ m) is
  /// ṡ Π a + s (ȧ − mean(ȧ) − x̂̇ m − x̂ ṁ) with ṡ = −s² k and ṁ = mean(ȧ ⊙ x̂) + mean(a ⊙ x̂̇).
  /// In evaluation mode J = s is constant, so only J ȧ remains. Collected per channel, that
  /// is one combination of g, ġ, x̂ and x̂̇:
  ///   g: s γ̇ − s² k γ;  ġ: s γ;  x̂: −s mean(ȧ ⊙ x̂) + s² k m − s γ mean(g ⊙ x̂̇);  x̂̇: −s m;
  ///   constant: −s mean(ȧ) + s² k γ mean(g)
  /// (k = 0 and no x̂̇ without ẋ; only the g and ġ terms in evaluation mode), whose column
  /// sums take one pass per pair of matrices.
  void tangent_backward(const tangent_context<P>& t, const matrix&, const matrix* x_dot, const matrix& g,
                        const matrix& g_dot, cache& c, matrix* gx_dot, vector& grad_dot) const {
    const bool training = c.mode == pass_mode::training;
    const double inv_n = 1.0 / double(c.rows);
    const vector& s = c.inv_std;
    matrix xh_dot;  // x̂̇ = J ẋ
    vector k = zeros();
    if (x_dot) {
      if (training) {
        vector sum_xd, sum_xd_xhat;
        column_sums_pair<P>(*x_dot, c.x_hat, sum_xd, sum_xd_xhat);
        k = scaled(sum_xd_xhat, inv_n);
        combine_columns<P>({{*x_dot, s}, {c.x_hat, times(s, k, -1.0)}}, times(s, sum_xd, -inv_n), xh_dot);
      } else {
        scale_columns_of<P>(*x_dot, s, xh_dot);
      }
    }
    vector sum_gd, sum_gd_xhat, sum_g, sum_g_xhat, sum_g_xhd = zeros();
    column_sums_pair<P>(g_dot, c.x_hat, sum_gd, sum_gd_xhat);
    if (x_dot) column_sums_of_product<P>(g, xh_dot, sum_g_xhd);
    if (affine_) {
      P::set_segment(plus(sum_gd_xhat, sum_g_xhd), grad_dot, t.offset);
      P::set_segment(sum_gd, grad_dot, t.offset + shape_.channels);
    }
    if (!gx_dot) return;
    const vector g_ = affine_ ? gamma(t.theta, t.offset) : ones();
    const vector gamma_dot = affine_ ? gamma(t.v, t.offset) : zeros();
    const vector coef_g_dot = times(s, g_);
    if (!training) {
      if (affine_) combine_columns<P>({{g_dot, coef_g_dot}, {g, times(s, gamma_dot)}}, zeros(), *gx_dot);
      else scale_columns_of<P>(g_dot, coef_g_dot, *gx_dot);
      return;
    }
    column_sums_pair<P>(g, c.x_hat, sum_g, sum_g_xhat);
    // Per-channel means: ȧ, ȧ ⊙ x̂, g, a ⊙ x̂ (m) and g ⊙ x̂̇.
    const vector mean_a_dot = scaled(plus(times(gamma_dot, sum_g), times(g_, sum_gd)), inv_n);
    const vector mean_a_dot_xhat = scaled(plus(times(gamma_dot, sum_g_xhat), times(g_, sum_gd_xhat)), inv_n);
    const vector mean_g = scaled(sum_g, inv_n), m = times(g_, sum_g_xhat, inv_n), mean_g_xhd = scaled(sum_g_xhd, inv_n);
    const vector s2k = times(times(s, s), k);  // s² k
    const vector coef_g = plus(times(s, gamma_dot), times(s2k, g_, -1.0));
    const vector coef_xhat =
        plus(plus(times(s, mean_a_dot_xhat, -1.0), times(s2k, m)), times(times(s, g_), mean_g_xhd, -1.0));
    const vector constant = plus(times(s, mean_a_dot, -1.0), times(times(s2k, g_), mean_g));
    if (x_dot)
      combine_columns<P>({{g_dot, coef_g_dot}, {g, coef_g}, {c.x_hat, coef_xhat}, {xh_dot, times(s, m, -1.0)}},
                         constant, *gx_dot);
    else if (affine_)
      combine_columns<P>({{g_dot, coef_g_dot}, {g, coef_g}, {c.x_hat, coef_xhat}}, constant, *gx_dot);
    else  // γ = 1, γ̇ = 0, k = 0: no g term
      combine_columns<P>({{g_dot, coef_g_dot}, {c.x_hat, coef_xhat}}, constant, *gx_dot);
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
  /// Per-channel vectors: all ones, all zeros, a ⊙ b · f, a · f and a + b.
  vector ones() const {
    vector o = P::zeros(shape_.channels);
    P::fill(o, scalar(1));
    return o;
  }
  vector zeros() const { return P::zeros(shape_.channels); }
  static vector times(const vector& a, const vector& b, double f = 1.0) {
    vector o;
    P::hadamard(a, b, o);
    if (f != 1.0) P::scale(o, scalar(f));
    return o;
  }
  static vector scaled(vector a, double f) {
    P::scale(a, scalar(f));
    return a;
  }
  static vector plus(vector a, const vector& b) {
    P::axpy(scalar(1), b, a);
    return a;
  }

  geometry shape_;
  bool affine_;
  double momentum_, eps_;
  vector running_mean_, running_var_;
};

}  // namespace bilevel::learners
