// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// The Optimizer concepts.
///
/// An optimizer is an update map (θ, state, g) → (θ', state'). Its state is a list of flat
/// buffers (momentum, Adam's moments) and a step counter, the same struct for every
/// optimizer, so that strategies can hold adjoints and tangents of it and checkpoints can
/// save it without knowing which optimizer made it. Requirements:
///   1. `using policy = ...;`
///   2. `optimizer_state<policy> init(const vector& theta) const`;
///   3. `void step(vector& theta, optimizer_state<policy>& state, const vector& g) const`.
/// Refinement differentiable_optimizer (what unrolled, forward-mode, fixed-point and
/// finite-difference strategies go back or forward through):
///   4. `void vjp(theta, state, g, adj_theta, adj_state, adj_g) const`: on entry adj_theta and
///      adj_state hold the adjoints of θ' and state'; on exit they hold the adjoints of θ and
///      state, and adj_g that of g (the map's vector-Jacobian product, at (θ, state, g));
///   5. `void jvp(theta, state, g, tan_theta, tan_state, tan_g) const`: on entry the tangents
///      of θ, state and g; on exit tan_theta and tan_state hold the tangents of θ' and state'.
#include <concepts>
#include <cstddef>
#include <vector>

#include "bilevel/core/tensor_policy.hpp"

namespace bilevel {

/// The state of any optimizer: its buffers (each the size of θ) and the number of steps taken.
template <tensor_policy P>
struct optimizer_state {
  std::vector<vector_t<P>> buffers;
  std::size_t step = 0;

  /// A state of the same shape with every buffer zero: the starting adjoint or tangent.
  [[nodiscard]] optimizer_state zeros_like() const {
    optimizer_state z;
    z.step = step;
    for (const auto& b : buffers) z.buffers.push_back(P::zeros(P::size(b)));
    return z;
  }
};

template <class O>
concept optimizer = requires { typename O::policy; } && tensor_policy<typename O::policy> &&
                    requires(const O& o, vector_t<typename O::policy>& theta,
                             const vector_t<typename O::policy>& g,
                             optimizer_state<typename O::policy>& s) {
                      { o.init(theta) } -> std::same_as<optimizer_state<typename O::policy>>;
                      o.step(theta, s, g);
                    };

template <class O>
concept differentiable_optimizer =
    optimizer<O> && requires(const O& o, const vector_t<typename O::policy>& theta,
                             const optimizer_state<typename O::policy>& s,
                             const vector_t<typename O::policy>& g, vector_t<typename O::policy>& v,
                             optimizer_state<typename O::policy>& adj) {
      o.vjp(theta, s, g, v, adj, v);
      o.jvp(theta, s, g, v, adj, v);
    };

template <class O>
consteval bool check_optimizer() {
  static_assert(requires { typename O::policy; },
                "bilevel: an optimizer must name its back end: add `using policy = ...;`");
  static_assert(optimizer<O>,
                "bilevel: an optimizer needs `optimizer_state<policy> init(const vector&) const` and "
                "`void step(vector& theta, optimizer_state<policy>& state, const vector& g) const`");
  return optimizer<O>;
}

}  // namespace bilevel
