// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// The communicator concept: what data parallelism needs from a transport, and the
/// single-process communicator, the default, which costs nothing.
///
/// A communicator connects `size()` processes (ranks), each knowing its own `rank()`. It
/// offers, on a host buffer of doubles or of floats:
///   - `all_reduce_sum(std::span<T>)`: every rank's buffer becomes the element-wise sum of all
///     ranks' buffers, **bit-identical on every rank and the same from run to run for a fixed
///     number of ranks** (an implementation sums in rank order; it must not use a reduction whose
///     order depends on timing or message sizes);
///   - `broadcast(std::span<T>, root)`: every rank's buffer becomes root's;
///   - `barrier()`;
///   - `all_reduced_bytes()`: the bytes this rank has handed to all_reduce_sum so far (a cost
///     counter for benchmarks: a CG solve of k iterations all-reduces k + 2 vectors of |θ|).
///
/// Policy vectors (on any back end) go through all_reduce / broadcast_vector below, which
/// move device vectors through the host; a communicator of a device library (NCCL) reduces
/// them where they lie instead.
///
/// Why the sum is deterministic and in rank order: data-parallel training promises the same
/// numbers as one process up to round-off, and the same numbers on every rank exactly. A
/// reduction whose association changes with timing would let replicas drift apart bit by bit,
/// and an optimizer would then step them to different parameters.
#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "bilevel/core/tensor_policy.hpp"

