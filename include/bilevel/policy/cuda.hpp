// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// The CUDA tensor policy: device arrays, cuBLAS for BLAS-1/2/3, the library's own kernels for
/// the rest (cuda/kernels.cuh, which says why each is not CUB's).
///
/// Opt-in: include this header from a CUDA translation unit (.cu, nvcc -std=c++20) and link
/// bilevel::cuda (cuBLAS and the CUDA runtime; the target also passes --extended-lambda and
/// --expt-relaxed-constexpr). Everything above the policy layer runs on it unchanged, with
/// the results the Eigen policy gives up to the rounding of a different summation order.
/// Eigen is not needed here, and should stay out of .cu files: compute host references in a
/// separate .cpp.
///
///   - `vector` and `matrix` own plain device memory (matrix: rows, cols, row-major data);
///     copies are deep, moves are cheap; default-constructed ones are empty and touch no
///     device.
///   - Work is queued on the calling thread's current stream: its default stream
///     (cudaStreamPerThread), or, inside a solver's calls, the solver's own (`stream` and
///     `stream_scope`, cuda/stream.cuh); one cuBLAS handle per thread (cuda/context.cuh).
///     Calls return as soon as their work is queued, except those whose
///     result is a host value (to_host, matrix_to_host, dot, norm, sum, all_finite, equal,
///     row_max's indices, indices_to_host), which wait for it.
///   - gemm, gemv, axpy, scale and, for double, dot and norm go to cuBLAS; row-major matrices
///     are passed as their column-major transposes. dot, norm and sum accumulate in double
///     whatever the scalar (float: double-accumulating kernels, deterministic).
///   - Host transfers happen in to_host, from_host, matrix_from_host, matrix_to_host, and
///     where the concept itself speaks host types: gather/scatter_add's index maps (cached
///     on the device, cuda/index_plans.cuh) and row_max's indices; and in `transform` with a
///     functor that cannot run on the device (cuda/functors.cuh).
///   - A solver's outer steps can be captured as CUDA graphs (`graph_capture`,
///     cuda/graph_capture.cuh; solver::capture_steps), each launched as one.
///   - Errors: shape errors throw std::invalid_argument with the Eigen policy's messages;
///     every CUDA and cuBLAS call is checked and a failure throws bilevel::cuda_error naming
///     the call; the first call that needs the device throws "no CUDA device" when there is
///     none.
#if !defined(__CUDACC__)
#error "bilevel/policy/cuda.hpp contains CUDA kernels: include it from a .cu file compiled by nvcc (link bilevel::cuda)"
#endif

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <span>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include "bilevel/core/tensor_policy.hpp"
#include "bilevel/policy/cuda/context.cuh"
#include "bilevel/policy/cuda/error.cuh"
#include "bilevel/policy/cuda/functors.cuh"
#include "bilevel/policy/cuda/graph_capture.cuh"
#include "bilevel/policy/cuda/index_plans.cuh"
#include "bilevel/policy/cuda/kernels.cuh"
#include "bilevel/policy/cuda/launch.cuh"
#include "bilevel/policy/cuda/stream.cuh"
#include "bilevel/policy/detail/per_sample_maps.hpp"
#include "bilevel/policy/detail/window_max.hpp"

namespace bilevel::policy {

namespace cuda_detail {

/// An array's content stamp (core/content_stamps.hpp): a number no other contents had, taken
/// anew whenever the array may be written (construction, a non-const data(), resize, being
/// moved from) and copied with the contents. Host bookkeeping: reading it waits for nothing.
class content_stamp {
 public:
  content_stamp() noexcept : value_(next()) {}
  content_stamp(const content_stamp&) noexcept = default;
  content_stamp& operator=(const content_stamp&) noexcept = default;
  content_stamp(content_stamp&& o) noexcept : value_(o.value_) { o.renew(); }
  content_stamp& operator=(content_stamp&& o) noexcept {
    value_ = o.value_;
    o.renew();  // a self-move ends with a new stamp: conservative, never wrong
    return *this;
  }
  void renew() noexcept { value_ = next(); }
  [[nodiscard]] std::uint64_t value() const noexcept { return value_; }

 private:
  static std::uint64_t next() noexcept {
    static std::atomic<std::uint64_t> counter{0};
    return counter.fetch_add(1, std::memory_order_relaxed) + 1;
  }
  std::uint64_t value_;
};

/// A flat, contiguous, owning device vector.
template <class S>
class device_vector {
 public:
  device_vector() = default;
  explicit device_vector(std::size_t n) : buf_(n) {}
  [[nodiscard]] std::size_t size() const noexcept { return buf_.size(); }
  [[nodiscard]] bool empty() const noexcept { return buf_.empty(); }
  /// Device pointers: for kernels and libraries, never to dereference on the host. The
  /// non-const one renews the content stamp: write through it right away, and keep no such
  /// pointer across library calls (a later write through it would leave the stamp behind).
  [[nodiscard]] S* data() noexcept {
    stamp_.renew();
    return buf_.data();
  }
  [[nodiscard]] const S* data() const noexcept { return buf_.data(); }
  /// n elements; the old contents are kept only when the size does not change.
  void resize(std::size_t n) {
    buf_.resize(n);
    stamp_.renew();
  }
  [[nodiscard]] std::uint64_t stamp() const noexcept { return stamp_.value(); }
  /// After a copy of all of o's elements into this one: the same values, the same stamp.
  void adopt_stamp(const device_vector& o) noexcept { stamp_ = o.stamp_; }

 private:
  device_buffer<S> buf_;
  content_stamp stamp_;
};

/// A dense row-major device matrix.
template <class S>
class device_matrix {
 public:
  device_matrix() = default;
  device_matrix(std::size_t rows, std::size_t cols) : rows_(rows), cols_(cols), buf_(rows * cols) {}
  [[nodiscard]] std::size_t rows() const noexcept { return rows_; }
  [[nodiscard]] std::size_t cols() const noexcept { return cols_; }
  [[nodiscard]] std::size_t size() const noexcept { return buf_.size(); }
  /// As device_vector's: the non-const pointer renews the content stamp.
  [[nodiscard]] S* data() noexcept {
    stamp_.renew();
    return buf_.data();
  }
  [[nodiscard]] const S* data() const noexcept { return buf_.data(); }
  /// rows × cols; the old contents are kept only when the number of elements does not change
  /// (then this is a reshape).
  void resize(std::size_t rows, std::size_t cols) {
    buf_.resize(rows * cols);
    rows_ = rows;
    cols_ = cols;
    stamp_.renew();
  }
  [[nodiscard]] std::uint64_t stamp() const noexcept { return stamp_.value(); }

 private:
  std::size_t rows_ = 0, cols_ = 0;
  device_buffer<S> buf_;
  content_stamp stamp_;
};

}  // namespace cuda_detail

/// How the GEMMs of cuda<float> treat their inputs (cuBLAS compute types), most of a network's
/// arithmetic. Everything else stays in the policy's scalar: the parameters (float master
/// copies), optimizer state, GEMVs, element-wise maps, reductions (accumulated in double), and
/// the CG and Neumann solves, whose vector arithmetic is the policy's BLAS-1. cuda<double>'s
/// GEMMs are FP64 whatever is set.
enum class gemm_precision {
  full,  ///< FP32, no tensor-core rounding: the default
  tf32,  ///< inputs rounded to TF32 (10-bit mantissa) on tensor cores, FP32 accumulation
  bf16,  ///< inputs rounded to BF16 (7-bit mantissa) or TF32 on tensor cores, FP32 accumulation
};

namespace cuda_detail {
/// The calling thread's setting (gemm_precision_scope).
inline gemm_precision& thread_gemm_precision() {
  thread_local gemm_precision p = gemm_precision::full;
  return p;
}
}  // namespace cuda_detail

/// Runs the float GEMMs this thread queues in its lifetime at `p`, then restores the setting
/// it found (scopes nest):
///
///     { bilevel::policy::gemm_precision_scope tf32(bilevel::policy::gemm_precision::tf32);
///       solver.run(n); }
///
/// A setting, not a policy type: the same compiled code runs either way, so a reduced-precision
/// run costs no second instantiation of the solver, and a run can be compared with itself.
class gemm_precision_scope {
 public:
  explicit gemm_precision_scope(gemm_precision p) : saved_(cuda_detail::thread_gemm_precision()) {
    cuda_detail::thread_gemm_precision() = p;
  }
  ~gemm_precision_scope() { cuda_detail::thread_gemm_precision() = saved_; }
  gemm_precision_scope(const gemm_precision_scope&) = delete;
  gemm_precision_scope& operator=(const gemm_precision_scope&) = delete;

