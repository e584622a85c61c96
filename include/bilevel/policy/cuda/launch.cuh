// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// The one launcher of the CUDA policy's element-wise passes: op(i) for every i < n, one
/// grid-stride kernel on the current stream (cuda/kernels.cuh has the index functors and says
/// why this is not cub::DeviceFor). Returns as soon as the kernel is queued; counted in
/// activity().kernels.
#include <cstddef>

#include "bilevel/policy/cuda/context.cuh"
#include "bilevel/policy/cuda/error.cuh"
#include "bilevel/policy/cuda/kernels.cuh"

namespace bilevel::policy::cuda_detail {

/// op(i) for i < n (n = 0: nothing); `what` names the operation in a launch error.
template <class Op>
void for_each_index(std::size_t n, Op op, const char* what) {
  if (n == 0) return;
  for_each_index_kernel<<<blocks_for(n), threads_per_block, 0, stream()>>>(n, op);
  check_launch(what);
}

}  // namespace bilevel::policy::cuda_detail
