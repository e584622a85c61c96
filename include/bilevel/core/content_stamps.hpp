// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// Content stamps: how a cache tells "the same values as last time" without reading them.
///
/// The networks keep their last value, backward and tangent passes and reuse them when called
/// again at the same parameters, batch and weights; a CG solve's repeated HVPs depend on it.
/// Deciding "the same" by comparing values (`P::equal`) is free on a host policy and a host
/// wait on a device one, several per call. So a policy may give its arrays a stamp,
///
///     std::uint64_t P::content_stamp(const vector&),  P::content_stamp(const matrix&)
///
/// with one promise: two arrays with the same stamp hold the same values (a copy, and the
/// policy's `copy`, keep the source's stamp; anything that may write an array gives it a new
/// one). Different stamps
/// promise nothing: a cache then recomputes, which costs time, never correctness. The CUDA
/// policy stamps its arrays; the host policies compare values.
#include <concepts>
#include <cstdint>

#include "bilevel/core/tensor_policy.hpp"

namespace bilevel {

template <class P>
concept content_stamps = tensor_policy<P> && requires(const typename P::vector& v, const typename P::matrix& m) {
  { P::content_stamp(v) } -> std::same_as<std::uint64_t>;
  { P::content_stamp(m) } -> std::same_as<std::uint64_t>;
};

/// x's stamp on a policy that has them; 0 (unused) otherwise.
template <tensor_policy P, class T>
std::uint64_t stamp_of(const T& x) {
  if constexpr (content_stamps<P>) return P::content_stamp(x);
  else return 0;
}

/// Whether x holds the values of `cached`, a copy taken when x's stamp was `cached_stamp`:
/// by stamp where the policy has them (no read of the values), by value otherwise.
template <tensor_policy P, class T>
bool unchanged(const T& cached, std::uint64_t cached_stamp, const T& x) {
  if constexpr (content_stamps<P>) return P::content_stamp(x) == cached_stamp;
  else return P::equal(cached, x);
}

}  // namespace bilevel