 private:
  gemm_precision saved_;
};

/// CUDA back end (see the file comment). `Scalar` is float or double.
template <std::floating_point Scalar>
  requires std::same_as<Scalar, float> || std::same_as<Scalar, double>
struct cuda {
  using scalar = Scalar;
  /// What this thread's float GEMMs run at now (gemm_precision_scope).
  static gemm_precision current_gemm_precision() { return cuda_detail::thread_gemm_precision(); }
  /// Convolutions gather a whole batch's patches at once (learners/layers/convolution.hpp):
  /// on a GPU, one large GEMM beats a loop of cache-sized ones.
  static constexpr bool whole_batch_maps = true;
  /// A host read waits for the queue: code with the choice keeps its scalars on the device
  /// (core/tensor_policy.hpp, device_resident).
  static constexpr bool device_resident = true;
  using vector = cuda_detail::device_vector<Scalar>;
  using matrix = cuda_detail::device_matrix<Scalar>;
  /// Positions in a matrix's storage that a primitive chose (window_max_per_sample's argmax),
  /// kept on the device: max pooling's selection never comes to the host.
  using index_vector = cuda_detail::device_buffer<std::int64_t>;
  /// A solver's own stream and the scope that binds it (core/policy_stream.hpp).
  using stream = cuda_stream;
  using stream_scope = cuda_stream_scope;
  /// Outer steps captured as CUDA graphs (solver::capture_steps; core/step_capture.hpp).
  using graph_capture = cuda_graph_capture;

  // ---- allocation and shape ----

  static vector zeros(std::size_t n) {
    vector v(n);
    zero(v.data(), n);
    return v;
  }
  static void resize(vector& v, std::size_t n) { v.resize(n); }
  static std::size_t size(const vector& v) { return v.size(); }
  static std::size_t rows(const matrix& m) { return m.rows(); }
  static std::size_t cols(const matrix& m) { return m.cols(); }
  /// Content stamps (core/content_stamps.hpp; cuda_detail::content_stamp): the networks'
  /// caches recognise unchanged parameters, batches and weights by them, with no comparison
  /// on the device and no wait for one.
  static std::uint64_t content_stamp(const vector& v) { return v.stamp(); }
  static std::uint64_t content_stamp(const matrix& m) { return m.stamp(); }

  // ---- BLAS-1 and reductions ----

  static void copy(const vector& src, vector& dst) {
    if (&src == &dst) return;
    dst.resize(src.size());
    device_copy(dst.data(), src.data(), src.size());
    dst.adopt_stamp(src);  // equal values: a cache keyed on src knows dst (core/content_stamps.hpp)
  }
  static void fill(vector& v, scalar s) { fill(v.data(), v.size(), s); }
  static void axpy(scalar a, const vector& x, vector& y) {
    require_same_size(x, y, "axpy");
    blas_axpy(x.size(), a, x.data(), y.data());
  }
  static void scale(vector& v, scalar s) { blas_scal(v.size(), s, v.data()); }

  /// Accumulated in double: cuBLAS ddot for double, a double-accumulating kernel for float
  /// (each float product is exact in double).
  static double dot(const vector& x, const vector& y) {
    require_same_size(x, y, "dot");
    if (x.size() == 0) return 0.0;
    if constexpr (std::is_same_v<scalar, double>) {
      double r = 0.0;
      cuda_detail::note_host_wait();  // host pointer mode: cuBLAS waits for the result
      BILEVEL_CUDA_CHECK(cublasDdot_64(blas(), std::int64_t(x.size()), x.data(), 1, y.data(), 1, &r));
      return r;
    } else {
      return reduce(x.size(), cuda_detail::dot_term<scalar>{x.data(), y.data()});
    }
  }
  static double norm(const vector& x) {
    if (x.size() == 0) return 0.0;
    if constexpr (std::is_same_v<scalar, double>) {
      double r = 0.0;
      cuda_detail::note_host_wait();
      BILEVEL_CUDA_CHECK(cublasDnrm2_64(blas(), std::int64_t(x.size()), x.data(), 1, &r));
      return r;
    } else {
      return std::sqrt(dot(x, x));
    }
  }
  static double sum(const vector& x) {
    if (x.size() == 0) return 0.0;
    return reduce(x.size(), cuda_detail::sum_term<scalar>{x.data()});
  }
  static bool all_finite(const vector& x) {
    if (x.size() == 0) return true;
    return !flag_kernel([&](int* flag) {
      cuda_detail::nonfinite_kernel<<<cuda_detail::blocks_for(x.size()), cuda_detail::threads_per_block, 0,
                                      cuda_detail::stream()>>>(x.size(), x.data(), flag);
    }, "nonfinite_kernel");
  }

  /// out_i = 1 when x has a NaN or Inf, left as it is otherwise: all_finite without the
  /// host wait, its answer left in a vector entry (tensor_policy.hpp: deferred_checks).
  static void mark_nonfinite(const vector& x, vector& out, std::size_t i) {
    require_range(out, i, 1, "mark_nonfinite");
    if (x.size() == 0) return;
    cuda_detail::mark_nonfinite_kernel<<<cuda_detail::blocks_for(x.size()), cuda_detail::threads_per_block, 0,
                                         cuda_detail::stream()>>>(x.size(), x.data(), out.data() + i);
    cuda_detail::check_launch("mark_nonfinite_kernel");
  }

  // ---- element-wise ----

  /// out = x ⊙ y, for vectors and matrices alike.
  template <class T>
    requires std::same_as<T, vector> || std::same_as<T, matrix>
  static void hadamard(const T& x, const T& y, T& out) {
    require_same_shape(x, y, "hadamard");
    shape_like(x, out);
    launch_map2(x.size(), x.data(), y.data(), out.data(), cuda_detail::multiplies{});
  }
  /// out_i = f(x_i): in a kernel when f can run on the device (cuda/functors.cuh); on the host
  /// only when the call opted in (elementwise::on_host), a compile-time error otherwise.
  template <class T, class F>
    requires std::same_as<T, vector> || std::same_as<T, matrix>
  static void transform(const T& x, T& out, F f) {
    using map = cuda_detail::device_map<F>;
    if constexpr (map::on_device) {
      shape_like(x, out);
      if (x.size() == 0) return;
      using op = cuda_detail::map_op<scalar, std::decay_t<decltype(map::get(f))>>;
      cuda_detail::for_each_index(x.size(), op{x.data(), out.data(), map::get(f)}, "transform");
    } else {
      static_assert(cuda_detail::host_fallback_allowed<F>,
                    "bilevel::policy::cuda::transform: this functor cannot run on the device (make it an extended "
                    "__host__ __device__ lambda, or tag a functor struct with 'using bilevel_device_callable = "
                    "void;'), and the call did not opt in to a host round trip (wrap it in "
                    "bilevel::elementwise::on_host(f))");
      auto h = download(x.data(), x.size());
      for (auto& e : h) e = scalar(f(e));
      shape_like(x, out);
      upload(h, out.data());
      ++cuda_detail::host_transform_counter();
    }
  }
  /// out_i = f(x_i, y_i).
  template <class T, class F>
    requires std::same_as<T, vector> || std::same_as<T, matrix>
  static void transform(const T& x, const T& y, T& out, F f) {
    require_same_shape(x, y, "transform");
    using map = cuda_detail::device_map<F>;
    if constexpr (map::on_device) {
      shape_like(x, out);
      launch_map2(x.size(), x.data(), y.data(), out.data(), map::get(f));
    } else {
      static_assert(cuda_detail::host_fallback_allowed<F>,
                    "bilevel::policy::cuda::transform: this functor cannot run on the device (make it an extended "
                    "__host__ __device__ lambda, or tag a functor struct with 'using bilevel_device_callable = "
                    "void;'), and the call did not opt in to a host round trip (wrap it in "
                    "bilevel::elementwise::on_host(f))");
      auto hx = download(x.data(), x.size());
      const auto hy = download(y.data(), y.size());
      for (std::size_t i = 0; i < hx.size(); ++i) hx[i] = scalar(f(hx[i], hy[i]));
      shape_like(x, out);
      upload(hx, out.data());
      ++cuda_detail::host_transform_counter();
    }
  }
  /// How many transform calls so far (all threads, both scalars) mapped on the host (calls that
  /// opted in with elementwise::on_host, or under BILEVEL_CUDA_HOST_TRANSFORM_FALLBACK).
  static std::size_t host_transforms() { return cuda_detail::host_transform_counter().load(); }

