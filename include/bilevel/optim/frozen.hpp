// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// The optimizer of a level whose parameters must not move: a frozen or evaluate-only level
/// (a fixed architecture, a pretrained teacher, a level that is only read, or one whose
/// hypergradient is wanted for monitoring but never applied).
///
///     θ' = θ        (g is ignored; the step counter still counts)
///
/// Without it such a level needed `sgd` with a tiny positive learning rate (sgd rejects
/// lr <= 0, rightly: there it is a mistake), which still drifts and says nothing of intent.
/// The map is the identity in θ and constant in g, so its VJP passes the adjoint of θ'
/// through unchanged and gives g a zero adjoint, and its JVP leaves the tangent of θ as it
/// is: unrolled and forward-mode strategies see a level whose solution does not depend on
/// what it reads. It keeps no buffers, so checkpoints hold only θ and the step count.
///
/// The level still computes its (hyper)gradient at every step it takes; to skip that work
/// too, give the level no steps with `level::evaluate_only()` (core/level.hpp). Pair a frozen
/// level with hypergrad::first_order or unrolled (both then say, correctly, that its solution
/// does not move with what it reads); implicit strategies (CG, Neumann, fixed point) assume a
/// level at its optimum, which a frozen level is not, and the fixed point of the identity map
/// has no derivative to find.
#include <cstddef>

#include "bilevel/core/optimizer.hpp"

namespace bilevel::optim {

template <tensor_policy P>
struct frozen {
  using policy = P;
  using vector = vector_t<P>;

  [[nodiscard]] optimizer_state<P> init(const vector& /*theta*/) const { return {}; }

  /// Leaves θ as it is; counts the step so that step numbers match the level's steps taken.
  void step(vector& /*theta*/, optimizer_state<P>& s, const vector& /*g*/) const { ++s.step; }

  /// Reverse of step() (see optimizer.hpp): adj_theta and adj_state pass through unchanged
  /// (∂θ'/∂θ = I), adj_g is zero (θ' does not depend on g).
  void vjp(const vector& /*theta*/, const optimizer_state<P>& /*s*/, const vector& g, vector& /*adj_theta*/,
           optimizer_state<P>& /*adj_s*/, vector& adj_g) const {
    adj_g = P::zeros(P::size(g));
  }

  /// Forward of step() on tangents (see optimizer.hpp): the tangent of θ' is that of θ.
  void jvp(const vector& /*theta*/, const optimizer_state<P>& /*s*/, const vector& /*g*/, vector& /*tan_theta*/,
           optimizer_state<P>& /*tan_s*/, vector& /*tan_g*/) const {}
};

}  // namespace bilevel::optim
