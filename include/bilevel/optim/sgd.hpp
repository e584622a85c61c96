// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// Stochastic gradient descent with momentum, Nesterov momentum and weight decay, as PyTorch
/// defines them (dampening 0):
///
///     d  = g + wd·θ
///     m' = μ·m + d                    (the buffer exists only when μ > 0)
///     θ' = θ − η·m'                   (plain)
///     θ' = θ − η·(d + μ·m')           (Nesterov)
///
/// The map is linear in (θ, m, g), so its vector-Jacobian and Jacobian-vector products are
/// exact and cheap; DARTS and LFM unroll through exactly this step, momentum and decay included.
///
/// On a policy with `zip_apply` (core/tensor_policy.hpp) the step, its VJP and its JVP are one
/// element-wise pass each (one kernel on a GPU) instead of up to six BLAS-1 calls; the same
/// arithmetic, so results agree with the composed form to rounding (tests/test_optimizers.cpp).
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
/// SGD's step, VJP and JVP on one element, for zip_apply; `m` is the momentum buffer's entry
/// (the overloads without it: no momentum).
template <class S>
struct sgd_maps {
  S eta, mu, wd;
  bool nesterov;

  BILEVEL_HOST_DEVICE S decayed(S g, S theta) const { return wd != S(0) ? g + wd * theta : g; }

  /// The step; also its JVP, applied to the tangents of (θ, m, g): the map is linear.
  struct step_map {
    using bilevel_device_callable = void;
    sgd_maps c;
    BILEVEL_HOST_DEVICE void operator()(S& theta, S g) const { theta -= c.eta * c.decayed(g, theta); }
    BILEVEL_HOST_DEVICE void operator()(S& theta, S& m, S g) const {
      const S d = c.decayed(g, theta);
      m = c.mu * m + d;
      theta -= c.eta * (c.nesterov ? d + c.mu * m : m);
    }
  };
  /// In: the adjoints of θ' (and m'); out: those of θ (and m) and g.
  struct vjp_map {
    using bilevel_device_callable = void;
    sgd_maps c;
    BILEVEL_HOST_DEVICE void operator()(S& adj_theta, S& adj_g) const {
      const S adj_d = -c.eta * adj_theta;
      if (c.wd != S(0)) adj_theta += c.wd * adj_d;
      adj_g = adj_d;
    }
    BILEVEL_HOST_DEVICE void operator()(S& adj_theta, S& adj_m, S& adj_g) const {
      S adj_d = -c.eta * adj_theta;
      if (c.nesterov) {  // direction = d + μ m'
        adj_m += c.mu * adj_d;
        adj_d += adj_m;
      } else {  // direction = m'
        adj_m += adj_d;
        adj_d = adj_m;
      }
      adj_m *= c.mu;  // m' = μ m + d
      if (c.wd != S(0)) adj_theta += c.wd * adj_d;
      adj_g = adj_d;
    }
  };
};
}  // namespace detail

template <tensor_policy P>
struct sgd {
  using policy = P;
  using vector = vector_t<P>;
  using scalar = scalar_t<P>;

  double lr = 0.01;
  double momentum = 0.0;
  double weight_decay = 0.0;
  bool nesterov = false;
  /// Optional schedule: the learning rate at a step (0-based); `lr` is used when empty.
  std::function<double(std::size_t)> schedule{};

  [[nodiscard]] double lr_at(std::size_t step) const { return schedule ? schedule(step) : lr; }

  [[nodiscard]] optimizer_state<P> init(const vector& theta) const {
    validate();
    optimizer_state<P> s;
    if (momentum > 0.0) s.buffers.push_back(P::zeros(P::size(theta)));
    return s;
  }

  void step(vector& theta, optimizer_state<P>& s, const vector& g) const {
    const auto eta = scalar(lr_at(s.step));
    if constexpr (fused_elementwise<P>) {
      const typename maps::step_map f{coefficients(eta)};
      if (momentum > 0.0) P::zip_apply(f, theta, s.buffers.at(0), g);
      else P::zip_apply(f, theta, g);
      ++s.step;
    } else {
      // The direction is read where it already is (g, or the momentum buffer m') and copied
      // only where it must be changed: a θ-sized copy less per step, same arithmetic.
      vector d;
      const vector* direction = &g;
      auto own_direction = [&] {
        if (direction != &d) P::copy(*direction, d);
        direction = &d;
      };
      if (weight_decay != 0.0) {
        own_direction();
        P::axpy(scalar(weight_decay), theta, d);
      }
      if (momentum > 0.0) {
        vector& m = s.buffers.at(0);
        P::scale(m, scalar(momentum));
        P::axpy(scalar(1), *direction, m);
        if (nesterov) {
          own_direction();
          P::axpy(scalar(momentum), m, d);
        } else {
          direction = &m;
        }
      }
      P::axpy(-eta, *direction, theta);
      ++s.step;
    }
  }