  // ---- BLAS-2/3 ----

  /// y = alpha op(A) x + beta y. With beta == 0, y is resized and its old contents ignored.
  static void gemv(scalar alpha, const matrix& a, bool transpose, const vector& x, scalar beta, vector& y) {
    const std::size_t in = transpose ? a.rows() : a.cols();
    const std::size_t out = transpose ? a.cols() : a.rows();
    if (x.size() != in)
      throw std::invalid_argument("bilevel::policy::cuda::gemv: matrix is " + shape(a) +
                                  (transpose ? " (transposed)" : "") + " but x has " + std::to_string(x.size()) +
                                  " elements");
    if (beta == scalar(0)) y.resize(out);
    else if (y.size() != out)
      throw std::invalid_argument("bilevel::policy::cuda::gemv: y has " + std::to_string(y.size()) +
                                  " elements, expected " + std::to_string(out));
    if (out == 0) return;
    if (in == 0) {  // an empty product: y = beta y
      if (beta == scalar(0)) zero(y.data(), out);
      else blas_scal(out, beta, y.data());
      return;
    }
    // Row-major A is the column-major a.cols × a.rows matrix Aᵀ: A x is its transpose's product.
    const auto op = transpose ? CUBLAS_OP_N : CUBLAS_OP_T;
    const auto m = std::int64_t(a.cols()), n = std::int64_t(a.rows());
    if constexpr (std::is_same_v<scalar, float>)
      BILEVEL_CUDA_CHECK(cublasSgemv_64(blas(), op, m, n, &alpha, a.data(), m, x.data(), 1, &beta, y.data(), 1));
    else
      BILEVEL_CUDA_CHECK(cublasDgemv_64(blas(), op, m, n, &alpha, a.data(), m, x.data(), 1, &beta, y.data(), 1));
  }

  /// C = alpha op(A) op(B) + beta C. With beta == 0, C is resized and its old contents ignored.
  static void gemm(scalar alpha, const matrix& a, bool trans_a, const matrix& b, bool trans_b, scalar beta,
                   matrix& c) {
    const std::size_t inner_a = trans_a ? a.rows() : a.cols();
    const std::size_t inner_b = trans_b ? b.cols() : b.rows();
    if (inner_a != inner_b)
      throw std::invalid_argument("bilevel::policy::cuda::gemm: inner dimensions differ: A is " + shape(a) +
                                  (trans_a ? "ᵀ" : "") + ", B is " + shape(b) + (trans_b ? "ᵀ" : ""));
    const std::size_t m = trans_a ? a.cols() : a.rows();
    const std::size_t n = trans_b ? b.rows() : b.cols();
    if (beta == scalar(0)) c.resize(m, n);
    else if (c.rows() != m || c.cols() != n)
      throw std::invalid_argument("bilevel::policy::cuda::gemm: C is " + shape(c) + ", expected " + std::to_string(m) +
                                  "x" + std::to_string(n));
    product(alpha, a, trans_a, b, trans_b, beta, c.data());
  }

  // ---- matrix operations for layers (nn_tensor_policy) ----

