// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// The HypergradientStrategy concept: how one level's best response is differentiated.
///
/// A strategy is a small options struct (what the user writes: `hypergrad::implicit_cg{...}`)
/// with a nested `template <class Learner, class Optimizer> class engine` that the level
/// instantiates and owns; the engine keeps whatever the strategy needs (a tape of steps,
/// carried tangents). The solver calls, for a level `lv` reading the values `in`:
///   1. `engine.begin_block(lv, in)`: before the level's block of optimizer steps in an
///      outer iteration (unrolled strategies start a new tape here);
///   2. `engine.on_step(lv, in, batch, g)`: before each step applies gradient g, with θ and the
///      optimizer state still as they were (tapes record, forward mode carries tangents);
///   3. `engine.response(lv, in) -> const vector&`: the value upper levels read as this
///      level's solution θ* (θ itself, or the result of virtual look-ahead steps);
///   4. `engine.vjp(lv, in, adjoint, out) -> hypergradient_report`: given adjoint = ∂F/∂θ*,
///      write (∂θ*/∂in_s)ᵀ adjoint to out[s] for each input slot s.
/// Chaining vjp() level by level gives the hypergradients of three and more levels.
///
/// An engine that differentiates by perturbing the inputs instead of differentiating the loss
/// in them (hypergrad::zero_order) declares `static constexpr bool needs_input_gradient =
/// false;`, and the solver then lets a learner without input_gradient() be read through.
#include <concepts>
#include <span>

#include "bilevel/core/hypergradient_report.hpp"
#include "bilevel/core/learner.hpp"

namespace bilevel {

template <class S, class Level>
concept hypergradient_strategy =
    requires { typename S::template engine<typename Level::learner_type, typename Level::optimizer_type>; } &&
    requires(typename S::template engine<typename Level::learner_type, typename Level::optimizer_type>& e,
             Level& lv, input_list<typename Level::policy> in, const typename Level::batch_type& b,
             const vector_t<typename Level::policy>& v, std::span<vector_t<typename Level::policy>> out) {
      e.begin_block(lv, in);
      e.on_step(lv, in, b, v);
      { e.response(lv, in) } -> std::same_as<const vector_t<typename Level::policy>&>;
      { e.vjp(lv, in, v, out) } -> std::same_as<hypergradient_report>;
    };

}  // namespace bilevel
