// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// The CUDA policy's own kernels. The toolkit's CUB would do some of this work (its
/// DeviceFor the element-wise passes, its DeviceReduce the sums); each part says why it is
/// kept here:
///   - element-wise passes (maps, fills, bias rows, scalings, gathers, zip_apply) are index
///     functors run by one grid-stride kernel (for_each_index, cuda/launch.cuh):
///     cub::DeviceFor would launch the same one-index-per-thread loop, and its dispatch layer
///     costs compile time per functor type (measured with nvcc 13.0 at sm_80 + sm_90 on a
///     2-core VM: 4 s of headers per translation unit and 0.13 s per functor; this policy
///     instantiates some 40 per unit, and the build has 11 such units);
///   - reductions to one double (below): one launch, the last block adding the partials in a
///     fixed order (deterministic, as cub::DeviceReduce is) and handing the total to its use
///     (a vector entry, a slot read back) in the same kernel, where DeviceReduce takes one or
///     two launches and the use another; its compile cost (above, and 0.65 s per
///     instantiation) put the test script over its 25-minute budget on 2 cores;
///   - a map summed by columns as it is written (an activation's adjoint and the bias
///     gradient of the layer before it): one pass where a map and cuBLAS's column sums take
///     two, in a fixed order (below);
///   - warp-per-row kernels (softmax, log-sum-exp, max, dots, sums, the fused cross-entropy
///     head and its tangent): one kernel computes every statistic a row needs and uses it in
///     the same pass, where CUB's segmented reductions would take a pass and a temporary per
///     statistic;
///   - scatter-add and max pooling's adjoint: a gather over the inverse index (one thread per
///     destination, sources in ascending order) instead of atomics, so the order of additions
///     is fixed (deterministic, and the Eigen policy's order); CUB has no such primitive;
///   - max pooling's window maximum, whose first-maximum tie rule matches the host loop.
///
/// bench/gpu/primitives_gpu.cu times these against CUB and Thrust on the same work, so that a
/// GPU decides where a library call would be faster.
///
/// Every kernel is a template (so that this header can be included by many translation
/// units of one program) and loops grid-stride, so any size runs with a bounded grid.
#include <cuda_runtime.h>

#include <cuda/std/cmath>
#include <cuda/std/limits>
#include <cuda/std/tuple>

#include <algorithm>
#include <cstddef>
#include <cstdint>

