// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// Gradient-norm clipping as an optimizer wrapper: g ↦ g · min(1, c/‖g‖), then the wrapped
/// optimizer's step. Differentiable: when ‖g‖ > c the clip's Jacobian is
/// (c/‖g‖)(I − ĝĝᵀ), ĝ = g/‖g‖ (symmetric, so the VJP and JVP share it); otherwise I.
/// DARTS and LFM clip at 5 and unroll through the clipped step.
#include <cmath>
#include <stdexcept>
#include <string>

#include "bilevel/core/optimizer.hpp"

namespace bilevel::optim {

template <optimizer O>
struct clip_grad_norm {
  using policy = typename O::policy;
  using vector = vector_t<policy>;
  using scalar = scalar_t<policy>;

  O inner;
  double max_norm = 5.0;

  [[nodiscard]] optimizer_state<policy> init(const vector& theta) const {
    if (!(max_norm > 0.0))
      throw std::invalid_argument("bilevel::optim::clip_grad_norm: max_norm must be > 0, got " + std::to_string(max_norm));
    return inner.init(theta);
  }
  void step(vector& theta, optimizer_state<policy>& s, const vector& g) const { inner.step(theta, s, clipped(g)); }

  void vjp(const vector& theta, const optimizer_state<policy>& s, const vector& g, vector& adj_theta,
           optimizer_state<policy>& adj_s, vector& adj_g) const
    requires differentiable_optimizer<O>
  {
    vector adj_clipped;
    inner.vjp(theta, s, clipped(g), adj_theta, adj_s, adj_clipped);
    apply_jacobian(g, adj_clipped, adj_g);
  }
  void jvp(const vector& theta, const optimizer_state<policy>& s, const vector& g, vector& tan_theta,
           optimizer_state<policy>& tan_s, vector& tan_g) const
    requires differentiable_optimizer<O>
  {
    vector tan_clipped;
    apply_jacobian(g, tan_g, tan_clipped);
    inner.jvp(theta, s, clipped(g), tan_theta, tan_s, tan_clipped);
  }

  [[nodiscard]] vector clipped(const vector& g) const {
    vector c = g;
    const double n = policy::norm(g);
    if (n > max_norm) policy::scale(c, scalar(max_norm / n));
    return c;
  }

 private:
  /// out = J x, J the clip's (symmetric) Jacobian at g.
  void apply_jacobian(const vector& g, const vector& x, vector& out) const {
    const double n = policy::norm(g);
    policy::copy(x, out);
    if (!(n > max_norm)) return;
    policy::axpy(scalar(-policy::dot(g, x) / (n * n)), g, out);
    policy::scale(out, scalar(max_norm / n));
  }
};

}  // namespace bilevel::optim
