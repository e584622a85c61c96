// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// Adam (Kingma & Ba, 2015) with L2 weight decay or decoupled weight decay (AdamW,
/// Loshchilov & Hutter, 2019), as PyTorch defines them. With t = step + 1:
///
///     d  = g + wd·θ                      (L2 form; AdamW leaves d = g)
///     m' = β1·m + (1−β1)·d               v' = β2·v + (1−β2)·d²
///     u  = (m'/(1−β1^t)) / (√(v'/(1−β2^t)) + ε)
///     θ' = θ − η·u                       (AdamW: θ' = (1 − η·wd)·θ − η·u)
///
/// Its VJP and JVP are exact: the map is smooth wherever v' > 0. Where v' = 0 (every past
/// gradient component was zero, so m' = 0 too) the √ term has no derivative; the products use
/// 0 there, the limit along every direction that keeps m' = 0.
///
/// On a policy with `zip_apply` (core/tensor_policy.hpp) the step, its VJP and its JVP are one
/// element-wise pass each (one kernel on a GPU) instead of 10 to 20 BLAS-1 calls and
/// temporaries; the same arithmetic, so results agree with the composed form to rounding.
#include <cmath>
#include <cstddef>
#include <limits>
#include <functional>
#include <stdexcept>
#include <string>
#include <utility>

#include "bilevel/core/elementwise.hpp"
#include "bilevel/core/optimizer.hpp"

namespace bilevel::optim {

namespace detail {
// Adam's element-wise maps of (m', v'), named so that the CUDA policy runs them on the
// device (core/elementwise.hpp). m̂ = m_hat·m', v̂ = v_hat·v'.

/// u = m̂ / (√v̂ + ε).
struct adam_update {
  using bilevel_device_callable = void;
  double m_hat, v_hat, eps;
  template <class S>
  BILEVEL_HOST_DEVICE S operator()(S m, S v) const { return S(m_hat * double(m) / (::sqrt(v_hat * double(v)) + eps)); }
};
/// ∂u/∂m'.
struct adam_update_slope_m {
  using bilevel_device_callable = void;
  double m_hat, v_hat, eps;
  template <class S>
  BILEVEL_HOST_DEVICE S operator()(S, S v) const { return S(m_hat / (::sqrt(v_hat * double(v)) + eps)); }
};
/// ∂u/∂v', 0 where v' = 0 (see the file comment).
struct adam_update_slope_v {
  using bilevel_device_callable = void;
  double m_hat, v_hat, eps;
  template <class S>
  BILEVEL_HOST_DEVICE S operator()(S m, S v) const {
    const double r = ::sqrt(v_hat * double(v));
    if (r == 0.0) return S(0);
    const double den = r + eps;
    return S(-m_hat * double(m) / (den * den) * v_hat / (2.0 * r));
  }
};

/// Adam's step, VJP and JVP on one element, for zip_apply: the composed form's arithmetic in
/// the same order, m̂/v̂ terms in double as above.
template <class S>
struct adam_maps {
  S lr, beta1, beta2, one_minus_beta1, one_minus_beta2, two_one_minus_beta2, wd, keep;
  bool l2;  ///< weight decay added to the gradient (Adam); AdamW scales θ by keep = 1 − η·wd instead
  double m_hat, v_hat, eps;

  BILEVEL_HOST_DEVICE S direction(S g, S theta) const { return l2 ? g + wd * theta : g; }
  BILEVEL_HOST_DEVICE S first(S m, S d) const { return beta1 * m + one_minus_beta1 * d; }
  BILEVEL_HOST_DEVICE S second(S v, S d) const { return beta2 * v + one_minus_beta2 * (d * d); }
  BILEVEL_HOST_DEVICE bool decoupled_decay() const { return !l2 && keep != S(1); }