namespace bilevel::policy::cuda_detail {

inline constexpr unsigned threads_per_block = 256;
inline constexpr unsigned warps_per_block = threads_per_block / 32;

/// Blocks for a grid-stride loop over n elements (at least 1, at most 65535).
inline unsigned blocks_for(std::size_t n) {
  return unsigned(std::clamp<std::size_t>((n + threads_per_block - 1) / threads_per_block, 1, 65535));
}
/// Blocks for a warp-per-row loop over `rows` rows.
inline unsigned row_blocks_for(std::size_t rows) {
  return unsigned(std::clamp<std::size_t>((rows + warps_per_block - 1) / warps_per_block, 1, 65535));
}

__device__ inline std::size_t global_thread() { return std::size_t(blockIdx.x) * blockDim.x + threadIdx.x; }
__device__ inline std::size_t grid_threads() { return std::size_t(gridDim.x) * blockDim.x; }

// ---- element-wise index functors (run by for_each_index, cuda/launch.cuh) ----

/// op(i) for i < n: the one kernel behind every element-wise pass.
template <class Op>
__global__ void for_each_index_kernel(std::size_t n, Op op) {
  for (std::size_t i = global_thread(); i < n; i += grid_threads()) op(i);
}

template <class S>
struct fill_op {
  S* out;
  S value;
  __device__ void operator()(std::size_t i) const { out[i] = value; }
};
/// out_i = f(x_i); out may be x.
template <class S, class F>
struct map_op {
  const S* x;
  S* out;
  F f;
  __device__ void operator()(std::size_t i) const { out[i] = S(f(x[i])); }
};
/// out_i = f(x_i, y_i); out may be x or y.
template <class S, class F>
struct map2_op {
  const S* x;
  const S* y;
  S* out;
  F f;
  __device__ void operator()(std::size_t i) const { out[i] = S(f(x[i], y[i])); }
};
/// m_ij += b_j for a row-major m with `cols` columns.
template <class S>
struct add_row_op {
  std::size_t cols;
  S* m;
  const S* b;
  __device__ void operator()(std::size_t i) const { m[i] += b[i % cols]; }
};
/// m_ij *= c_i.
template <class S>
struct scale_rows_op {
  std::size_t cols;
  S* m;
  const S* c;
  __device__ void operator()(std::size_t i) const { m[i] *= c[i / cols]; }
};
/// m_ij *= c_j.
template <class S>
struct scale_columns_op {
  std::size_t cols;
  S* m;
  const S* c;
  __device__ void operator()(std::size_t i) const { m[i] *= c[i % cols]; }
};
/// out_ij = src_ij·(c_i·factor); out may be src.
template <class S>
struct scale_rows_into_op {
  std::size_t cols;
  const S* src;
  const S* c;
  S factor;
  S* out;
  __device__ void operator()(std::size_t i) const { out[i] = src[i] * (c[i / cols] * factor); }
};
/// y_i += s·(*c)·x_i: an AXPY whose factor is a device scalar.
template <class S>
struct axpy_entry_op {
  S s;
  const S* c;
  const S* x;
  S* y;
  __device__ void operator()(std::size_t i) const { y[i] += (s * *c) * x[i]; }
};
/// y_i = s·(*c)·x_i: a scaled copy whose factor is a device scalar; y may be x.
template <class S>
struct scale_entry_op {
  S s;
  const S* c;
  const S* x;
  S* y;
  __device__ void operator()(std::size_t i) const { y[i] = (s * *c) * x[i]; }
};
/// m_i += b[i % cols], then out_i = f(m_i, x_0[i], ...): a bias row and the map after it.
template <class S, class F, class... In>
struct bias_map_op {
  std::size_t cols;
  S* m;
  const S* b;
  S* out;
  F f;
  ::cuda::std::tuple<In...> x;
  __device__ void operator()(std::size_t i) const {
    const S biased = m[i] + b[i % cols];
    m[i] = biased;
    ::cuda::std::apply([&](auto... q) { out[i] = f(biased, q[i]...); }, x);
  }
};
/// f(p_0[i], p_1[i], ...); a `S*` operand reaches f as a reference it may write.
template <class F, class... Ptr>
struct zip_op {
  F f;
  ::cuda::std::tuple<Ptr...> p;
  __device__ void operator()(std::size_t i) const {
    ::cuda::std::apply([&](auto... q) { f(q[i]...); }, p);
  }
};
/// out_i = index_i >= 0 ? src[index_i] : 0.
template <class S>
struct gather_op {
  const std::int64_t* index;
  const S* src;
  S* out;
  __device__ void operator()(std::size_t i) const {
    const std::int64_t k = index[i];
    out[i] = k >= 0 ? src[k] : S(0);
  }
};
/// The per-sample gather: out block b (n elements) = src block b (`block` elements) read
/// through one sample's index (−1: 0).
template <class S>
struct gather_per_sample_op {
  std::size_t n, block;
  const std::int64_t* index;
  const S* src;
  S* out;
  __device__ void operator()(std::size_t i) const {
    const std::size_t b = i / n;
    const std::int64_t k = index[i - b * n];
    out[i] = k >= 0 ? src[b * block + std::size_t(k)] : S(0);
  }
};
/// onehot_ij = 1 where j = arg_i, else 0.
template <class S>
struct onehot_op {
  std::size_t cols;
  const std::int64_t* arg;
  S* onehot;
  __device__ void operator()(std::size_t i) const {
    const std::size_t r = i / cols;
    onehot[i] = std::int64_t(i - r * cols) == arg[r] ? S(1) : S(0);
  }
};

// ---- reductions to one double ----
// A grid fixed by n and a fixed order of combination: the same input gives the same bits on
// the same GPU, run after run (why not cub::DeviceReduce: the file comment).

/// Sum over a block of one double per thread; the result is valid in thread 0.
__device__ inline double block_sum(double v) {
  __shared__ double warp_sums[32];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  const unsigned lane = threadIdx.x & 31u, warp = threadIdx.x >> 5;
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  v = threadIdx.x < (blockDim.x + 31) / 32 ? warp_sums[lane] : 0.0;
  if (warp == 0)
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  return v;
}

/// Σ_i double(x_i).
template <class S>
struct sum_term {
  const S* x;
  __device__ double operator()(std::size_t i) const { return double(x[i]); }
};
/// Σ_i double(x_i)·double(y_i): for float each product is exact in double.
template <class S>
struct dot_term {
  const S* x;
  const S* y;
  __device__ double operator()(std::size_t i) const { return double(x[i]) * double(y[i]); }
};

/// Σ term(i) for i < n in double, in one launch, handed to finish(total) in one thread: each
/// block sums its grid-stride share into partials[block], and the last block to finish (a
/// ticket counter, which atomicInc's wrap-around leaves at 0 for the next reduction) adds the
/// partials in index order. The order of every addition is fixed by n (the grid), not by which
/// block ends last, so the same input gives the same bits, run after run; a separate final
/// kernel and a kernel adding the result to a vector entry would be two more launches.
template <class Term, class Finish>
__global__ void reduce_kernel(std::size_t n, Term term, double* partials, unsigned* ticket, Finish finish) {
  double acc = 0.0;
  for (std::size_t i = global_thread(); i < n; i += grid_threads()) acc += term(i);
  acc = block_sum(acc);
  if (gridDim.x == 1) {
    if (threadIdx.x == 0) finish(acc);
    return;
  }
  __shared__ bool last;
  if (threadIdx.x == 0) {
    partials[blockIdx.x] = acc;
    __threadfence();  // release: the partial is visible to every block before this block's ticket
    last = atomicInc(ticket, gridDim.x - 1) == gridDim.x - 1;
    if (last) __threadfence();  // acquire: the other blocks' partials, before the barrier passes them on
  }
  __syncthreads();  // also separates block_sum's two uses of its shared memory
  if (!last) return;
  acc = 0.0;
  for (unsigned i = threadIdx.x; i < gridDim.x; i += blockDim.x) acc += __ldcg(partials + i);
  acc = block_sum(acc);
  if (threadIdx.x == 0) finish(acc);
}
/// finish for a total read back: *out = total.
struct store_total {
  double* out;
  __device__ void operator()(double total) const { *out = total; }
};
/// finish for a total left on the device: *entry += S(factor · total).
template <class S>
struct add_total_to {
  double factor;
  S* entry;
  __device__ void operator()(double total) const { *entry += S(factor * total); }
};
/// *flag = 1 if some x_i is NaN or ±Inf.
template <class S>
__global__ void nonfinite_kernel(std::size_t n, const S* x, int* flag) {
  for (std::size_t i = global_thread(); i < n; i += grid_threads())
    if (!::cuda::std::isfinite(x[i])) {
      *flag = 1;
      return;
    }
}
/// *out = 1 if some x_i is NaN or ±Inf (left as it is otherwise): the check's answer stays
/// on the device.
template <class S>
__global__ void mark_nonfinite_kernel(std::size_t n, const S* x, S* out) {
  for (std::size_t i = global_thread(); i < n; i += grid_threads())
    if (!::cuda::std::isfinite(x[i])) {
      *out = S(1);
      return;
    }
}
/// *flag = 1 if some a_i != b_i (NaN differs from everything, as with ==).
template <class S>
__global__ void differ_kernel(std::size_t n, const S* a, const S* b, int* flag) {
  for (std::size_t i = global_thread(); i < n; i += grid_threads())
    if (!(a[i] == b[i])) {
      *flag = 1;
      return;
    }
}

// ---- warp-per-row reductions over a rows × cols row-major matrix ----
// Kept as the library's own: each computes all a row needs (maximum, sums) and uses them in
// the same kernel; CUB's segmented reductions would take a pass and a temporary per statistic.

template <class S>
__device__ inline S warp_sum(S v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
template <class S>
__device__ inline S warp_max(S v) {
  for (int o = 16; o > 0; o >>= 1) {
    const S w = __shfl_xor_sync(0xffffffffu, v, o);
    v = w > v ? w : v;
  }
  return v;
}
__device__ inline std::size_t first_warp() { return global_thread() / 32; }
__device__ inline std::size_t grid_warps() { return grid_threads() / 32; }

/// Row maximum (each lane's share, then the warp's); −inf for an empty row.
template <class S>
__device__ inline S row_maximum(const S* zr, std::size_t cols, unsigned lane) {
  S mx = -::cuda::std::numeric_limits<S>::infinity();
  for (std::size_t j = lane; j < cols; j += 32) mx = zr[j] > mx ? zr[j] : mx;
  return warp_max(mx);
}

/// p_i = exp(z_i − max z_i) / Σ exp(z_i − max z_i), row by row.
template <class S>
__global__ void row_softmax_kernel(std::size_t rows, std::size_t cols, const S* z, S* p) {
  const unsigned lane = threadIdx.x & 31u;
  for (std::size_t r = first_warp(); r < rows; r += grid_warps()) {
    const S* zr = z + r * cols;
    S* pr = p + r * cols;
    const S mx = row_maximum(zr, cols, lane);
    S s = S(0);
    for (std::size_t j = lane; j < cols; j += 32) {
      const S e = ::cuda::std::exp(zr[j] - mx);
      pr[j] = e;
      s += e;
    }
    s = warp_sum(s);
    for (std::size_t j = lane; j < cols; j += 32) pr[j] /= s;
  }
}
/// out_i = max z_i + log Σ exp(z_i − max z_i).
template <class S>
__global__ void row_logsumexp_kernel(std::size_t rows, std::size_t cols, const S* z, S* out) {
  const unsigned lane = threadIdx.x & 31u;
  for (std::size_t r = first_warp(); r < rows; r += grid_warps()) {
    const S* zr = z + r * cols;
    const S mx = row_maximum(zr, cols, lane);
    S s = S(0);
    for (std::size_t j = lane; j < cols; j += 32) s += ::cuda::std::exp(zr[j] - mx);
    s = warp_sum(s);
    if (lane == 0) out[r] = ::cuda::std::log(s) + mx;
  }
}
/// max_i and the first j attaining it.
template <class S>
__global__ void row_max_kernel(std::size_t rows, std::size_t cols, const S* m, S* max, std::int64_t* arg) {
  const unsigned lane = threadIdx.x & 31u;
  for (std::size_t r = first_warp(); r < rows; r += grid_warps()) {
    const S* mr = m + r * cols;
    S best = -::cuda::std::numeric_limits<S>::infinity();
    std::int64_t at = std::int64_t(cols);  // "none" sorts after every real index
    for (std::size_t j = lane; j < cols; j += 32)
      if (at == std::int64_t(cols) || mr[j] > best) best = mr[j], at = std::int64_t(j);
    for (int o = 16; o > 0; o >>= 1) {
      const S b = __shfl_xor_sync(0xffffffffu, best, o);
      const std::int64_t a = __shfl_xor_sync(0xffffffffu, at, o);
      const bool real_b = a < std::int64_t(cols), real_mine = at < std::int64_t(cols);
      if (real_b && (!real_mine || b > best || (b == best && a < at))) best = b, at = a;
    }
    if (lane == 0) {
      max[r] = best;
      arg[r] = at;
    }
  }
}
/// out_i = Σ_j a_ij b_ij.
template <class S>
__global__ void row_dots_kernel(std::size_t rows, std::size_t cols, const S* a, const S* b, S* out) {
  const unsigned lane = threadIdx.x & 31u;
  for (std::size_t r = first_warp(); r < rows; r += grid_warps()) {
    S s = S(0);
    for (std::size_t j = lane; j < cols; j += 32) s += a[r * cols + j] * b[r * cols + j];
    s = warp_sum(s);
    if (lane == 0) out[r] = s;
  }
}
/// out_i = Σ_j m_ij.
template <class S>
__global__ void row_sums_kernel(std::size_t rows, std::size_t cols, const S* m, S* out) {
  const unsigned lane = threadIdx.x & 31u;
  for (std::size_t r = first_warp(); r < rows; r += grid_warps()) {
    S s = S(0);
    for (std::size_t j = lane; j < cols; j += 32) s += m[r * cols + j];
    s = warp_sum(s);
    if (lane == 0) out[r] = s;
  }
}

/// A cross-entropy head row by row (warp per row; the host loop: policy/detail/fused_maps.hpp):
/// mass_i = Σ t_i, loss_i = mass_i·lse(z_i) − ⟨t_i, z_i⟩, d_i = mass_i·softmax(z_i) − t_i.
template <class S>
__global__ void softmax_cross_entropy_kernel(std::size_t rows, std::size_t cols, const S* z, const S* t, S* mass,
                                             S* loss, S* d) {
  const unsigned lane = threadIdx.x & 31u;
  for (std::size_t r = first_warp(); r < rows; r += grid_warps()) {
    const S* zr = z + r * cols;
    const S* tr = t + r * cols;
    const S mx = row_maximum(zr, cols, lane);
    S s = S(0), m = S(0), tz = S(0);
    for (std::size_t j = lane; j < cols; j += 32) {
      s += ::cuda::std::exp(zr[j] - mx);
      m += tr[j];
      tz += tr[j] * zr[j];
    }
    s = warp_sum(s);
    m = warp_sum(m);
    tz = warp_sum(tz);
    if (lane == 0) {
      mass[r] = m;
      loss[r] = m * (::cuda::std::log(s) + mx) - tz;
    }
    S* dr = d + r * cols;
    for (std::size_t j = lane; j < cols; j += 32) dr[j] = m * (::cuda::std::exp(zr[j] - mx) / s) - tr[j];
  }
}
/// Its tangent, weighted: g_i = factor·w_i·mass_i·(p_i ⊙ ż_i − p_i·⟨p_i, ż_i⟩).
template <class S>
__global__ void softmax_cross_entropy_tangent_kernel(std::size_t rows, std::size_t cols, const S* z, const S* z_dot,
                                                     const S* mass, const S* w, S factor, S* g) {
  const unsigned lane = threadIdx.x & 31u;
  for (std::size_t r = first_warp(); r < rows; r += grid_warps()) {
    const S* zr = z + r * cols;
    const S* zd = z_dot + r * cols;
    const S mx = row_maximum(zr, cols, lane);
    S s = S(0);
    for (std::size_t j = lane; j < cols; j += 32) s += ::cuda::std::exp(zr[j] - mx);
    s = warp_sum(s);
    S pdz = S(0);
    for (std::size_t j = lane; j < cols; j += 32) pdz += ::cuda::std::exp(zr[j] - mx) / s * zd[j];
    pdz = warp_sum(pdz);
    const S f = factor * w[r] * mass[r];
    S* gr = g + r * cols;
    for (std::size_t j = lane; j < cols; j += 32) {
      const S p = ::cuda::std::exp(zr[j] - mx) / s;
      gr[j] = f * (p * zd[j] - p * pdz);
    }
  }
}

// ---- a map and its column sums (an activation's adjoint and the bias gradient before it) ----
// Kept as the library's own: the map's output is summed as it is written, where cuBLAS's
// column sums (a GEMV against ones) take a second pass and launch; CUB's segmented reductions
// sum contiguous segments, not the strided columns of a row-major matrix. The order of
// addition is fixed by the shape alone (as for the reductions above), in double.

/// Rows per block of map_column_sums_kernel, and the row lanes a block splits them among.
inline constexpr std::size_t column_sum_chunk_rows = 256;
inline constexpr unsigned column_sum_row_lanes = threads_per_block / 32;

/// Rows per block for a `rows`-row matrix: the chunk above, or more where the grid's second
/// dimension (at most 65535 blocks) would not cover the rows.
inline std::size_t column_sum_chunk_for(std::size_t rows) {
  return std::max(column_sum_chunk_rows, (rows + 65534) / 65535);
}

/// out_ij = f(x_ij...) for the rows of block y's chunk and the 32 columns of block x, each
/// thread one column and every row_lanes-th row of the chunk in ascending order, summed in
/// double; the lanes' sums are added in lane order. With one chunk the column's sum goes to
/// sums_j (as S), otherwise to partials[chunk · cols + j] for column_partials_kernel.
template <class S, class F, class... In>
__global__ void map_column_sums_kernel(std::size_t rows, std::size_t cols, std::size_t chunk, S* out, F f,
                                       ::cuda::std::tuple<In...> x, double* partials, S* sums) {
  __shared__ double lane_sums[column_sum_row_lanes][32];
  const unsigned column_lane = threadIdx.x & 31u, row_lane = threadIdx.x >> 5;
  const std::size_t j = std::size_t(blockIdx.x) * 32 + column_lane;
  const std::size_t begin = std::size_t(blockIdx.y) * chunk;
  const std::size_t end = begin + chunk < rows ? begin + chunk : rows;
  double acc = 0.0;
  if (j < cols)
    for (std::size_t i = begin + row_lane; i < end; i += column_sum_row_lanes) {
      const std::size_t e = i * cols + j;
      const S value = ::cuda::std::apply([&](auto... q) { return S(f(q[e]...)); }, x);
      out[e] = value;
      acc += double(value);
    }
  lane_sums[row_lane][column_lane] = acc;
  __syncthreads();
  if (row_lane == 0 && j < cols) {
    double total = 0.0;
    for (unsigned l = 0; l < column_sum_row_lanes; ++l) total += lane_sums[l][column_lane];
    if (partials) partials[std::size_t(blockIdx.y) * cols + j] = total;
    else sums[j] = S(total);
  }
}
/// sums_j = S(Σ_c partials[c · cols + j]) over the chunks in order.
template <class S>
__global__ void column_partials_kernel(std::size_t chunks, std::size_t cols, const double* partials, S* sums) {
  for (std::size_t j = global_thread(); j < cols; j += grid_threads()) {
    double total = 0.0;
    for (std::size_t c = 0; c < chunks; ++c) total += partials[c * cols + j];
    sums[j] = S(total);
  }
}

// ---- scatter-add ----
// Kept as the library's own: the inverse index makes each destination one thread's, summed in
// ascending source order, so the result is deterministic without atomics (CUB has no such
// primitive).

/// out[target_t] += Σ_{k in [offsets_t, offsets_t+1)} src[sources_k], sources ascending:
/// the inverse of an index map, so every destination is written by one thread.
template <class S>
__global__ void scatter_add_kernel(std::size_t targets, const std::int64_t* target, const std::int64_t* offsets,
                                   const std::int64_t* sources, const S* src, S* out) {
  for (std::size_t t = global_thread(); t < targets; t += grid_threads()) {
    S acc = out[target[t]];
    for (std::int64_t k = offsets[t]; k < offsets[t + 1]; ++k) acc += src[sources[k]];
    out[target[t]] = acc;
  }
}

/// Its adjoint, through the inverse of one sample's map: thread (b, t) owns destination
/// target_t of sample b, so every destination is written by one thread, in ascending source
/// order.
template <class S>
__global__ void scatter_add_per_sample_kernel(std::size_t total, std::size_t targets, std::size_t n, std::size_t block,
                                              const std::int64_t* target, const std::int64_t* offsets,
                                              const std::int64_t* sources, const S* src, S* out) {
  for (std::size_t i = global_thread(); i < total; i += grid_threads()) {
    const std::size_t b = i / targets, t = i - b * targets;
    S* dst = out + b * block + std::size_t(target[t]);
    const S* from = src + b * n;
    S acc = *dst;
    for (std::int64_t k = offsets[t]; k < offsets[t + 1]; ++k) acc += from[sources[k]];
    *dst = acc;
  }
}

// ---- max pooling (window_max, policy/detail/window_max.hpp) ----

/// Output element i = (b · out_pixels + p) · C + c: the first maximum over its window's real
/// taps (index −1: padding, never selected), as the host loop takes it, and its position in x.
template <class S>
__global__ void window_max_kernel(std::size_t total, std::size_t out_pixels, std::size_t in_pixels,
                                  std::size_t channels, std::size_t taps, const std::int64_t* index, const S* x, S* y,
                                  std::int64_t* argmax) {
  for (std::size_t i = global_thread(); i < total; i += grid_threads()) {
    const std::size_t c = i % channels, bp = i / channels, b = bp / out_pixels, p = bp - b * out_pixels;
    const std::int64_t* w = index + p * taps;
    S best = S(0);
    std::int64_t at = -1;
    for (std::size_t t = 0; t < taps; ++t) {
      if (w[t] < 0) continue;
      const auto e = std::int64_t((b * in_pixels + std::size_t(w[t])) * channels + c);
      const S v = x[e];
      if (at < 0 || v > best) best = v, at = e;
    }
    y[i] = best;
    argmax[i] = at;
  }
}
/// Its adjoint, gx[argmax[o]] += gy[o], through the inverse of the tap map rather than with
/// atomics: thread (b, target_t, c) owns input element e = (b · in_pixels + target_t) · C + c
/// and adds gy[o] for every output o whose window holds that pixel (sources: positions
/// p · taps + t in the map, ascending) and selected e. One writer per element and the host
/// loop's order of additions (ascending o), so the result is deterministic and the same.
template <class S>
__global__ void window_max_adjoint_kernel(std::size_t total, std::size_t targets, std::size_t channels,
                                          std::size_t taps, std::size_t out_pixels, std::size_t in_pixels,
                                          const std::int64_t* target, const std::int64_t* offsets,
                                          const std::int64_t* sources, const std::int64_t* argmax, const S* gy,
                                          S* gx) {
  for (std::size_t i = global_thread(); i < total; i += grid_threads()) {
    const std::size_t c = i % channels, r = i / channels, b = r / targets, t = r - b * targets;
    const auto e = std::int64_t((b * in_pixels + std::size_t(target[t])) * channels + c);
    S acc = gx[e];
    for (std::int64_t k = offsets[t]; k < offsets[t + 1]; ++k) {
      const std::size_t window = std::size_t(sources[k]) / taps;
      // A map may name this pixel at two taps of one window; the inverse lists its sources in
      // ascending order, so such taps are neighbours, and the window adds once (as the host's
      // gx[argmax[o]] += gy[o] does).
      if (k > offsets[t] && std::size_t(sources[k - 1]) / taps == window) continue;
      const std::size_t o = (b * out_pixels + window) * channels + c;
      if (argmax[o] == e) acc += gy[o];
    }
    gx[e] = acc;
  }
}

}  // namespace bilevel::policy::cuda_detail