  static matrix matrix_zeros(std::size_t r, std::size_t c) {
    matrix m(r, c);
    zero(m.data(), m.size());
    return m;
  }
  /// out = the r × c matrix stored row-major in theta[offset, offset + r·c).
  static void unflatten(const vector& theta, std::size_t offset, std::size_t r, std::size_t c, matrix& out) {
    require_range(theta, offset, r * c, "unflatten");
    out.resize(r, c);
    device_copy(out.data(), theta.data() + offset, r * c);
  }
  /// out = theta[offset, offset + n).
  static void segment(const vector& theta, std::size_t offset, std::size_t n, vector& out) {
    require_range(theta, offset, n, "segment");
    if (&theta == &out) {  // a segment of itself: through a temporary
      vector tmp(n);
      device_copy(tmp.data(), theta.data() + offset, n);
      out = std::move(tmp);
      return;
    }
    out.resize(n);
    device_copy(out.data(), theta.data() + offset, n);
  }
  /// dst[offset, ...) = m, row-major.
  static void flatten_into(const matrix& m, vector& dst, std::size_t offset) {
    require_range(dst, offset, m.size(), "flatten_into");
    device_copy(dst.data() + offset, m.data(), m.size());
  }
  /// dst[offset, offset + m·n) = alpha op(A) op(B) (+ beta · what is there), row-major m × n.
  static void gemm_into_segment(scalar alpha, const matrix& a, bool trans_a, const matrix& b, bool trans_b,
                                scalar beta, vector& dst, std::size_t offset) {
    const std::size_t m = trans_a ? a.cols() : a.rows();
    const std::size_t n = trans_b ? b.rows() : b.cols();
    if ((trans_a ? a.rows() : a.cols()) != (trans_b ? b.cols() : b.rows()))
      throw std::invalid_argument("bilevel::policy::cuda::gemm_into_segment: inner dimensions differ: A is " +
                                  shape(a) + ", B is " + shape(b));
    require_range(dst, offset, m * n, "gemm_into_segment");
    product(alpha, a, trans_a, b, trans_b, beta, dst.data() + offset);
  }
  /// C = alpha op(A) op(S) + beta C, S the r × c row-major matrix at theta[offset, ...), read
  /// in place (no unflattened copy). With beta == 0, C is resized and its old contents ignored.
  static void gemm_by_segment(scalar alpha, const matrix& a, bool trans_a, const vector& theta, std::size_t offset,
                              std::size_t r, std::size_t c, bool trans_b, scalar beta, matrix& out) {
    require_range(theta, offset, r * c, "gemm_by_segment");
    if ((trans_a ? a.rows() : a.cols()) != (trans_b ? c : r))
      throw std::invalid_argument("bilevel::policy::cuda::gemm_by_segment: inner dimensions differ: A is " + shape(a) +
                                  (trans_a ? "ᵀ" : "") + ", the segment is " + std::to_string(r) + "x" +
                                  std::to_string(c) + (trans_b ? "ᵀ" : ""));
    const std::size_t m = trans_a ? a.cols() : a.rows();
    const std::size_t n = trans_b ? r : c;
    if (beta == scalar(0)) out.resize(m, n);
    else if (out.rows() != m || out.cols() != n)
      throw std::invalid_argument("bilevel::policy::cuda::gemm_by_segment: C is " + shape(out) + ", expected " +
                                  std::to_string(m) + "x" + std::to_string(n));
    product(alpha, a, trans_a, theta.data() + offset, r, c, trans_b, beta, out.data());
  }
  /// dst[offset, offset + |v|) = v.
  static void set_segment(const vector& v, vector& dst, std::size_t offset) {
    require_range(dst, offset, v.size(), "set_segment");
    device_copy(dst.data() + offset, v.data(), v.size());
  }
  static void axpy(scalar a, const matrix& x, matrix& y) {
    require_same_shape(x, y, "axpy");
    blas_axpy(x.size(), a, x.data(), y.data());
  }
  static void scale(matrix& m, scalar s) { blas_scal(m.size(), s, m.data()); }
  /// y += s · c_i · x, c_i read on the device (no host round trip).
  static void axpy_entry(scalar s, const vector& c, std::size_t i, const matrix& x, matrix& y) {
    require_same_shape(x, y, "axpy_entry");
    require_range(c, i, 1, "axpy_entry");
    if (x.size() == 0) return;
    cuda_detail::for_each_index(x.size(), cuda_detail::axpy_entry_op<scalar>{s, c.data() + i, x.data(), y.data()},
                                "axpy_entry");
  }
  /// out_i += ⟨a, b⟩ (Frobenius): the products in double, reduced on the device in a fixed
  /// order and added to the entry there.
  static void add_dot_into(const matrix& a, const matrix& b, vector& out, std::size_t i) {
    require_same_shape(a, b, "add_dot_into");
    require_range(out, i, 1, "add_dot_into");
    if (a.size() == 0) return;
    reduce_into(a.size(), cuda_detail::dot_term<scalar>{a.data(), b.data()},
                cuda_detail::add_total_to<scalar>{1.0, out.data() + i});
  }
  /// out_i += s·⟨x, y⟩ for vectors: reduced on the device and added to the entry there.
  static void add_scaled_dot_into(const vector& x, const vector& y, scalar s, vector& out, std::size_t i) {
    require_same_size(x, y, "add_scaled_dot_into");
    require_range(out, i, 1, "add_scaled_dot_into");
    if (x.size() == 0) return;
    reduce_into(x.size(), cuda_detail::dot_term<scalar>{x.data(), y.data()},
                cuda_detail::add_total_to<scalar>{double(s), out.data() + i});
  }
  /// m_ij += b_j.
  static void add_row(matrix& m, const vector& b) {
    if (b.size() != m.cols())
      throw std::invalid_argument("bilevel::policy::cuda::add_row: matrix is " + shape(m) + " but the row has " +
                                  std::to_string(b.size()) + " elements");
    if (m.size() == 0) return;
    cuda_detail::for_each_index(m.size(), cuda_detail::add_row_op<scalar>{m.cols(), m.data(), b.data()}, "add_row");
  }
  /// out_j = Σ_i m_ij.
  /// As mᵀ·1 by cuBLAS: a kernel with a thread per column would add a tall matrix's rows (a
  /// convolution's bias gradient sums batch · pixels of them) one after another.
  static void column_sums(const matrix& m, vector& out) {
    out.resize(m.cols());
    column_sums_to(m, out.data());
  }
  /// out_ij = src_ij·(c_i·factor), one kernel; out may be src.
  static void scale_rows_into(const matrix& src, const vector& c, scalar factor, matrix& out) {
    if (c.size() != src.rows())
      throw std::invalid_argument("bilevel::policy::cuda::scale_rows_into: matrix is " + shape(src) + " but there are " +
                                  std::to_string(c.size()) + " row factors");
    if (&out != &src) out.resize(src.rows(), src.cols());
    if (src.size() == 0) return;
    cuda_detail::for_each_index(
        src.size(), cuda_detail::scale_rows_into_op<scalar>{src.cols(), src.data(), c.data(), factor, out.data()},
        "scale_rows_into");
  }
  /// y = (s·c_i)·x, y shaped like x (y may be x), the factor read where it lies.
  static void scale_entry(scalar s, const vector& c, std::size_t i, const matrix& x, matrix& y) {
    require_range(c, i, 1, "scale_entry");
    if (&y != &x) y.resize(x.rows(), x.cols());
    if (x.size() == 0) return;
    cuda_detail::for_each_index(x.size(), cuda_detail::scale_entry_op<scalar>{s, c.data() + i, x.data(), y.data()},
                                "scale_entry");
  }
  /// m_ij += v[offset + j]: a bias row added where it lies in the parameter vector.
  static void add_segment_row(matrix& m, const vector& v, std::size_t offset) {
    require_range(v, offset, m.cols(), "add_segment_row");
    if (m.size() == 0) return;
    cuda_detail::for_each_index(m.size(), cuda_detail::add_row_op<scalar>{m.cols(), m.data(), v.data() + offset},
                                "add_segment_row");
  }
  /// m_ij += v[offset + j], then out_ij = f(m_ij, x_ij...) for matrices x of m's shape, one
  /// kernel: a layer's bias and the activation after it (out may be m, or an x). f must run on
  /// the device, as for zip_apply.
  template <class F, class... X>
    requires(std::is_same_v<X, matrix> && ...)
  static void add_segment_row_map(matrix& m, const vector& v, std::size_t offset, matrix& out, F f, const X&... x) {
    using map = cuda_detail::device_map<F>;
    static_assert(map::on_device,
                  "bilevel::policy::cuda::add_segment_row_map: this functor cannot run on the device (make it an "
                  "extended __host__ __device__ lambda, or tag a functor struct with 'using bilevel_device_callable = "
                  "void;')");
    require_range(v, offset, m.cols(), "add_segment_row_map");
    (require_same_shape(m, x, "add_segment_row_map"), ...);
    if (&out != &m) out.resize(m.rows(), m.cols());
    if (m.size() == 0) return;
    using op = cuda_detail::bias_map_op<scalar, std::decay_t<decltype(map::get(f))>, decltype(x.data())...>;
    cuda_detail::for_each_index(m.size(), op{m.cols(), m.data(), v.data() + offset, out.data(), map::get(f), {x.data()...}},
                                "add_segment_row_map");
  }
  /// out_ij = f(x_ij...) for one to four matrices x of one shape (out may be one of them), then
  /// v[offset + j] = Σ_i out_ij, the rest of v untouched: an activation's adjoint and the bias
  /// gradient of the layer before it. One kernel (two where the rows exceed one block's
  /// chunk of 256), summing in double in an order fixed by the shape (kernels.cuh). f must
  /// run on the device, as for zip_apply.
  template <class F, class... X>
    requires(sizeof...(X) >= 1 && sizeof...(X) <= 4 && (std::is_same_v<X, matrix> && ...))
  static void map_column_sums_into_segment(matrix& out, vector& v, std::size_t offset, F f, const X&... x) {
    using map = cuda_detail::device_map<F>;
    static_assert(map::on_device,
                  "bilevel::policy::cuda::map_column_sums_into_segment: this functor cannot run on the device (make it "
                  "an extended __host__ __device__ lambda, or tag a functor struct with 'using "
                  "bilevel_device_callable = void;')");
    const matrix& first = std::get<0>(std::forward_as_tuple(x...));
    const std::size_t rows = first.rows(), cols = first.cols();
    require_range(v, offset, cols, "map_column_sums_into_segment");
    (require_same_shape(first, x, "map_column_sums_into_segment"), ...);
    if (((&out != &x) && ...)) out.resize(rows, cols);
    if (cols == 0) return;
    if (rows == 0) {
      zero(v.data() + offset, cols);
      return;
    }
    const std::size_t chunk = cuda_detail::column_sum_chunk_for(rows), chunks = (rows + chunk - 1) / chunk;
    const dim3 grid(unsigned((cols + 31) / 32), unsigned(chunks));
    cuda_detail::device_buffer<double> partials(chunks > 1 ? chunks * cols : 0);
    using kernel_functor = std::decay_t<decltype(map::get(f))>;
    cuda_detail::map_column_sums_kernel<scalar, kernel_functor, decltype(x.data())...>
        <<<grid, cuda_detail::threads_per_block, 0, cuda_detail::stream()>>>(
            rows, cols, chunk, out.data(), map::get(f), ::cuda::std::tuple<decltype(x.data())...>{x.data()...},
            chunks > 1 ? partials.data() : nullptr, v.data() + offset);
    cuda_detail::check_launch("map_column_sums_kernel");
    if (chunks > 1) {
      cuda_detail::column_partials_kernel<scalar><<<cuda_detail::blocks_for(cols), cuda_detail::threads_per_block, 0,
                                                    cuda_detail::stream()>>>(chunks, cols, partials.data(),
                                                                             v.data() + offset);
      cuda_detail::check_launch("column_partials_kernel");
    }
  }
  /// v[offset + j] = Σ_i m_ij, the rest of v untouched: a bias gradient written in place.
  static void column_sums_into_segment(const matrix& m, vector& v, std::size_t offset) {
    require_range(v, offset, m.cols(), "column_sums_into_segment");
    column_sums_to(m, v.data() + offset);
  }
  /// out[0, cols) = mᵀ·1.
  static void column_sums_to(const matrix& m, scalar* out) {
    if (m.cols() == 0) return;
    if (m.rows() == 0) {
      zero(out, m.cols());
      return;
    }
    const scalar one = 1, nothing = 0;
    const auto cols = std::int64_t(m.cols()), rows = std::int64_t(m.rows());
    const scalar* all_ones = ones(m.rows());
    if constexpr (std::is_same_v<scalar, float>)
      BILEVEL_CUDA_CHECK(
          cublasSgemv_64(blas(), CUBLAS_OP_N, cols, rows, &one, m.data(), cols, all_ones, 1, &nothing, out, 1));
    else
      BILEVEL_CUDA_CHECK(
          cublasDgemv_64(blas(), CUBLAS_OP_N, cols, rows, &one, m.data(), cols, all_ones, 1, &nothing, out, 1));
  }
  /// out_i = Σ_j a_ij b_ij.
  static void row_dots(const matrix& a, const matrix& b, vector& out) {
    require_same_shape(a, b, "row_dots");
    out.resize(a.rows());
    if (a.rows() == 0) return;
    cuda_detail::row_dots_kernel<<<cuda_detail::row_blocks_for(a.rows()), cuda_detail::threads_per_block, 0,
                                   cuda_detail::stream()>>>(a.rows(), a.cols(), a.data(), b.data(), out.data());
    cuda_detail::check_launch("row_dots_kernel");
  }
  /// m_ij *= c_i.
  static void scale_rows(matrix& m, const vector& c) {
    if (c.size() != m.rows())
      throw std::invalid_argument("bilevel::policy::cuda::scale_rows: matrix is " + shape(m) + " but there are " +
                                  std::to_string(c.size()) + " factors");
    if (m.size() == 0) return;
    cuda_detail::for_each_index(m.size(), cuda_detail::scale_rows_op<scalar>{m.cols(), m.data(), c.data()},
                                "scale_rows");
  }
  /// m_ij *= c_j.
  static void scale_columns(matrix& m, const vector& c) {
    if (c.size() != m.cols())
      throw std::invalid_argument("bilevel::policy::cuda::scale_columns: matrix is " + shape(m) + " but there are " +
                                  std::to_string(c.size()) + " factors");
    if (m.size() == 0) return;
    cuda_detail::for_each_index(m.size(), cuda_detail::scale_columns_op<scalar>{m.cols(), m.data(), c.data()},
                                "scale_columns");
  }
  /// out = m's columns [first, first + n): one strided 2-D copy on the stream.
  static void columns(const matrix& m, std::size_t first, std::size_t n, matrix& out) {
    require_columns(m, first, n, "columns");
    out.resize(m.rows(), n);
    if (out.size() == 0) return;
    BILEVEL_CUDA_CHECK(cudaMemcpy2DAsync(out.data(), n * sizeof(scalar), m.data() + first, m.cols() * sizeof(scalar),
                                         n * sizeof(scalar), m.rows(), cudaMemcpyDeviceToDevice, cuda_detail::stream()));
  }
  /// dst's columns [first, first + src.cols) = src.
  static void set_columns(const matrix& src, matrix& dst, std::size_t first) {
    require_columns(dst, first, src.cols(), "set_columns");
    if (src.rows() != dst.rows())
      throw std::invalid_argument("bilevel::policy::cuda::set_columns: " + shape(src) + " into " + shape(dst) +
                                  ": the row counts differ");
    if (src.size() == 0) return;
    BILEVEL_CUDA_CHECK(cudaMemcpy2DAsync(dst.data() + first, dst.cols() * sizeof(scalar), src.data(),
                                         src.cols() * sizeof(scalar), src.cols() * sizeof(scalar), src.rows(),
                                         cudaMemcpyDeviceToDevice, cuda_detail::stream()));
  }
  /// out = m's rows [first, first + n): one contiguous copy on the stream (row-major).
  static void row_block(const matrix& m, std::size_t first, std::size_t n, matrix& out) {
    require_rows(m, first, n, "row_block");
    out.resize(n, m.cols());
    device_copy(out.data(), m.data() + first * m.cols(), n * m.cols());
  }
  /// dst's rows [first, first + src.rows) = src (same columns).
  static void set_row_block(const matrix& src, matrix& dst, std::size_t first) {
    require_rows(dst, first, src.rows(), "set_row_block");
    if (src.cols() != dst.cols())
      throw std::invalid_argument("bilevel::policy::cuda::set_row_block: " + shape(src) + " into " + shape(dst) +
                                  ": the column counts differ");
    device_copy(dst.data() + first * dst.cols(), src.data(), src.size());
  }
  /// Row-wise softmax, stable (the row maximum is subtracted first).
  static void row_softmax(const matrix& z, matrix& p) {
    if (&z == &p) {
      matrix tmp;
      row_softmax(z, tmp);
      p = std::move(tmp);
      return;
    }
    p.resize(z.rows(), z.cols());
    if (z.size() == 0) return;
    cuda_detail::row_softmax_kernel<<<cuda_detail::row_blocks_for(z.rows()), cuda_detail::threads_per_block, 0,
                                      cuda_detail::stream()>>>(z.rows(), z.cols(), z.data(), p.data());
    cuda_detail::check_launch("row_softmax_kernel");
  }
  /// Row-wise log-sum-exp.
  static void row_logsumexp(const matrix& z, vector& out) {
    out.resize(z.rows());
    if (z.rows() == 0) return;
    cuda_detail::row_logsumexp_kernel<<<cuda_detail::row_blocks_for(z.rows()), cuda_detail::threads_per_block, 0,
                                        cuda_detail::stream()>>>(z.rows(), z.cols(), z.data(), out.data());
    cuda_detail::check_launch("row_logsumexp_kernel");
  }
  /// A cross-entropy head in one kernel: mass_i = Σ t_i, losses_i = mass_i·lse(z_i) − ⟨t_i, z_i⟩,
  /// d = diag(mass)·softmax(z) − t (policy/detail/fused_maps.hpp has the host loop).
  static void softmax_cross_entropy(const matrix& z, const matrix& t, vector& mass, vector& losses, matrix& d) {
    if (t.rows() != z.rows() || t.cols() != z.cols())
      throw std::invalid_argument("bilevel::policy::cuda::softmax_cross_entropy: logits " + shape(z) + " and targets " +
                                  shape(t) + " differ in shape");
    mass.resize(z.rows());
    losses.resize(z.rows());
    d.resize(z.rows(), z.cols());
    if (z.rows() == 0) return;
    cuda_detail::softmax_cross_entropy_kernel<<<cuda_detail::row_blocks_for(z.rows()), cuda_detail::threads_per_block,
                                                0, cuda_detail::stream()>>>(z.rows(), z.cols(), z.data(), t.data(),
                                                                            mass.data(), losses.data(), d.data());
    cuda_detail::check_launch("softmax_cross_entropy_kernel");
  }
  /// Its tangent along ż, weighted: g_i = factor·w_i·mass_i·(p_i ⊙ ż_i − p_i·⟨p_i, ż_i⟩).
  static void softmax_cross_entropy_tangent(const matrix& z, const matrix& z_dot, const vector& mass, const vector& w,
                                            scalar factor, matrix& g) {
    const char* op = "bilevel::policy::cuda::softmax_cross_entropy_tangent: ";
    if (z_dot.rows() != z.rows() || z_dot.cols() != z.cols())
      throw std::invalid_argument(op + ("logits " + shape(z) + " and their tangent " + shape(z_dot)) +
                                  " differ in shape");
    if (mass.size() != z.rows() || w.size() != z.rows())
      throw std::invalid_argument(op + std::to_string(z.rows()) + " rows, " + std::to_string(mass.size()) +
                                  " target masses and " + std::to_string(w.size()) + " weights");
    if (&g == &z || &g == &z_dot) throw std::invalid_argument(op + std::string("the output is an input"));
    g.resize(z.rows(), z.cols());
    if (z.rows() == 0) return;
    cuda_detail::softmax_cross_entropy_tangent_kernel<<<cuda_detail::row_blocks_for(z.rows()),
                                                        cuda_detail::threads_per_block, 0, cuda_detail::stream()>>>(
        z.rows(), z.cols(), z.data(), z_dot.data(), mass.data(), w.data(), factor, g.data());
    cuda_detail::check_launch("softmax_cross_entropy_tangent_kernel");
  }
  /// f(a_i, b_i, ...) over vectors of one length, in one kernel: a non-const vector reaches f
  /// by reference (f writes it), a const one by value. f must run on the device (an extended
  /// lambda or a tagged functor, core/elementwise.hpp); there is no host fallback.
  template <class F, class... V>
    requires(sizeof...(V) > 0 && (std::is_same_v<std::remove_const_t<V>, vector> && ...))
  static void zip_apply(F f, V&... v) {
    using map = cuda_detail::device_map<F>;
    static_assert(map::on_device,
                  "bilevel::policy::cuda::zip_apply: this functor cannot run on the device (make it an extended "
                  "__host__ __device__ lambda, or tag a functor struct with 'using bilevel_device_callable = void;')");
    const std::size_t n = std::get<0>(std::tie(v...)).size();
    if (((v.size() != n) || ...)) {
      std::string lengths;
      ((lengths += (lengths.empty() ? "" : ", ") + std::to_string(v.size())), ...);
      throw std::invalid_argument("bilevel::policy::cuda::zip_apply: the vectors' lengths differ (" + lengths + ")");
    }
    if (n == 0) return;
    using op = cuda_detail::zip_op<std::decay_t<decltype(map::get(f))>, decltype(v.data())...>;
    cuda_detail::for_each_index(n, op{map::get(f), {v.data()...}}, "zip_apply");
  }
  /// out (r × c) with out_flat[i] = src_flat[index[i]], or 0 where index[i] < 0.
  static void gather(const matrix& src, const std::vector<std::int64_t>& index, std::size_t r, std::size_t c,
                     matrix& out) {
    if (index.size() != r * c)
      throw std::invalid_argument("bilevel::policy::cuda::gather: " + std::to_string(index.size()) +
                                  " indices for a " + std::to_string(r) + "x" + std::to_string(c) + " result");
    auto& plan = cuda_detail::plan_cache::get().find(index);
    if (plan.max_index >= std::int64_t(src.size()))
      throw std::invalid_argument("bilevel::policy::cuda::gather: index " + std::to_string(plan.max_index) +
                                  " is out of range for a source of " + std::to_string(src.size()) + " elements");
    if (&src == &out) {
      matrix tmp;
      gather(src, index, r, c, tmp);
      out = std::move(tmp);
      return;
    }
    out.resize(r, c);
    if (index.empty()) return;
    cuda_detail::for_each_index(index.size(),
                                cuda_detail::gather_op<scalar>{plan.index.data(), src.data(), out.data()}, "gather");
  }
  /// out_flat[index[i]] += src_flat[i] for index[i] >= 0 (the adjoint of gather). Each
  /// destination adds its sources in ascending i, as the Eigen policy's loop does.
  static void scatter_add(const matrix& src, const std::vector<std::int64_t>& index, matrix& out) {
    if (index.size() != src.size())
      throw std::invalid_argument("bilevel::policy::cuda::scatter_add: " + std::to_string(index.size()) +
                                  " indices for " + std::to_string(src.size()) + " values");
    auto& cache = cuda_detail::plan_cache::get();
    auto& plan = cache.find(index);
    if (plan.max_index >= std::int64_t(out.size()))
      throw std::invalid_argument("bilevel::policy::cuda::scatter_add: index " + std::to_string(plan.max_index) +
                                  " is out of range for a destination of " + std::to_string(out.size()) +
                                  " elements");
    cache.ensure_inverse(plan);
    if (plan.targets == 0) return;
    cuda_detail::scatter_add_kernel<<<cuda_detail::blocks_for(plan.targets), cuda_detail::threads_per_block, 0,
                                      cuda_detail::stream()>>>(plan.targets, plan.target.data(), plan.offsets.data(),
                                                               plan.sources.data(), src.data(), out.data());
    cuda_detail::check_launch("scatter_add_kernel");
  }
  /// The same elements, row-major, as an r × c matrix.
  static void reshape(const matrix& in, std::size_t r, std::size_t c, matrix& out) {
    if (in.size() != r * c)
      throw std::invalid_argument("bilevel::policy::cuda::reshape: " + shape(in) + " cannot become " +
                                  std::to_string(r) + "x" + std::to_string(c));
    if (&in == &out) {
      out.resize(r, c);  // same number of elements: the data stay
      return;
    }
    out.resize(r, c);
    device_copy(out.data(), in.data(), in.size());
  }
  /// A vector's elements as an r × c matrix, row-major.
  static void reshape(const vector& in, std::size_t r, std::size_t c, matrix& out) {
    if (in.size() != r * c)
      throw std::invalid_argument("bilevel::policy::cuda::reshape: " + std::to_string(in.size()) +
                                  " elements cannot become " + std::to_string(r) + "x" + std::to_string(c));
    out.resize(r, c);
    device_copy(out.data(), in.data(), in.size());
  }
  /// max_i = max_j m_ij and arg_i = the first j attaining it (arg comes back to the host).
  static void row_max(const matrix& m, vector& max, std::vector<std::int64_t>& arg) {
    detail::require_columns_for_max("cuda", "row_max", m.rows(), m.cols());
    max.resize(m.rows());
    arg.resize(m.rows());
    if (m.rows() == 0) return;
    cuda_detail::device_buffer<std::int64_t> args(m.rows());
    cuda_detail::row_max_kernel<<<cuda_detail::row_blocks_for(m.rows()), cuda_detail::threads_per_block, 0,
                                  cuda_detail::stream()>>>(m.rows(), m.cols(), m.data(), max.data(), args.data());
    cuda_detail::check_launch("row_max_kernel");
    read_back(arg.data(), args.data(), m.rows() * sizeof(std::int64_t));
  }
  /// max_i = max_j m_ij and onehot (m's shape) = 1 at each row's first maximum, 0 elsewhere:
  /// row_max with the choice kept on the device.
  static void row_max_onehot(const matrix& m, vector& max, matrix& onehot) {
    detail::require_columns_for_max("cuda", "row_max_onehot", m.rows(), m.cols());
    max.resize(m.rows());
    onehot.resize(m.rows(), m.cols());
    if (m.rows() == 0 || m.cols() == 0) return;
    cuda_detail::device_buffer<std::int64_t> args(m.rows());
    cuda_detail::row_max_kernel<<<cuda_detail::row_blocks_for(m.rows()), cuda_detail::threads_per_block, 0,
                                  cuda_detail::stream()>>>(m.rows(), m.cols(), m.data(), max.data(), args.data());
    cuda_detail::check_launch("row_max_kernel");
    cuda_detail::for_each_index(m.size(), cuda_detail::onehot_op<scalar>{m.cols(), args.data(), onehot.data()},
                                "row_max_onehot");
  }
  /// The per-sample gather (see the Eigen policy): one sample's map, cached on the device as
  /// gather's are, serves the whole batch.
  static void gather_per_sample(const matrix& src, const std::vector<std::int64_t>& index, std::size_t batch,
                                std::size_t r, std::size_t c, matrix& out) {
    const std::size_t block = detail::per_sample_block("cuda", "gather_per_sample", src.size(), index, batch, r * c);
    auto& plan = cuda_detail::plan_cache::get().find(index);
    detail::require_inside_sample("cuda", "gather_per_sample", plan.max_index, block);
    if (&src == &out) {
      matrix tmp;
      gather_per_sample(src, index, batch, r, c, tmp);
      out = std::move(tmp);
      return;
    }
    out.resize(batch * r, c);
    if (out.size() == 0) return;
    cuda_detail::for_each_index(
        out.size(), cuda_detail::gather_per_sample_op<scalar>{index.size(), block, plan.index.data(), src.data(), out.data()},
        "gather_per_sample");
  }
  /// Its adjoint: block b of out += block b of src scattered through the map.
  static void scatter_add_per_sample(const matrix& src, const std::vector<std::int64_t>& index, std::size_t batch,
                                     matrix& out) {
    detail::require_samples_of("cuda", "scatter_add_per_sample", src.size(), batch, index.size());
    const std::size_t block =
        detail::per_sample_block("cuda", "scatter_add_per_sample", out.size(), index, batch, index.size());
    auto& cache = cuda_detail::plan_cache::get();
    auto& plan = cache.find(index);
    detail::require_inside_sample("cuda", "scatter_add_per_sample", plan.max_index, block);
    cache.ensure_inverse(plan);
    if (plan.targets == 0) return;
    const std::size_t total = batch * plan.targets;
    cuda_detail::scatter_add_per_sample_kernel<<<cuda_detail::blocks_for(total), cuda_detail::threads_per_block, 0,
                                                 cuda_detail::stream()>>>(
        total, plan.targets, index.size(), block, plan.target.data(), plan.offsets.data(), plan.sources.data(),
        src.data(), out.data());
    cuda_detail::check_launch("scatter_add_per_sample_kernel");
  }
  /// Max pooling's value pass (policy/detail/window_max.hpp): y ((batch · out_pixels) × C) =
  /// each window's first maximum over the tap map (cached on the device as gather's maps
  /// are; −1: padding, never selected), argmax = its position in x, one thread per output.
  static void window_max_per_sample(const matrix& x, const std::vector<std::int64_t>& index, std::size_t batch,
                                    std::size_t taps, matrix& y, index_vector& argmax) {
    if (&x == &y) {
      matrix tmp;
      window_max_per_sample(x, index, batch, taps, tmp, argmax);
      y = std::move(tmp);
      return;
    }
    const std::size_t out_pixels = taps ? index.size() / taps : 0, C = x.cols();
    const std::size_t in_pixels = detail::window_max_shapes("cuda", "window_max_per_sample", x.rows(), C,
                                                            batch * out_pixels, C, index, taps, batch);
    y.resize(batch * out_pixels, C);
    argmax.resize(y.size());
    if (y.size() == 0) return;
    auto& plan = cuda_detail::plan_cache::get().find(index);
    cuda_detail::window_max_kernel<<<cuda_detail::blocks_for(y.size()), cuda_detail::threads_per_block, 0,
                                     cuda_detail::stream()>>>(y.size(), out_pixels, in_pixels, C, taps,
                                                              plan.index.data(), x.data(), y.data(), argmax.data());
    cuda_detail::check_launch("window_max_kernel");
  }
  /// Its adjoint at the selection, gx[argmax[o]] += gy[o]: a gather over the tap map's inverse
  /// (one thread per input element, outputs in ascending order), deterministic and in the
  /// Eigen policy's order of additions, instead of atomics.
  static void window_max_adjoint_per_sample(const matrix& gy, const std::vector<std::int64_t>& index,
                                            std::size_t batch, std::size_t taps, const index_vector& argmax,
                                            matrix& gx) {
    const char* op = "window_max_adjoint_per_sample";
    const std::size_t C = gx.cols(), in_pixels = detail::window_max_shapes("cuda", op, gx.rows(), C, gy.rows(),
                                                                           gy.cols(), index, taps, batch);
    detail::require_selection_of("cuda", op, argmax.size(), gy.size());
    auto& cache = cuda_detail::plan_cache::get();
    auto& plan = cache.find(index);
    cache.ensure_inverse(plan);
    const std::size_t total = batch * plan.targets * C;
    if (total == 0) return;
    cuda_detail::window_max_adjoint_kernel<<<cuda_detail::blocks_for(total), cuda_detail::threads_per_block, 0,
                                             cuda_detail::stream()>>>(
        total, plan.targets, C, taps, index.size() / taps, in_pixels, plan.target.data(), plan.offsets.data(),
        plan.sources.data(), argmax.data(), gy.data(), gx.data());
    cuda_detail::check_launch("window_max_adjoint_kernel");
  }
  /// Its tangent: y_dot (x_dot's columns, one element per selected one) = x_dot at the selection.
  static void window_max_tangent(const matrix& x_dot, const index_vector& argmax, matrix& y_dot) {
    const std::size_t C = x_dot.cols();
    if (C == 0 || argmax.size() % C != 0)
      throw std::invalid_argument("bilevel::policy::cuda::window_max_tangent: a selection of " +
                                  std::to_string(argmax.size()) + " outputs is not rows of " + std::to_string(C) +
                                  " channels");
    if (&x_dot == &y_dot) {
      matrix tmp;
      window_max_tangent(x_dot, argmax, tmp);
      y_dot = std::move(tmp);
      return;
    }
    y_dot.resize(argmax.size() / C, C);
    if (argmax.empty()) return;
    cuda_detail::for_each_index(argmax.size(),
                                cuda_detail::gather_op<scalar>{argmax.data(), x_dot.data(), y_dot.data()},
                                "window_max_tangent");
  }
  /// A selection read back to the host (waits for it).
  static std::vector<std::int64_t> indices_to_host(const index_vector& i) {
    std::vector<std::int64_t> h(i.size());
    if (h.empty()) return h;
    read_back(h.data(), i.data(), h.size() * sizeof(std::int64_t));
    return h;
  }
  /// out_i = Σ_j m_ij.
  static void row_sums(const matrix& m, vector& out) {
    out.resize(m.rows());
    if (m.rows() == 0) return;
    cuda_detail::row_sums_kernel<<<cuda_detail::row_blocks_for(m.rows()), cuda_detail::threads_per_block, 0,
                                   cuda_detail::stream()>>>(m.rows(), m.cols(), m.data(), out.data());
    cuda_detail::check_launch("row_sums_kernel");
  }

