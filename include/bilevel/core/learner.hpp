// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// The Learner concepts: what a level's objective must offer, and its refinements.
///
/// A learner owns no parameters: it maps a flat parameter vector θ, the values it reads from
/// other levels (its *inputs*: upper levels' variables, lower levels' solutions), and a batch
/// to a loss. Requirements, numbered as the diagnostics in check_learner() name them:
///   1. `using policy = ...;` a tensor_policy;
///   2. `using batch_type = ...;` what one draw of data is (bilevel::full_batch for none);
///   3. `std::size_t num_parameters() const`;
///   4. `double loss(θ, inputs, batch) const`;
///   5. `double gradient(θ, inputs, batch, out) const`: writes ∂L/∂θ to out, returns the loss.
/// Refinements:
///   - input_differentiable_learner adds `input_gradient(θ, inputs, batch, slot, out)`:
///     ∂L/∂inputs[slot]. Every level that a hypergradient passes through needs it, unless its
///     strategy perturbs the inputs instead (hypergrad::zero_order: a black-box lower level).
///   - Exact second-order members, each optional (bilevel::hvp() and friends fall back to
///     central differences of gradients when one is missing, and say so in the report):
///     `hvp(θ, in, b, v, out)` = (∂²L/∂θ²) v,
///     `mixed_vjp(θ, in, b, slot, v, out)` = (∂²L/∂in_slot ∂θ) v  (θ-space → input space),
///     `mixed_jvp(θ, in, b, slot, u, out)` = (∂²L/∂θ ∂in_slot) u  (input space → θ-space).
///   - twice_differentiable_learner has all three exactly.
/// Optional shape contract, checked by the solver when present (strongly recommended: it
/// turns a wiring mistake into an error that names it instead of an out-of-bounds read):
///   `std::size_t num_inputs() const` and `std::size_t input_size(std::size_t slot) const`.
#include <concepts>
#include <cstddef>
#include <span>
#include <vector>

#include "bilevel/core/tensor_policy.hpp"