  /// Reverse of step(): see optimizer.hpp for the in/out convention.
  void vjp(const vector& /*theta*/, const optimizer_state<P>& s, const vector& /*g*/,
           vector& adj_theta, optimizer_state<P>& adj_s, vector& adj_g) const {
    const auto eta = scalar(lr_at(s.step));
    if constexpr (fused_elementwise<P>) {
      const typename maps::vjp_map f{coefficients(eta)};
      vector out;  // adj_g itself unless it is adj_theta
      vector& g_out = &adj_g == &adj_theta ? out : adj_g;
      P::resize(g_out, P::size(adj_theta));
      if (momentum > 0.0) P::zip_apply(f, adj_theta, adj_s.buffers.at(0), g_out);
      else P::zip_apply(f, adj_theta, g_out);
      if (&g_out == &out) adj_g = std::move(out);
    } else {
      // adjoint of d, the direction before momentum: θ' = θ − η·(...)
      vector adj_d;
      P::copy(adj_theta, adj_d);
      P::scale(adj_d, -eta);  // ∂θ'/∂(direction) = −η
      if (momentum > 0.0) {
        // adj of m' collects the state adjoint and, through the step, −η (plain) or −ημ (Nesterov)
        vector& adj_m = adj_s.buffers.at(0);
        if (nesterov) {  // direction = d + μ m'
          P::axpy(scalar(momentum), adj_d, adj_m);
        } else {  // direction = m'
          P::axpy(scalar(1), adj_d, adj_m);
          P::fill(adj_d, scalar(0));
        }
        // m' = μ m + d
        P::axpy(scalar(1), adj_m, adj_d);
        P::scale(adj_m, scalar(momentum));
      }
      // d = g + wd θ; θ' = θ − ...: adj_theta keeps its identity part
      if (weight_decay != 0.0) P::axpy(scalar(weight_decay), adj_d, adj_theta);
      adj_g = std::move(adj_d);
    }
  }

  /// Forward of step() on tangents: see optimizer.hpp.
  void jvp(const vector& /*theta*/, const optimizer_state<P>& s, const vector& /*g*/,
           vector& tan_theta, optimizer_state<P>& tan_s, vector& tan_g) const {
    const auto eta = scalar(lr_at(s.step));
    if constexpr (fused_elementwise<P>) {
      const typename maps::step_map f{coefficients(eta)};  // linear: the JVP is the map itself
      const vector& g_in = tan_g;
      if (momentum > 0.0) P::zip_apply(f, tan_theta, tan_s.buffers.at(0), g_in);
      else P::zip_apply(f, tan_theta, g_in);
    } else {
      vector tan_d;
      P::copy(tan_g, tan_d);
      if (weight_decay != 0.0) P::axpy(scalar(weight_decay), tan_theta, tan_d);
      if (momentum > 0.0) {
        vector& tan_m = tan_s.buffers.at(0);
        P::scale(tan_m, scalar(momentum));
        P::axpy(scalar(1), tan_d, tan_m);
        if (nesterov) P::axpy(scalar(momentum), tan_m, tan_d);
        else P::copy(tan_m, tan_d);
      }
      P::axpy(-eta, tan_d, tan_theta);
    }
  }

  void validate() const {
    if (!(lr > 0.0 && lr < std::numeric_limits<double>::infinity()) && !schedule)
      throw std::invalid_argument("bilevel::optim::sgd: learning rate must be finite and > 0, got " + std::to_string(lr));
    if (!(momentum >= 0.0 && momentum < 1.0))
      throw std::invalid_argument("bilevel::optim::sgd: momentum must be in [0, 1), got " + std::to_string(momentum));
    if (!(weight_decay >= 0.0))
      throw std::invalid_argument("bilevel::optim::sgd: weight decay must be >= 0, got " + std::to_string(weight_decay));
    if (nesterov && momentum == 0.0)
      throw std::invalid_argument("bilevel::optim::sgd: Nesterov momentum needs momentum > 0");
  }

 private:
  using maps = detail::sgd_maps<scalar>;
  [[nodiscard]] maps coefficients(scalar eta) const {
    return {eta, scalar(momentum), scalar(weight_decay), nesterov};
  }
};

}  // namespace bilevel::optim