  /// Exact equality (shape and every element; NaN equals nothing).
  static bool equal(const vector& a, const vector& b) {
    return a.size() == b.size() && same_elements(a.data(), b.data(), a.size());
  }
  static bool equal(const matrix& a, const matrix& b) {
    return a.rows() == b.rows() && a.cols() == b.cols() && same_elements(a.data(), b.data(), a.size());
  }

  // ---- host transfer ----

  static std::vector<scalar> to_host(const vector& v) {
    ++cuda_detail::array_download_counter();
    return download(v.data(), v.size());
  }
  static std::vector<scalar> matrix_to_host(const matrix& m) {
    ++cuda_detail::array_download_counter();
    return download(m.data(), m.size());
  }
  /// How many to_host / matrix_to_host calls so far (all threads, both scalars): the
  /// device-to-host copies of whole arrays, which a training step should not need (its
  /// scalar results, losses and dot products, are not counted).
  static std::size_t array_downloads() { return cuda_detail::array_download_counter().load(); }
  /// Kernels launched, cuBLAS calls made, host waits and graphs launched so far (all threads;
  /// cuda/error.cuh). cuBLAS's double dot and norm return to the host by themselves (host
  /// pointer mode): they count as cuBLAS calls and as waits.
  static cuda_detail::activity_counts activity() {
    const auto& a = cuda_detail::activity();
    return {a.kernels.load(), a.blas_calls.load(), a.host_waits.load(), a.graph_launches.load()};
  }
  static vector from_host(std::span<const scalar> host) {
    vector v(host.size());
    upload(host, v.data());
    return v;
  }
  static matrix matrix_from_host(std::size_t r, std::size_t c, std::span<const scalar> host) {
    if (host.size() != r * c)
      throw std::invalid_argument("bilevel::policy::cuda::matrix_from_host: " + std::to_string(host.size()) +
                                  " values cannot fill a " + std::to_string(r) + "x" + std::to_string(c) + " matrix");
    matrix m(r, c);
    upload(host, m.data());
    return m;
  }