namespace bilevel {

/// The values a learner reads from other levels, one flat vector per input slot, in the
/// order the level's `reads` list gives.
template <tensor_policy P>
using input_list = std::span<const vector_t<P>* const>;

/// The batch type of a learner trained on all of its data at once (closed-form test
/// problems, small convex models).
struct full_batch {};

namespace detail {
template <class L> concept has_policy = requires { typename L::policy; } && tensor_policy<typename L::policy>;
template <class L> concept has_batch_type = requires { typename L::batch_type; };

template <class L>
concept has_num_parameters = requires(const L& l) {
  { l.num_parameters() } -> std::convertible_to<std::size_t>;
};
template <class L>
concept has_loss = requires(const L& l, const vector_t<typename L::policy>& theta,
                            input_list<typename L::policy> in, const typename L::batch_type& b) {
  { l.loss(theta, in, b) } -> std::convertible_to<double>;
};
template <class L>
concept has_gradient = requires(const L& l, const vector_t<typename L::policy>& theta,
                                input_list<typename L::policy> in,
                                const typename L::batch_type& b, vector_t<typename L::policy>& out) {
  { l.gradient(theta, in, b, out) } -> std::convertible_to<double>;
};
template <class L>
concept has_input_gradient = requires(const L& l, const vector_t<typename L::policy>& theta,
                                      input_list<typename L::policy> in,
                                      const typename L::batch_type& b, std::size_t slot,
                                      vector_t<typename L::policy>& out) {
  l.input_gradient(theta, in, b, slot, out);
};
}  // namespace detail

/// Requirements 1-5 above.
template <class L>
concept learner = detail::has_policy<L> && detail::has_batch_type<L> &&
                  detail::has_num_parameters<L> && detail::has_loss<L> && detail::has_gradient<L>;

/// A learner whose loss can be differentiated with respect to its inputs.
template <class L>
concept input_differentiable_learner = learner<L> && detail::has_input_gradient<L>;

/// Exact Hessian-vector product (∂²L/∂θ²) v.
template <class L>
concept has_exact_hvp = learner<L> && requires(const L& l, const vector_t<typename L::policy>& x,
                                               input_list<typename L::policy> in,
                                               const typename L::batch_type& b,
                                               vector_t<typename L::policy>& out) {
  l.hvp(x, in, b, x, out);
};
/// Exact mixed vector-Jacobian product (∂²L/∂in ∂θ) v.
template <class L>
concept has_exact_mixed_vjp = learner<L> && requires(const L& l, const vector_t<typename L::policy>& x,
                                                     input_list<typename L::policy> in,
                                                     const typename L::batch_type& b, std::size_t slot,
                                                     vector_t<typename L::policy>& out) {
  l.mixed_vjp(x, in, b, slot, x, out);
};
/// Exact mixed Jacobian-vector product (∂²L/∂θ ∂in) u.
template <class L>
concept has_exact_mixed_jvp = learner<L> && requires(const L& l, const vector_t<typename L::policy>& x,
                                                     input_list<typename L::policy> in,
                                                     const typename L::batch_type& b, std::size_t slot,
                                                     vector_t<typename L::policy>& out) {
  l.mixed_jvp(x, in, b, slot, x, out);
};

/// All second-order products exact: no finite differences anywhere in its hypergradients.
template <class L>
concept twice_differentiable_learner = input_differentiable_learner<L> && has_exact_hvp<L> &&
                                       has_exact_mixed_vjp<L> && has_exact_mixed_jvp<L>;

/// The optional shape contract (see the file comment).
/// A learner with state that real optimizer steps change (batch normalization's running
/// statistics, dropout's step counter): the solver calls on_real_step(θ, inputs, batch) once
/// per real step of its level, with the point and batch the step's gradient was taken at,
/// and never for look-ahead steps, HVPs or finite differences.
template <class L>
concept has_real_step_hook = learner<L> && requires(L& l, const vector_t<typename L::policy>& theta,
                                                    input_list<typename L::policy> in,
                                                    const typename L::batch_type& b) { l.on_real_step(theta, in, b); };

/// A learner whose state a checkpoint must keep (running statistics, the dropout step
/// counter): state() gives it as doubles, restore() takes it back.
template <class L>
concept has_learner_state = requires(const L& cl, L& l, std::span<const double> s) {
  { cl.state() } -> std::convertible_to<std::vector<double>>;
  l.restore(s);
};

template <class L>
concept declares_inputs = requires(const L& l, std::size_t slot) {
  { l.num_inputs() } -> std::convertible_to<std::size_t>;
  { l.input_size(slot) } -> std::convertible_to<std::size_t>;
};

template <class> inline constexpr bool dependent_false = false;

/// One static_assert per missing requirement, each saying what to add. Called where a
/// learner enters the library (bilevel::make_level), so the first error a user sees is this
/// sentence rather than a page of substitution failures.
template <class L>
consteval bool check_learner() {
  if constexpr (!detail::has_policy<L>) {
    static_assert(dependent_false<L>,
                  "bilevel: learner requirement 1 missing: add `using policy = "
                  "bilevel::policy::eigen<double>;` (or another tensor_policy) to the learner");
    return false;
  } else if constexpr (!detail::has_batch_type<L>) {
    static_assert(dependent_false<L>,
                  "bilevel: learner requirement 2 missing: add `using batch_type = ...;` "
                  "(bilevel::full_batch when the learner sees all its data at once)");
    return false;
  } else {
    static_assert(detail::has_num_parameters<L>,
                  "bilevel: learner requirement 3 missing: add `std::size_t num_parameters() const`");
    static_assert(detail::has_loss<L>,
                  "bilevel: learner requirement 4 missing: add `double loss(const vector& theta, "
                  "bilevel::input_list<policy> inputs, const batch_type& batch) const`");
    static_assert(detail::has_gradient<L>,
                  "bilevel: learner requirement 5 missing: add `double gradient(const vector& theta, "
                  "bilevel::input_list<policy> inputs, const batch_type& batch, vector& out) const` "
                  "that writes dL/dtheta and returns the loss");
    return learner<L>;
  }
}

/// As check_learner(), plus the input gradient a hypergradient needs to pass through it.
template <class L>
consteval bool check_input_differentiable_learner() {
  if constexpr (!check_learner<L>()) {
    return false;
  } else {
    static_assert(detail::has_input_gradient<L>,
                  "bilevel: this learner reads other levels, so a hypergradient must pass through "
                  "it: add `void input_gradient(const vector& theta, bilevel::input_list<policy> "
                  "inputs, const batch_type& batch, std::size_t slot, vector& out) const` that "
                  "writes dL/d(inputs[slot])");
    return input_differentiable_learner<L>;
  }
}

}  // namespace bilevel
