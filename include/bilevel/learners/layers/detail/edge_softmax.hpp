// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// The softmax weights of a mixed operation's edge, m = softmax(α_e), and the product of
/// their Jacobian with a vector, kept on the policy's device (no host read of α or m).
#include <cstddef>
#include <stdexcept>
#include <string>

#include "bilevel/learners/layers/layer.hpp"

namespace bilevel::learners::detail {

/// m = softmax(alpha[offset, offset + k)).
template <nn_tensor_policy P>
void edge_softmax(const vector_t<P>& alpha, std::size_t offset, std::size_t k, vector_t<P>& m, const char* who) {
  if (P::size(alpha) < offset + k)
    throw std::invalid_argument(std::string(who) + ": the architecture input has " + std::to_string(P::size(alpha)) +
                                " entries, this edge needs [" + std::to_string(offset) + ", " +
                                std::to_string(offset + k) + ")");
  vector_t<P> seg;
  P::segment(alpha, offset, k, seg);
  typename P::matrix row, p;
  P::reshape(seg, 1, k, row);
  P::row_softmax(row, p);
  m = P::zeros(k);
  P::flatten_into(p, m, 0);
}

/// Jᵀ a = m ⊙ a − m ⟨m, a⟩ (the softmax Jacobian is symmetric); ⟨m, a⟩ as a 1 × 1 product, so
/// that it stays on the policy's device.
template <nn_tensor_policy P>
vector_t<P> edge_softmax_vjp(const vector_t<P>& m, const vector_t<P>& a) {
  using matrix = typename P::matrix;
  using scalar = scalar_t<P>;
  const std::size_t k = P::size(m);
  matrix mc, ac, ma = P::matrix_zeros(1, 1), r = P::matrix_zeros(k, 1);
  P::reshape(m, k, 1, mc);
  P::reshape(a, k, 1, ac);
  P::gemm(scalar(1), mc, true, ac, false, scalar(0), ma);
  P::gemm(scalar(-1), mc, false, ma, false, scalar(0), r);
  matrix ms;
  P::hadamard(mc, ac, ms);
  P::axpy(scalar(1), ms, r);
  vector_t<P> out = P::zeros(k);
  P::flatten_into(r, out, 0);
  return out;
}

}  // namespace bilevel::learners::detail
