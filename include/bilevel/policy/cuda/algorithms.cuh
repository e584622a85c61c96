// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// How the CUDA policy launches its element-wise passes and its reductions:
///   for_each_index(n, op, what):   op(i) for every i < n, one grid-stride kernel
///                                  (cuda/kernels.cuh says why it is the library's own);
///   reduce_into(n, term, out, what): Σ term(i) in double by cub::DeviceReduce (the CUDA
///                                  toolkit's CUB, with Thrust's iterators), the sum handed to
///                                  an output functor on the device: stored, added to a vector
///                                  entry, or turned into a flag, with no kernel after it.
/// DeviceReduce is run-to-run deterministic for floating-point sums on one GPU (its tiles and
/// their order depend only on n and the device), the guarantee the library's own two-stage
/// reduction gave; it reduces a vector that fits one tile in one kernel, where that took
/// three for add_dot_into (partials, final, add).
///
/// Everything is queued on the current stream and returns without waiting; the reduction's
/// temporary storage is stream-ordered (cuda_detail::allocate). The activity counters count
/// each call as one kernel, although a reduction over more than one tile launches two.
#include <cuda_runtime.h>

#include <cub/device/device_reduce.cuh>
#include <cuda/std/functional>
#include <thrust/iterator/counting_iterator.h>
#include <thrust/iterator/tabulate_output_iterator.h>
#include <thrust/iterator/transform_iterator.h>

#include <cstddef>

#include "bilevel/policy/cuda/context.cuh"
#include "bilevel/policy/cuda/error.cuh"
#include "bilevel/policy/cuda/kernels.cuh"

namespace bilevel::policy::cuda_detail {

/// op(i) for i < n, on the current stream (n = 0: nothing).
template <class Op>
void for_each_index(std::size_t n, Op op, const char* what) {
  if (n == 0) return;
  for_each_index_kernel<<<blocks_for(n), threads_per_block, 0, stream()>>>(n, op);
  check_launch(what);
}

/// out(0, Σ_{i<n} term(i)) on the device, the sum in double (n > 0).
template <class S>
void reduce_into(std::size_t n, reduction_term<S> term, reduction_output<S> out, const char* what) {
  const auto in = thrust::make_transform_iterator(thrust::counting_iterator<std::size_t>(0), term);
  const auto to = thrust::make_tabulate_output_iterator(out);
  auto run = [&](void* temp, std::size_t& bytes) {
    return cub::DeviceReduce::Reduce(temp, bytes, in, to, n, ::cuda::std::plus<double>{}, 0.0, stream());
  };
  std::size_t bytes = 0;
  check(run(nullptr, bytes), what);
  void* temp = allocate(bytes > 0 ? bytes : 1);  // CUB takes a null pointer for a size query
  const cudaError_t e = run(temp, bytes);
  release(temp);
  check(e, what);
  activity().kernels.fetch_add(1, std::memory_order_relaxed);
}

}  // namespace bilevel::policy::cuda_detail