namespace bilevel::distributed {

namespace detail {
template <class C>
concept has_rank_and_size = requires(const C& c) {
  { c.rank() } -> std::convertible_to<std::size_t>;
  { c.size() } -> std::convertible_to<std::size_t>;
};
template <class C>
concept has_all_reduce = requires(const C& c, std::span<double> d, std::span<float> f) {
  c.all_reduce_sum(d);
  c.all_reduce_sum(f);
};
template <class C>
concept has_broadcast = requires(const C& c, std::span<double> d, std::span<float> f, std::size_t root) {
  c.broadcast(d, root);
  c.broadcast(f, root);
};
template <class C>
concept has_barrier_and_count = requires(const C& c) {
  c.barrier();
  { c.all_reduced_bytes() } -> std::convertible_to<std::uint64_t>;
};
}  // namespace detail

/// See the file comment.
template <class C>
concept communicator = detail::has_rank_and_size<C> && detail::has_all_reduce<C> && detail::has_broadcast<C> &&
                       detail::has_barrier_and_count<C>;

template <class> inline constexpr bool dependent_false = false;

namespace detail {
/// A policy whose vectors live in host memory, reducible in place: the device policy (CUDA)
/// marks itself by taking whole batches in its maps (whole_batch_maps).
template <class P>
concept vectors_on_host = tensor_policy<P> && !requires { requires P::whole_batch_maps; } &&
                          requires(vector_t<P>& v) { { v.data() } -> std::convertible_to<scalar_t<P>*>; };
}  // namespace detail

/// One static_assert per missing operation, each saying what to add (called where a
/// communicator enters the library, so a user's type gets a sentence, not a page of
/// substitution failures).
template <class C>
consteval bool check_communicator() {
  static_assert(detail::has_rank_and_size<C>,
                "bilevel: a communicator needs `std::size_t rank() const` and `std::size_t size() const`");
  static_assert(detail::has_all_reduce<C>,
                "bilevel: a communicator needs `void all_reduce_sum(std::span<double>) const` and the same for "
                "std::span<float>: the element-wise sum over ranks, in rank order, identical on every rank");
  static_assert(detail::has_broadcast<C>,
                "bilevel: a communicator needs `void broadcast(std::span<double>, std::size_t root) const` and "
                "the same for std::span<float>");
  static_assert(detail::has_barrier_and_count<C>,
                "bilevel: a communicator needs `void barrier() const` and `std::uint64_t all_reduced_bytes() const`");
  return communicator<C>;
}

/// One process: rank 0 of 1. Every operation leaves its buffer as it is; nothing is counted,
/// because nothing moves.
class single_process {
 public:
  [[nodiscard]] std::size_t rank() const { return 0; }
  [[nodiscard]] std::size_t size() const { return 1; }
  template <class T> void all_reduce_sum(std::span<T>) const {}
  template <class T> void broadcast(std::span<T>, std::size_t) const {}
  void barrier() const {}
  [[nodiscard]] std::uint64_t all_reduced_bytes() const { return 0; }
};

/// v ← Σ_ranks v, for a vector of any back end (through the host unless the communicator
/// reduces the policy's vectors itself).
template <tensor_policy P, communicator C>
void all_reduce(const C& comm, vector_t<P>& v) {
  if (comm.size() == 1) return;
  if constexpr (requires { comm.template all_reduce_vector<P>(v); }) {
    comm.template all_reduce_vector<P>(v);
  } else if constexpr (detail::vectors_on_host<P>) {
    comm.all_reduce_sum(std::span<scalar_t<P>>(v.data(), P::size(v)));
  } else {
    std::vector<scalar_t<P>> host = P::to_host(v);
    comm.all_reduce_sum(std::span<scalar_t<P>>(host));
    v = P::from_host(host);
  }
}

/// v ← root's v.
template <tensor_policy P, communicator C>
void broadcast_vector(const C& comm, vector_t<P>& v, std::size_t root = 0) {
  if (comm.size() == 1) return;
  std::vector<scalar_t<P>> host = P::to_host(v);
  comm.broadcast(std::span<scalar_t<P>>(host), root);
  v = P::from_host(host);
}

/// Σ_ranks x for one number.
template <communicator C>
double all_reduce_scalar(const C& comm, double x) {
  comm.all_reduce_sum(std::span<double>(&x, 1));
  return x;
}

/// Where one rank's `values` differ from rank 0's: that rank (the lowest), the first entry that
/// differs, and both values.
struct rank_difference {
  std::size_t rank = 0, index = 0;
  double value = 0, rank0_value = 0;
};

/// The first difference between the ranks' `values` (of one length on every rank), or none; the
/// same answer on every rank. A collective: every rank must call it at the same point.
template <communicator C>
std::optional<rank_difference> first_difference_across_ranks(const C& comm, std::span<const double> values) {
  const std::size_t ranks = comm.size(), n = values.size();
  if (ranks == 1 || n == 0) return std::nullopt;
  // Each rank writes its row; the sum of rows that are zero but one is that row, exactly.
  std::vector<double> table(ranks * n, 0.0);
  std::copy(values.begin(), values.end(), table.begin() + std::ptrdiff_t(comm.rank() * n));
  comm.all_reduce_sum(std::span<double>(table));
  for (std::size_t r = 1; r < ranks; ++r)
    for (std::size_t i = 0; i < n; ++i)
      if (table[r * n + i] != table[i])
        return rank_difference{.rank = r, .index = i, .value = table[r * n + i], .rank0_value = table[i]};
  return std::nullopt;
}

/// Throws std::invalid_argument on every rank when the ranks' `values` differ, naming the first
/// entry that does (by `labels[i]`), the rank and both values: a check that every rank built
/// the same thing, made once at start-up (a collective: every rank must call it).
template <communicator C>
void require_same_on_every_rank(const C& comm, const std::vector<double>& values, const std::vector<std::string>& labels,
                                const std::string& who) {
  const auto d = first_difference_across_ranks(comm, std::span<const double>(values));
  if (!d) return;
  auto text = [](double x) {
    return x == std::floor(x) && std::abs(x) < 1e15 ? std::to_string(static_cast<long long>(x)) : std::to_string(x);
  };
  throw std::invalid_argument(who + ": rank " + std::to_string(d->rank) + "'s " +
                              (d->index < labels.size() ? labels[d->index] : "value") + " is " + text(d->value) +
                              ", rank 0's " + text(d->rank0_value) + ": every rank must build the same levels");
}

}  // namespace bilevel::distributed
