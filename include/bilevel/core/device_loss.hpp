// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// Losses that stay where the policy keeps its data.
///
/// A learner's `loss` and `gradient` return the loss as a host double. On a device policy that
/// is a host wait in every call, and a solver step makes several (the virtual step's gradient,
/// the outer loss, the real step's gradient), although most callers throw the value away and
/// the solver needs it only for its reports. So a learner may also offer, beside requirements
/// 4 and 5 of core/learner.hpp:
///
///     void loss(θ, inputs, batch, loss_slot<P> slot) const;
///     void gradient(θ, inputs, batch, out, loss_slot<P> slot) const;
///
/// which *add* the loss into `slot.values[slot.index]` on the policy's storage (the caller
/// zeroes the entry), or compute no loss at all when `slot` is empty. loss_into() and
/// gradient_into() call them where a learner has them and fall back to the host-valued
/// members otherwise (then a device policy still waits for that learner's loss; nothing else
/// changes). The networks (learners::sequential), solution_loss, summed_loss, reading_segment,
/// architecture_loss and shared_network have them.
#include <cstddef>
#include <vector>

#include "bilevel/core/learner.hpp"

namespace bilevel {

/// Entry `index` of `values`, where a loss is to be added; empty (`values` null): no loss wanted.
template <tensor_policy P>
struct loss_slot {
  vector_t<P>* values = nullptr;
  std::size_t index = 0;
  [[nodiscard]] bool wanted() const { return values != nullptr; }
};

namespace detail {
template <class L>
concept has_loss_into = learner<L> && requires(const L& l, const vector_t<typename L::policy>& theta,
                                               input_list<typename L::policy> in, const typename L::batch_type& b,
                                               loss_slot<typename L::policy> s) { l.loss(theta, in, b, s); };
template <class L>
concept has_gradient_into =
    learner<L> && requires(const L& l, const vector_t<typename L::policy>& theta, input_list<typename L::policy> in,
                           const typename L::batch_type& b, vector_t<typename L::policy>& out,
                           loss_slot<typename L::policy> s) { l.gradient(theta, in, b, out, s); };

/// slot.values[slot.index] += value, a host value: an upload and a device add on a policy with
/// segment primitives, a round trip through the host otherwise.
template <tensor_policy P>
void add_host_value(double value, loss_slot<P> slot) {
  if (!slot.wanted()) return;
  using S = scalar_t<P>;
  if constexpr (requires(vector_t<P>& v, const vector_t<P>& cv, std::size_t i) {
                  P::segment(cv, i, i, v);
                  P::set_segment(cv, v, i);
                }) {
    const std::vector<S> one{S(value)};
    vector_t<P> entry;
    P::segment(*slot.values, slot.index, 1, entry);
    P::axpy(S(1), P::from_host(one), entry);
    P::set_segment(entry, *slot.values, slot.index);
  } else {
    auto host = P::to_host(*slot.values);
    host.at(slot.index) += S(value);
    *slot.values = P::from_host(host);
  }
}
}  // namespace detail

/// Adds the learner's loss at (θ, inputs, batch) into `slot` (see the file comment).
template <learner L>
void loss_into(const L& l, const vector_t<typename L::policy>& theta, input_list<typename L::policy> in,
               const typename L::batch_type& b, loss_slot<typename L::policy> slot) {
  if constexpr (detail::has_loss_into<L>) l.loss(theta, in, b, slot);
  else if (slot.wanted()) detail::add_host_value(l.loss(theta, in, b), slot);
}

/// Writes ∂L/∂θ to `out` and adds the loss into `slot`; with an empty slot, the gradient
/// alone (a learner with the slot member then computes no loss).
template <learner L>
void gradient_into(const L& l, const vector_t<typename L::policy>& theta, input_list<typename L::policy> in,
                   const typename L::batch_type& b, vector_t<typename L::policy>& out,
                   loss_slot<typename L::policy> slot = {}) {
  if constexpr (detail::has_gradient_into<L>) {
    l.gradient(theta, in, b, out, slot);
  } else {
    const double value = l.gradient(theta, in, b, out);
    detail::add_host_value(value, slot);
  }
}

}  // namespace bilevel