  struct step_map {
    using bilevel_device_callable = void;
    adam_maps c;
    BILEVEL_HOST_DEVICE void operator()(S& theta, S& m, S& v, S g) const {
      const S d = c.direction(g, theta);
      m = c.first(m, d);
      v = c.second(v, d);
      const S u = adam_update{c.m_hat, c.v_hat, c.eps}(m, v);
      if (c.decoupled_decay()) theta *= c.keep;
      theta -= c.lr * u;
    }
  };
  /// In: the adjoints of θ', m', v'; out: those of θ, m, v and g.
  struct vjp_map {
    using bilevel_device_callable = void;
    adam_maps c;
    BILEVEL_HOST_DEVICE void operator()(S theta, S m, S v, S g, S& adj_theta, S& adj_m, S& adj_v, S& adj_g) const {
      const S d = c.direction(g, theta), m1 = c.first(m, d), v1 = c.second(v, d);
      const S adj_u = -c.lr * adj_theta;
      adj_m += adj_u * adam_update_slope_m{c.m_hat, c.v_hat, c.eps}(m1, v1);
      adj_v += adj_u * adam_update_slope_v{c.m_hat, c.v_hat, c.eps}(m1, v1);
      const S adj_d = c.one_minus_beta1 * adj_m + c.two_one_minus_beta2 * (adj_v * d);
      adj_m *= c.beta1;
      adj_v *= c.beta2;
      if (c.decoupled_decay()) adj_theta *= c.keep;
      if (c.l2) adj_theta += c.wd * adj_d;
      adj_g = adj_d;
    }
  };
  /// In: the tangents of θ, m, v and g; out: those of θ', m', v'.
  struct jvp_map {
    using bilevel_device_callable = void;
    adam_maps c;
    BILEVEL_HOST_DEVICE void operator()(S theta, S m, S v, S g, S& tan_theta, S& tan_m, S& tan_v, S tan_g) const {
      const S d = c.direction(g, theta), m1 = c.first(m, d), v1 = c.second(v, d);
      const S tan_d = c.direction(tan_g, tan_theta);
      tan_m = c.beta1 * tan_m + c.one_minus_beta1 * tan_d;
      tan_v = c.beta2 * tan_v + c.two_one_minus_beta2 * (d * tan_d);
      const S du = adam_update_slope_m{c.m_hat, c.v_hat, c.eps}(m1, v1) * tan_m +
                   adam_update_slope_v{c.m_hat, c.v_hat, c.eps}(m1, v1) * tan_v;
      if (c.decoupled_decay()) tan_theta *= c.keep;
      tan_theta -= c.lr * du;
    }
  };
};
}  // namespace detail

template <tensor_policy P>
struct adam {
  using policy = P;
  using vector = vector_t<P>;
  using scalar = scalar_t<P>;

  double lr = 1e-3;
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  double weight_decay = 0.0;
  bool decoupled = false;  ///< AdamW
  std::function<double(std::size_t)> schedule{};

  [[nodiscard]] double lr_at(std::size_t step) const { return schedule ? schedule(step) : lr; }

  [[nodiscard]] optimizer_state<P> init(const vector& theta) const {
    validate();
    optimizer_state<P> s;
    s.buffers.push_back(P::zeros(P::size(theta)));  // m
    s.buffers.push_back(P::zeros(P::size(theta)));  // v
    return s;
  }

  void step(vector& theta, optimizer_state<P>& s, const vector& g) const {
    const auto c = coefficients(s.step);
    if constexpr (fused_elementwise<P>) {
      P::zip_apply(typename maps::step_map{element_maps(c)}, theta, s.buffers.at(0), s.buffers.at(1), g);
      ++s.step;
    } else {
      vector d, m, v;
      forward_moments(theta, s, g, d, m, v);
      vector u;
      P::transform(m, v, u, detail::adam_update{c.m_hat, c.v_hat, c.eps});
      s.buffers.at(0) = std::move(m);
      s.buffers.at(1) = std::move(v);
      if (decoupled && weight_decay != 0.0) P::scale(theta, scalar(1 - c.lr * weight_decay));
      P::axpy(scalar(-c.lr), u, theta);
      ++s.step;
    }
  }

  /// Reverse of step(); see optimizer.hpp for the in/out convention.
  void vjp(const vector& theta, const optimizer_state<P>& s, const vector& g, vector& adj_theta,
           optimizer_state<P>& adj_s, vector& adj_g) const {
    const auto c = coefficients(s.step);
    if constexpr (fused_elementwise<P>) {
      vector out;  // adj_g itself unless it is adj_theta
      vector& g_out = &adj_g == &adj_theta ? out : adj_g;
      P::resize(g_out, P::size(adj_theta));
      P::zip_apply(typename maps::vjp_map{element_maps(c)}, theta, s.buffers.at(0), s.buffers.at(1), g, adj_theta,
                   adj_s.buffers.at(0), adj_s.buffers.at(1), g_out);
      if (&g_out == &out) adj_g = std::move(out);
    } else {
      vector d, m1, v1;
      forward_moments(theta, s, g, d, m1, v1);
      // ū = −η θ̄'; then through u = m̂/(√v̂ + ε) into m' and v'.
      vector du_dm, du_dv;
      sensitivities(c, m1, v1, du_dm, du_dv);
      vector adj_u;
      P::copy(adj_theta, adj_u);
      P::scale(adj_u, scalar(-c.lr));
      vector& adj_m1 = adj_s.buffers.at(0);
      vector& adj_v1 = adj_s.buffers.at(1);
      vector t;
      P::hadamard(adj_u, du_dm, t);
      P::axpy(scalar(1), t, adj_m1);
      P::hadamard(adj_u, du_dv, t);
      P::axpy(scalar(1), t, adj_v1);
      // m' = β1 m + (1−β1) d,  v' = β2 v + (1−β2) d²
      vector adj_d;
      P::copy(adj_m1, adj_d);
      P::scale(adj_d, scalar(1 - beta1));
      P::hadamard(adj_v1, d, t);
      P::axpy(scalar(2 * (1 - beta2)), t, adj_d);
      P::scale(adj_m1, scalar(beta1));
      P::scale(adj_v1, scalar(beta2));
      // θ' = θ (or (1 − η wd) θ); d = g (+ wd θ)
      if (decoupled && weight_decay != 0.0) P::scale(adj_theta, scalar(1 - c.lr * weight_decay));
      if (!decoupled && weight_decay != 0.0) P::axpy(scalar(weight_decay), adj_d, adj_theta);
      adj_g = adj_d;
    }
  }