  /// Waits for all work this thread has queued (e.g. before timing); reports asynchronous
  /// faults as cuda_error.
  static void synchronize() { cuda_detail::wait_for(cuda_detail::stream()); }

 private:
  static cublasHandle_t blas() { return cuda_detail::context::get().blas(); }

  /// At least n ones on the device: a per-thread buffer, grown (and refilled) on demand.
  static const scalar* ones(std::size_t n) {
    thread_local cuda_detail::device_buffer<scalar> buffer;
    thread_local std::uint64_t seen_discarded = 0;
    if (cuda_detail::capture_discarded_since(seen_discarded)) buffer = {};  // its queued fill never ran
    if (buffer.size() < n) {
      buffer.resize(n);
      fill(buffer.data(), n, scalar(1));
    }
    return buffer.data();
  }
  static void zero(scalar* p, std::size_t n) {
    if (n) BILEVEL_CUDA_CHECK(cudaMemsetAsync(p, 0, n * sizeof(scalar), cuda_detail::stream()));
  }
  static void require_columns(const matrix& m, std::size_t first, std::size_t n, const char* op) {
    if (first + n > m.cols())
      throw std::invalid_argument(std::string("bilevel::policy::cuda::") + op + ": columns [" + std::to_string(first) +
                                  ", " + std::to_string(first + n) + ") exceed a " + shape(m) + " matrix");
  }
  static void require_rows(const matrix& m, std::size_t first, std::size_t n, const char* op) {
    if (first + n > m.rows())
      throw std::invalid_argument(std::string("bilevel::policy::cuda::") + op + ": rows [" + std::to_string(first) +
                                  ", " + std::to_string(first + n) + ") exceed a " + shape(m) + " matrix");
  }
  static void device_copy(scalar* dst, const scalar* src, std::size_t n) {
    if (n && dst != src)
      BILEVEL_CUDA_CHECK(cudaMemcpyAsync(dst, src, n * sizeof(scalar), cudaMemcpyDeviceToDevice, cuda_detail::stream()));
  }
  static void fill(scalar* p, std::size_t n, scalar s) {
    if (n == 0) return;
    cuda_detail::for_each_index(n, cuda_detail::fill_op<scalar>{p, s}, "fill");
  }
  static std::vector<scalar> download(const scalar* p, std::size_t n) {
    std::vector<scalar> h(n);
    if (n == 0) return h;
    read_back(h.data(), p, n * sizeof(scalar));
    return h;
  }
  /// Queued, not waited for: `host` is staged in pinned memory first (cuda/upload_staging.cuh),
  /// so it may go away right after.
  static void upload(std::span<const scalar> host, scalar* p) {
    cuda_detail::copy_to_device(p, host.data(), host.size() * sizeof(scalar));
  }
  template <class F>
  static void launch_map2(std::size_t n, const scalar* x, const scalar* y, scalar* out, F f) {
    if (n == 0) return;
    cuda_detail::for_each_index(n, cuda_detail::map2_op<scalar, F>{x, y, out, f}, "transform");
  }

