// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// Per-channel column sums and combinations of activation matrices, as layers use them (batch
/// normalization): one fused pass each on a policy with the fused column primitives
/// (core/tensor_policy.hpp, fused_column_maps: the Eigen and xtensor policies), composed from
/// the policy's element-wise products, scalings and column sums otherwise. The special cases
/// (a sum of products alone, a shift, a scaling) compose with no more primitives than they
/// need there, where each is a kernel launch.
#include <cstddef>
#include <initializer_list>
#include <vector>

#include "bilevel/core/tensor_policy.hpp"

namespace bilevel::learners {

/// A matrix times per-column factors: one term of combine_columns.
template <nn_tensor_policy P>
struct column_term {
  const typename P::matrix& m;
  const vector_t<P>& u;
};

/// sa_j = Σ_i a_ij, sab_j = Σ_i a_ij b_ij.
template <nn_tensor_policy P>
void column_sums_pair(const typename P::matrix& a, const typename P::matrix& b, vector_t<P>& sa, vector_t<P>& sab) {
  if constexpr (fused_column_maps<P>) {
    P::column_sums_pair(a, b, sa, sab);
  } else {
    P::column_sums(a, sa);
    typename P::matrix ab;
    P::hadamard(a, b, ab);
    P::column_sums(ab, sab);
  }
}

/// out = Σ_t m_t ⊙ u_t (each u_t a factor per column) + z (per column). out may be the first
/// term's matrix, no other's.
template <nn_tensor_policy P>
void combine_columns(std::initializer_list<column_term<P>> terms, const vector_t<P>& z, typename P::matrix& out) {
  using matrix = typename P::matrix;
  if constexpr (fused_column_maps<P>) {
    std::vector<const matrix*> m;
    std::vector<const vector_t<P>*> u;
    for (const auto& t : terms) {
      m.push_back(&t.m);
      u.push_back(&t.u);
    }
    P::combine_columns(std::span<const matrix* const>(m), std::span<const vector_t<P>* const>(u), z, out);
  } else {
    auto it = terms.begin();
    matrix acc = it->m;
    P::scale_columns(acc, it->u);
    for (++it; it != terms.end(); ++it) {
      matrix e = it->m;
      P::scale_columns(e, it->u);
      P::axpy(scalar_t<P>(1), e, acc);
    }
    P::add_row(acc, z);
    out = std::move(acc);
  }
}

/// sab_j = Σ_i a_ij b_ij (column_sums_pair's second sum, without the first on other policies).
template <nn_tensor_policy P>
void column_sums_of_product(const typename P::matrix& a, const typename P::matrix& b, vector_t<P>& sab) {
  if constexpr (fused_column_maps<P>) {
    vector_t<P> unused;
    P::column_sums_pair(a, b, unused, sab);
  } else {
    typename P::matrix ab;
    P::hadamard(a, b, ab);
    P::column_sums(ab, sab);
  }
}

/// out = x + z (z per column); out may be x.
template <nn_tensor_policy P>
void shift_columns(const typename P::matrix& x, const vector_t<P>& z, typename P::matrix& out) {
  if constexpr (fused_column_maps<P>) {
    vector_t<P> ones = P::zeros(P::size(z));
    P::fill(ones, scalar_t<P>(1));
    combine_columns<P>({{x, ones}}, z, out);
  } else {
    if (&out != &x) out = x;
    P::add_row(out, z);
  }
}

/// out = x ⊙ u (u per column); out may be x.
template <nn_tensor_policy P>
void scale_columns_of(const typename P::matrix& x, const vector_t<P>& u, typename P::matrix& out) {
  if constexpr (fused_column_maps<P>) {
    combine_columns<P>({{x, u}}, P::zeros(P::size(u)), out);
  } else {
    if (&out != &x) out = x;
    P::scale_columns(out, u);
  }
}

}  // namespace bilevel::learners
