// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// The one place where the layers above the policy see that a back end queues its work on a
/// stream: an optional pair of policy types.
///
///   P::stream        an owning handle to a stream of P's device; default-constructible (a new
///                    stream, made at first use), copies make a new stream of their own;
///   P::stream_scope  RAII, constructed from a P::stream&: while it lives, the calling thread's
///                    operations of P are queued on that stream, after everything the thread
///                    queued before it, and before everything it queues after it.
///
/// The solver owns one P::stream and enters it in each of its calls, so every solver's work
/// is ordered on a stream of its own (the CUDA policy's cuda_stream and cuda_stream_scope).
/// Policies that compute as they are called (Eigen, xtensor) declare neither and get the
/// empty stand-ins below, which cost nothing.
#include <type_traits>

namespace bilevel {

namespace detail {
struct no_stream {};
struct no_stream_scope {
  explicit no_stream_scope(no_stream&) noexcept {}
};
}  // namespace detail

template <class P>
struct policy_stream_traits {
  using stream = detail::no_stream;
  using scope = detail::no_stream_scope;
};
template <class P>
  requires requires { typename P::stream; typename P::stream_scope; }
struct policy_stream_traits<P> {
  static_assert(std::is_default_constructible_v<typename P::stream> && std::is_copy_constructible_v<typename P::stream>,
                "a policy's `stream` must be default-constructible (a new stream) and copyable (a new stream too)");
  static_assert(std::is_constructible_v<typename P::stream_scope, typename P::stream&>,
                "a policy's `stream_scope` must be constructible from a `stream&`");
  using stream = typename P::stream;
  using scope = typename P::stream_scope;
};

/// The stream type a solver on P owns (detail::no_stream where P has none).
template <class P>
using policy_stream_t = typename policy_stream_traits<P>::stream;
/// Enters a P::stream for a scope (a no-op where P has none).
template <class P>
using policy_stream_scope_t = typename policy_stream_traits<P>::scope;

}  // namespace bilevel