  static void blas_axpy(std::size_t n, scalar a, const scalar* x, scalar* y) {
    if (n == 0) return;
    if constexpr (std::is_same_v<scalar, float>)
      BILEVEL_CUDA_CHECK(cublasSaxpy_64(blas(), std::int64_t(n), &a, x, 1, y, 1));
    else
      BILEVEL_CUDA_CHECK(cublasDaxpy_64(blas(), std::int64_t(n), &a, x, 1, y, 1));
  }
  static void blas_scal(std::size_t n, scalar s, scalar* x) {
    if (n == 0) return;
    if constexpr (std::is_same_v<scalar, float>)
      BILEVEL_CUDA_CHECK(cublasSscal_64(blas(), std::int64_t(n), &s, x, 1));
    else
      BILEVEL_CUDA_CHECK(cublasDscal_64(blas(), std::int64_t(n), &s, x, 1));
  }

  /// C (row-major m × n at c) = alpha op(A) op(B) + beta C. Row-major storage read
  /// column-major is the transpose, so cuBLAS computes Cᵀ = op(B)ᵀ op(A)ᵀ: B first, the
  /// transpose flags as given. With beta == 0 cuBLAS does not read C (no 0·NaN).
  static void product(scalar alpha, const matrix& a, bool trans_a, const matrix& b, bool trans_b, scalar beta,
                      scalar* c) {
    product(alpha, a, trans_a, b.data(), b.rows(), b.cols(), trans_b, beta, c);
  }
  /// The same with B the b_rows × b_cols row-major matrix at b (device memory).
  static void product(scalar alpha, const matrix& a, bool trans_a, const scalar* b, std::size_t b_rows,
                      std::size_t b_cols, bool trans_b, scalar beta, scalar* c) {
    const std::size_t m = trans_a ? a.cols() : a.rows(), k = trans_a ? a.rows() : a.cols();
    const std::size_t n = trans_b ? b_rows : b_cols;
    if (m == 0 || n == 0) return;
    if (k == 0) {
      if (beta == scalar(0)) zero(c, m * n);
      else blas_scal(m * n, beta, c);
      return;
    }
    const auto op_a = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, op_b = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    const auto M = std::int64_t(n), N = std::int64_t(m), K = std::int64_t(k);
    const auto ldb = std::int64_t(b_cols), lda = std::int64_t(a.cols()), ldc = std::int64_t(n);
    if constexpr (std::is_same_v<scalar, float>) {
      if (const gemm_precision p = current_gemm_precision(); p != gemm_precision::full) {
        // Reduced-precision inputs, FP32 storage and accumulation: another compute type.
        const cublasComputeType_t compute =
            p == gemm_precision::tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F_FAST_16BF;
        BILEVEL_CUDA_CHECK(cublasGemmEx_64(blas(), op_b, op_a, M, N, K, &alpha, b, CUDA_R_32F, ldb, a.data(),
                                           CUDA_R_32F, lda, &beta, c, CUDA_R_32F, ldc, compute, CUBLAS_GEMM_DEFAULT));
        return;
      }
      BILEVEL_CUDA_CHECK(cublasSgemm_64(blas(), op_b, op_a, M, N, K, &alpha, b, ldb, a.data(), lda, &beta, c, ldc));
    } else {
      BILEVEL_CUDA_CHECK(cublasDgemm_64(blas(), op_b, op_a, M, N, K, &alpha, b, ldb, a.data(), lda, &beta, c, ldc));
    }
  }

