// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// Keeping a solver's replicas identical across ranks: one broadcast of every level's
/// parameters at the start, and a check that fails loudly when they have drifted apart.
///
/// With data_parallel learners every rank takes the same steps from the same all-reduced
/// numbers, so replicas stay equal to the bit. Two things break that silently: ranks that
/// started from different parameters (a seed taken from the rank, a file read on one rank
/// only) and code outside the library that changes one rank's parameters. The first is what
/// broadcast_parameters prevents; the second is what check_replicas finds.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "bilevel/distributed/communicator.hpp"

namespace bilevel::distributed {

/// Every level's parameters become rank root's.
template <communicator C, class Solver>
void broadcast_parameters(const C& comm, Solver& s, std::size_t root = 0) {
  using P = typename Solver::policy;
  [&]<std::size_t... I>(std::index_sequence<I...>) {
    (broadcast_vector<P>(comm, s.template level<I>().theta, root), ...);
  }(std::make_index_sequence<Solver::size()>{});
}

namespace detail {
/// FNV-1a over the bytes of the parameters as the host sees them.
template <tensor_policy P>
std::uint64_t fingerprint(const vector_t<P>& v) {
  const std::vector<scalar_t<P>> host = P::to_host(v);
  std::uint64_t h = 1469598103934665603ull;
  const auto* bytes = reinterpret_cast<const unsigned char*>(host.data());
  for (std::size_t i = 0; i < host.size() * sizeof(scalar_t<P>); ++i) {
    h ^= bytes[i];
    h *= 1099511628211ull;
  }
  return h;
}
}  // namespace detail

/// Compares every level's parameters across ranks (a 64-bit fingerprint each, all-reduced);
/// throws std::runtime_error on every rank, naming the level and the first rank that differs
/// from rank 0, when any differ. A collective: every rank must call it at the same point.
template <communicator C, class Solver>
void check_replicas(const C& comm, const Solver& s, std::size_t iteration) {
  using P = typename Solver::policy;
  constexpr std::size_t levels = Solver::size();
  if (comm.size() == 1) return;
  // Each fingerprint as two 32-bit halves, which a double holds exactly.
  std::vector<double> halves(levels * 2);
  [&]<std::size_t... I>(std::index_sequence<I...>) {
    ((void)[&] {
      const std::uint64_t f = detail::fingerprint<P>(s.template level<I>().theta);
      halves[I * 2] = double(f >> 32);
      halves[I * 2 + 1] = double(f & 0xffffffffu);
    }(), ...);
  }(std::make_index_sequence<levels>{});
  if (const auto d = first_difference_across_ranks(comm, std::span<const double>(halves)))
    throw std::runtime_error("bilevel::distributed::check_replicas: at iteration " + std::to_string(iteration) +
                             ", level " + std::to_string(d->index / 2) + "'s parameters on rank " +
                             std::to_string(d->rank) + " differ from rank 0's: the replicas have diverged");
}

}  // namespace bilevel::distributed
