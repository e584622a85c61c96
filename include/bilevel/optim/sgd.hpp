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
#include <cstddef>
#include <limits>
#include <functional>
#include <stdexcept>
#include <string>
#include <utility>

#include "bilevel/core/optimizer.hpp"

namespace bilevel::optim {

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

  /// Reverse of step(): see optimizer.hpp for the in/out convention.
  void vjp(const vector& /*theta*/, const optimizer_state<P>& s, const vector& /*g*/,
           vector& adj_theta, optimizer_state<P>& adj_s, vector& adj_g) const {
    const auto eta = scalar(lr_at(s.step));
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

  /// Forward of step() on tangents: see optimizer.hpp.
  void jvp(const vector& /*theta*/, const optimizer_state<P>& s, const vector& /*g*/,
           vector& tan_theta, optimizer_state<P>& tan_s, vector& tan_g) const {
    const auto eta = scalar(lr_at(s.step));
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
};

}  // namespace bilevel::optim