  /// Σ term(i) for i < n in double, read back: one kernel (cuda/kernels.cuh: reduce_kernel), a
  /// copy and a wait.
  template <class Term>
  static double reduce(std::size_t n, Term term) {
    double* result = cuda_detail::context::get().total_slot();
    reduce_into(n, term, cuda_detail::store_total{result});
    double r = 0.0;
    read_back(&r, result, sizeof(double));
    return r;
  }
  /// finish(Σ term(i)) on the device, the sum in double in an order fixed by n: one kernel.
  template <class Term, class Finish>
  static void reduce_into(std::size_t n, Term term, Finish finish) {
    auto& ctx = cuda_detail::context::get();
    const unsigned blocks = std::min(cuda_detail::blocks_for(n), cuda_detail::context::max_reduce_blocks);
    cuda_detail::reduce_kernel<<<blocks, cuda_detail::threads_per_block, 0, cuda_detail::stream()>>>(
        n, term, ctx.partials(), ctx.ticket(), finish);
    cuda_detail::check_launch("reduce_kernel");
  }
  /// Clears the context's flag, runs `launch(flag)`, returns whether a kernel set it.
  template <class Launch>
  static bool flag_kernel(Launch launch, const char* name) {
    int* flag = cuda_detail::context::get().flag();
    BILEVEL_CUDA_CHECK(cudaMemsetAsync(flag, 0, sizeof(int), cuda_detail::stream()));
    launch(flag);
    cuda_detail::check_launch(name);
    int h = 0;
    read_back(&h, flag, sizeof(int));
    return h != 0;
  }
  /// host[0, bytes) = the device's src[0, bytes), waited for. The wait is noted before the copy
  /// is queued, so that inside a captured step the read throws its explanation
  /// (cuda_detail::note_host_wait) before the runtime sees a copy it would reject.
  static void read_back(void* host, const void* src, std::size_t bytes) {
    cuda_detail::note_host_wait();
    BILEVEL_CUDA_CHECK(cudaMemcpyAsync(host, src, bytes, cudaMemcpyDeviceToHost, cuda_detail::stream()));
    cuda_detail::wait_noted(cuda_detail::stream());
  }
  static bool same_elements(const scalar* a, const scalar* b, std::size_t n) {
    if (n == 0) return true;
    return !flag_kernel([&](int* flag) {
      cuda_detail::differ_kernel<<<cuda_detail::blocks_for(n), cuda_detail::threads_per_block, 0,
                                   cuda_detail::stream()>>>(n, a, b, flag);
    }, "differ_kernel");
  }

  /// out takes x's shape (its contents are then overwritten).
  static void shape_like(const vector& x, vector& out) { out.resize(x.size()); }
  static void shape_like(const matrix& x, matrix& out) { out.resize(x.rows(), x.cols()); }

  static std::string shape(const matrix& m) { return std::to_string(m.rows()) + "x" + std::to_string(m.cols()); }
  static void require_same_shape(const matrix& x, const matrix& y, const char* op) {
    if (x.rows() != y.rows() || x.cols() != y.cols())
      throw std::invalid_argument(std::string("bilevel::policy::cuda::") + op + ": matrix shapes differ (" + shape(x) +
                                  " vs " + shape(y) + ")");
  }
  static void require_same_shape(const vector& x, const vector& y, const char* op) { require_same_size(x, y, op); }
  static void require_range(const vector& v, std::size_t offset, std::size_t n, const char* op) {
    if (offset + n > v.size())
      throw std::invalid_argument(std::string("bilevel::policy::cuda::") + op + ": range [" + std::to_string(offset) +
                                  ", " + std::to_string(offset + n) + ") exceeds a vector of " +
                                  std::to_string(v.size()) + " elements");
  }
  static void require_same_size(const vector& x, const vector& y, const char* op) {
    if (x.size() != y.size())
      throw std::invalid_argument(std::string("bilevel::policy::cuda::") + op + ": vector sizes differ (" +
                                  std::to_string(x.size()) + " vs " + std::to_string(y.size()) + ")");
  }
};

static_assert(nn_tensor_policy<cuda<double>>);
static_assert(nn_tensor_policy<cuda<float>>);

}  // namespace bilevel::policy
