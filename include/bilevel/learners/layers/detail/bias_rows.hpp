// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// A layer's bias, kept in the flat parameter vector: added to every row of an output, and
/// its gradient (the adjoint's column sums) written back, in place where the policy has the
/// segment primitives (core/tensor_policy.hpp, fused_segment_ops) and through a copy of the
/// segment otherwise; the bias added together with the map that follows it, and its gradient
/// summed from the adjoint of that map as the adjoint is computed. Shared by the affine maps,
/// the convolutions, the activations and the weighting heads.
#include <cstddef>

#include "bilevel/core/tensor_policy.hpp"

namespace bilevel::learners::detail {

/// y_ij += params[offset + j].
template <nn_tensor_policy P>
void add_bias_row(const typename P::vector& params, std::size_t offset, typename P::matrix& y) {
  if constexpr (fused_segment_ops<P>) {
    P::add_segment_row(y, params, offset);
  } else {
    typename P::vector b;
    P::segment(params, offset, P::cols(y), b);
    P::add_row(y, b);
  }
}

/// y_ij += params[offset + j], then out = f(y), or f(y, x) for x of y's shape: a bias and the
/// map after it (an activation, its tangent), in one pass where the policy has
/// add_segment_row_map (core/tensor_policy.hpp, fused_bias_maps) and as the bias row and a
/// transform otherwise, the same arithmetic either way. y keeps the biased values.
template <nn_tensor_policy P, class F, class... X>
  requires(sizeof...(X) <= 1)
void add_bias_row_then_map(const typename P::vector& params, std::size_t offset, typename P::matrix& y,
                           typename P::matrix& out, F f, const X&... x) {
  if constexpr (fused_bias_maps<P>) {
    P::add_segment_row_map(y, params, offset, out, f, x...);
  } else {
    add_bias_row<P>(params, offset, y);
    P::transform(y, x..., out, f);
  }
}

/// grad[offset + j] = Σ_i g_ij.
template <nn_tensor_policy P>
void bias_gradient_into(const typename P::matrix& g, std::size_t offset, typename P::vector& grad) {
  if constexpr (fused_segment_ops<P>) {
    P::column_sums_into_segment(g, grad, offset);
  } else {
    typename P::vector db;
    P::column_sums(g, db);
    P::set_segment(db, grad, offset);
  }
}

/// out = f(x...) (one or two matrices of one shape), then grad[offset + j] = Σ_i out_ij: an
/// activation's adjoint and the bias gradient of the layer before it, in one pass where the
/// policy has map_column_sums_into_segment (core/tensor_policy.hpp, fused_bias_gradients)
/// and as a transform and the column sums otherwise.
template <nn_tensor_policy P, class F, class... X>
  requires(sizeof...(X) >= 1 && sizeof...(X) <= 2)
void map_then_bias_gradient_into(typename P::matrix& out, typename P::vector& grad, std::size_t offset, F f,
                                 const X&... x) {
  if constexpr (fused_bias_gradients<P>) {
    P::map_column_sums_into_segment(out, grad, offset, f, x...);
  } else {
    P::transform(x..., out, f);
    bias_gradient_into<P>(out, offset, grad);
  }
}

}  // namespace bilevel::learners::detail