  /// Forward of step() on tangents; see optimizer.hpp.
  void jvp(const vector& theta, const optimizer_state<P>& s, const vector& g, vector& tan_theta,
           optimizer_state<P>& tan_s, vector& tan_g) const {
    const auto c = coefficients(s.step);
    if constexpr (fused_elementwise<P>) {
      const vector& g_in = tan_g;
      P::zip_apply(typename maps::jvp_map{element_maps(c)}, theta, s.buffers.at(0), s.buffers.at(1), g, tan_theta,
                   tan_s.buffers.at(0), tan_s.buffers.at(1), g_in);
    } else {
      vector d, m1, v1;
      forward_moments(theta, s, g, d, m1, v1);
      vector tan_d;
      P::copy(tan_g, tan_d);
      if (!decoupled && weight_decay != 0.0) P::axpy(scalar(weight_decay), tan_theta, tan_d);
      vector& tm = tan_s.buffers.at(0);
      vector& tv = tan_s.buffers.at(1);
      P::scale(tm, scalar(beta1));
      P::axpy(scalar(1 - beta1), tan_d, tm);
      vector t;
      P::hadamard(d, tan_d, t);
      P::scale(tv, scalar(beta2));
      P::axpy(scalar(2 * (1 - beta2)), t, tv);
      vector du, a, b;
      sensitivities(c, m1, v1, a, b);
      P::hadamard(a, tm, du);
      P::hadamard(b, tv, t);
      P::axpy(scalar(1), t, du);
      if (decoupled && weight_decay != 0.0) P::scale(tan_theta, scalar(1 - c.lr * weight_decay));
      P::axpy(scalar(-c.lr), du, tan_theta);
    }
  }

  void validate() const {
    auto bad = [](const std::string& what) { throw std::invalid_argument("bilevel::optim::adam: " + what); };
    if (!(lr > 0.0 && lr < std::numeric_limits<double>::infinity()) && !schedule)
      bad("learning rate must be finite and > 0, got " + std::to_string(lr));
    if (!(beta1 >= 0.0 && beta1 < 1.0)) bad("beta1 must be in [0, 1), got " + std::to_string(beta1));
    if (!(beta2 >= 0.0 && beta2 < 1.0)) bad("beta2 must be in [0, 1), got " + std::to_string(beta2));
    if (!(eps > 0.0)) bad("eps must be > 0, got " + std::to_string(eps));
    if (!(weight_decay >= 0.0)) bad("weight decay must be >= 0, got " + std::to_string(weight_decay));
  }

 private:
  struct coeffs {
    double lr, m_hat, v_hat, eps;  // m̂ = m_hat·m', v̂ = v_hat·v'
  };
  using maps = detail::adam_maps<scalar>;
  [[nodiscard]] maps element_maps(const coeffs& c) const {
    const bool decays = weight_decay != 0.0;
    return {scalar(c.lr),
            scalar(beta1),
            scalar(beta2),
            scalar(1 - beta1),
            scalar(1 - beta2),
            scalar(2 * (1 - beta2)),
            scalar(weight_decay),
            decoupled && decays ? scalar(1 - c.lr * weight_decay) : scalar(1),
            !decoupled && decays,
            c.m_hat,
            c.v_hat,
            c.eps};
  }
  [[nodiscard]] coeffs coefficients(std::size_t step) const {
    const double t = double(step + 1);
    return {lr_at(step), 1.0 / (1.0 - std::pow(beta1, t)), 1.0 / (1.0 - std::pow(beta2, t)), eps};
  }
  void direction(const vector& theta, const vector& g, vector& d) const {
    P::copy(g, d);
    if (!decoupled && weight_decay != 0.0) P::axpy(scalar(weight_decay), theta, d);
  }
  /// ∂u/∂m' and ∂u/∂v', element-wise (0 where v' = 0, see the file comment).
  static void sensitivities(const coeffs& c, const vector& m1, const vector& v1, vector& du_dm, vector& du_dv) {
    P::transform(m1, v1, du_dm, detail::adam_update_slope_m{c.m_hat, c.v_hat, c.eps});
    P::transform(m1, v1, du_dv, detail::adam_update_slope_v{c.m_hat, c.v_hat, c.eps});
  }
  /// d, m' and v' at (θ, state, g): what the products linearise around.
  void forward_moments(const vector& theta, const optimizer_state<P>& s, const vector& g, vector& d, vector& m1,
                       vector& v1) const {
    direction(theta, g, d);
    P::copy(s.buffers.at(0), m1);
    P::scale(m1, scalar(beta1));
    P::axpy(scalar(1 - beta1), d, m1);
    vector d2;
    P::hadamard(d, d, d2);
    P::copy(s.buffers.at(1), v1);
    P::scale(v1, scalar(beta2));
    P::axpy(scalar(1 - beta2), d2, v1);
  }
};

}  // namespace bilevel::optim
