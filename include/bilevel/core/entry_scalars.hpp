// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// Scalars kept in one-entry vectors on the policy's storage, for device-resident policies
/// (core/tensor_policy.hpp): a sum or a squared norm reduced where the data are, mapped by a
/// device-callable functor (core/elementwise.hpp), and applied to a vector as a factor, with
/// no host read between. Built from the layer primitives (reshape, row_sums, add_dot_into,
/// axpy_entry, flatten_into), so every nn_tensor_policy has them; a dot into an entry is one
/// add_scaled_dot_into on policies that have it.
#include <cstddef>

#include "bilevel/core/tensor_policy.hpp"

namespace bilevel::detail {

/// [Σ_i x_i] as a one-entry vector.
template <nn_tensor_policy P>
vector_t<P> sum_entry(const vector_t<P>& x) {
  typename P::matrix row;
  P::reshape(x, 1, P::size(x), row);
  vector_t<P> s;
  P::row_sums(row, s);
  return s;
}

/// out_i += s·⟨x, y⟩, reduced where the data are: one add_scaled_dot_into where the policy has
/// it (vector_dot_into), else add_dot_into on the vectors as rows (x scaled first when s ≠ 1).
template <nn_tensor_policy P>
void add_dot_into_entry(const vector_t<P>& x, const vector_t<P>& y, vector_t<P>& out, std::size_t i,
                        scalar_t<P> s = scalar_t<P>(1)) {
  if constexpr (vector_dot_into<P>) {
    P::add_scaled_dot_into(x, y, s, out, i);
  } else {
    typename P::matrix xr, yr;
    P::reshape(x, 1, P::size(x), xr);
    P::reshape(y, 1, P::size(y), yr);
    if (s != scalar_t<P>(1)) P::scale(xr, s);
    P::add_dot_into(xr, yr, out, i);
  }
}

/// [Σ_i x_i²] as a one-entry vector.
template <nn_tensor_policy P>
vector_t<P> squared_norm_entry(const vector_t<P>& x) {
  vector_t<P> s = P::zeros(1);
  add_dot_into_entry<P>(x, x, s, 0);
  return s;
}

/// y += c₀ · x, c a one-entry vector.
template <nn_tensor_policy P>
void axpy_by_entry(const vector_t<P>& c, const vector_t<P>& x, vector_t<P>& y) {
  const std::size_t n = P::size(x);
  typename P::matrix xr, yr;
  P::reshape(x, 1, n, xr);
  P::reshape(y, 1, n, yr);
  P::axpy_entry(scalar_t<P>(1), c, 0, xr, yr);
  P::flatten_into(yr, y, 0);
}

/// x *= c₀, c a one-entry vector.
template <nn_tensor_policy P>
void scale_by_entry(vector_t<P>& x, const vector_t<P>& c) {
  const std::size_t n = P::size(x);
  typename P::matrix xr, zero = P::matrix_zeros(1, n);
  P::reshape(x, 1, n, xr);
  P::axpy_entry(scalar_t<P>(1), c, 0, xr, zero);
  P::flatten_into(zero, x, 0);
}

}  // namespace bilevel::detail
