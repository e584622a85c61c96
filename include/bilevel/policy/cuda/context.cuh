// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// The CUDA policy's per-thread state and device memory.
///
/// Every host thread that uses the policy gets, at its first call that touches the device,
/// a context: the device current on that thread, a cuBLAS handle bound to the thread's
/// current stream, and scratch for reductions. The current stream is the thread's default
/// stream (cudaStreamPerThread) unless a cuda_stream_scope has bound another (a solver binds
/// its own, cuda/stream.cuh). All work of the thread is ordered on its current stream, and
/// changing streams orders the new one after the old, so results are ready whenever a value
/// comes back to the host (to_host, dot, norm, sum, all_finite, equal synchronise the
/// stream). Device arrays are therefore owned by the thread that made them: share policy
/// objects between threads only with your own synchronisation (as with the learners' caches).
///
/// Memory is plain device memory (never managed): stream-ordered cudaMallocAsync /
/// cudaFreeAsync on the thread's stream where the device supports memory pools (every GPU
/// since Pascal on Linux), so that the many short-lived temporaries of a forward or backward
/// pass neither synchronise the device nor go back to the driver each time; cudaMalloc /
/// cudaFree otherwise, or everywhere when BILEVEL_CUDA_PLAIN_MALLOC is defined. While a step
/// is captured as a graph, allocations, frees and uploads go where cuda/graph_memory.cuh says.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>

#include "bilevel/policy/cuda/error.cuh"
#include "bilevel/policy/cuda/graph_memory.cuh"
#include "bilevel/policy/cuda/upload_staging.cuh"

namespace bilevel::policy {

/// Number of CUDA devices the runtime sees; 0 when there is none or the driver cannot be
/// used (the reason is then in `why`, when given). Never throws.
inline int cuda_device_count(std::string* why = nullptr) {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    if (why) *why = std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e);
    (void)cudaGetLastError();  // not sticky, but do not leave it for the next check
    return 0;
  }
  if (n == 0 && why) *why = "the runtime reports 0 devices";
  return n;
}

}  // namespace bilevel::policy

namespace bilevel::policy::cuda_detail {

/// The stream this thread's operations are queued on: the thread's default stream
/// (cudaStreamPerThread), or the one a cuda_stream_scope has bound (cuda/stream.cuh).
inline cudaStream_t& current_stream() noexcept {
  thread_local cudaStream_t s = cudaStreamPerThread;
  return s;
}
/// The stream every operation of this thread is ordered on.
inline cudaStream_t stream() noexcept { return current_stream(); }

/// 1: stream-ordered allocation, 0: cudaMalloc/cudaFree, -1: not decided yet (no context).
inline std::atomic<int>& allocation_mode() {
  static std::atomic<int> mode{-1};
  return mode;
}

class context {
 public:
  /// This thread's context; the first call checks for a device and throws cuda_error
  /// ("no CUDA device ...") when there is none.
  static context& get() {
    thread_local context c;
    return c;
  }
  context(const context&) = delete;
  context& operator=(const context&) = delete;

  [[nodiscard]] cublasHandle_t blas() const noexcept { return blas_; }
  [[nodiscard]] int device() const noexcept { return device_; }
  /// Device scratch of reductions: one partial sum per block (max_reduce_blocks of them)...
  [[nodiscard]] double* partials() const noexcept { return partials_; }
  /// ...followed by the slot of a total to be read back.
  [[nodiscard]] double* total_slot() const noexcept { return partials_ + max_reduce_blocks; }
  /// The reductions' ticket counter (cuda/kernels.cuh: reduce_kernel), 0 between reductions.
  [[nodiscard]] unsigned* ticket() const noexcept { return ticket_; }
  [[nodiscard]] int* flag() const noexcept { return flag_; }
  /// An event for ordering one stream after another (cuda_stream_scope); reusable at once,
  /// since a wait takes the state of the event's last record at the time of the call.
  [[nodiscard]] cudaEvent_t order_event() const noexcept { return order_event_; }
  /// Binds the cuBLAS handle to stream s with the context's own workspace. cuBLAS's default
  /// workspace comes from a pool it may grow at a call, which a captured step cannot hold,
  /// and cublasSetStream resets the workspace to it: so every binding sets ours again, and
  /// plain and captured steps run the same GEMM algorithms (the same bits). One workspace per
  /// thread is enough: a thread's streams are ordered one after another (cuda/stream.cuh).
  void bind(cudaStream_t s) const {
    BILEVEL_CUDA_CHECK(cublasSetStream(blas_, s));
    BILEVEL_CUDA_CHECK(cublasSetWorkspace(blas_, workspace_, workspace_bytes_));
  }
  /// bind() for destructors: errors ignored.
  void bind_noexcept(cudaStream_t s) const noexcept {
    (void)cublasSetStream(blas_, s);
    (void)cublasSetWorkspace(blas_, workspace_, workspace_bytes_);
  }
  static constexpr unsigned max_reduce_blocks = 1024;

  ~context() {
    // Errors are ignored here: at process exit the runtime may already be shutting down.
    if (order_event_) (void)cudaEventDestroy(order_event_);
    if (partials_) (void)cudaFree(partials_);
    if (flag_) (void)cudaFree(flag_);
    if (ticket_) (void)cudaFree(ticket_);
    if (workspace_) (void)cudaFree(workspace_);
    if (blas_) (void)cublasDestroy(blas_);
  }

 private:
  context() {
    std::string why;
    if (cuda_device_count(&why) == 0)
      throw cuda_error("bilevel::cuda: no CUDA device (cudaGetDeviceCount: " + why +
                           "); the CUDA tensor policy needs a GPU and a working driver",
                       int(cudaErrorNoDevice));
    BILEVEL_CUDA_CHECK(cudaGetDevice(&device_));
    int pools = 0;
    BILEVEL_CUDA_CHECK(cudaDeviceGetAttribute(&pools, cudaDevAttrMemoryPoolsSupported, device_));
#ifdef BILEVEL_CUDA_PLAIN_MALLOC
    pools = 0;
#endif
    if (pools) {
      // Keep freed blocks in the pool across synchronisations instead of returning them to
      // the driver at each one (the default threshold 0 would).
      cudaMemPool_t pool;
      BILEVEL_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, device_));
      std::uint64_t keep = ~std::uint64_t(0);
      BILEVEL_CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep));
    }
    int expected = -1;
    allocation_mode().compare_exchange_strong(expected, pools ? 1 : 0);
    BILEVEL_CUDA_CHECK(cublasCreate(&blas_));
    // cuBLAS's advice: 32 MiB of workspace on Hopper and later, 4 MiB before.
    int major = 0;
    BILEVEL_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device_));
    workspace_bytes_ = std::size_t(major >= 9 ? 32 : 4) << 20;
    BILEVEL_CUDA_CHECK(cudaMalloc(&workspace_, workspace_bytes_));
    bind(stream());
    BILEVEL_CUDA_CHECK(cublasSetPointerMode(blas_, CUBLAS_POINTER_MODE_HOST));
    // Full FP32/FP64 arithmetic: no TF32 tensor-core rounding of float GEMMs.
    BILEVEL_CUDA_CHECK(cublasSetMathMode(blas_, CUBLAS_DEFAULT_MATH));
    BILEVEL_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&partials_), (max_reduce_blocks + 1) * sizeof(double)));
    BILEVEL_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&flag_), sizeof(int)));
    BILEVEL_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&ticket_), sizeof(unsigned)));
    // Zeroed on a stream of its own and waited for: on the current stream, which an
    // application may be capturing, the memset would become a graph node and never run.
    {
      cudaStream_t side = nullptr;
      BILEVEL_CUDA_CHECK(cudaStreamCreateWithFlags(&side, cudaStreamNonBlocking));
      const cudaError_t zeroed = cudaMemsetAsync(ticket_, 0, sizeof(unsigned), side);
      const cudaError_t waited = cudaStreamSynchronize(side);
      (void)cudaStreamDestroy(side);
      BILEVEL_CUDA_CHECK(zeroed);
      BILEVEL_CUDA_CHECK(waited);
    }
    BILEVEL_CUDA_CHECK(cudaEventCreateWithFlags(&order_event_, cudaEventDisableTiming));
  }

  cublasHandle_t blas_ = nullptr;
  int device_ = 0;
  double* partials_ = nullptr;
  int* flag_ = nullptr;
  unsigned* ticket_ = nullptr;
  cudaEvent_t order_event_ = nullptr;
  void* workspace_ = nullptr;
  std::size_t workspace_bytes_ = 0;
};

/// `bytes` of device memory (nullptr for 0 bytes, without touching the device).
inline void* allocate(std::size_t bytes) {
  if (bytes == 0) return nullptr;
  context::get();  // the device check, and the allocation mode
  if (capture_resources* c = active_capture()) return c->pool->allocate(bytes);
  void* p = nullptr;
  const bool async = allocation_mode().load() == 1;
  const cudaError_t e = async ? cudaMallocAsync(&p, bytes, stream()) : cudaMalloc(&p, bytes);
  if (e == cudaErrorMemoryAllocation) {
    (void)cudaGetLastError();
    throw cuda_error("bilevel::cuda: out of device memory allocating " + std::to_string(bytes) + " bytes (" +
                         (async ? "cudaMallocAsync" : "cudaMalloc") + ": " + cudaGetErrorString(e) + ")",
                     int(e));
  }
  if (e != cudaSuccess) throw_cuda(e, async ? "cudaMallocAsync" : "cudaMalloc");
  return p;
}
/// Frees what allocate() returned. Stream-ordered: work already queued on this thread's
/// stream that reads the block runs first. Never throws (destructors call it).
inline void release(void* p) noexcept {
  if (!p) return;
  capture_resources* c = active_capture();
  if (auto pool = capture_block_registry::get().take(p)) {
    if (!c || pool == c->pool) {
      pool->give_back(p, stream());
      return;
    }
    capture_block_registry::get().add(p, std::move(pool));  // another pool's: after the launch
  }
  if (c) {
    c->postponed.push_back(p);  // the graph has not used it yet (cuda/graph_memory.cuh)
    return;
  }
  if (allocation_mode().load() == 1) (void)cudaFreeAsync(p, stream());
  else (void)cudaFree(p);
}

/// Whether stream s is being recorded by a CUDA graph capture that bilevel did not begin (an
/// application's own cudaStreamBeginCapture; bilevel's is active_capture()). A query that
/// fails (the legacy default stream while another thread captures) says no: the copy that
/// follows then reports CUDA's own error.
inline bool captured_by_application(cudaStream_t s) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(s, &status) != cudaSuccess) {
    (void)cudaGetLastError();
    return false;
  }
  return status != cudaStreamCaptureStatusNone;
}

/// dst[0, bytes) = the host's src[0, bytes), queued on this thread's stream; src may go right
/// after: it is staged in pinned memory (the thread's ring, cuda/upload_staging.cuh; inside a
/// capture, the capture's), so that the copy neither waits for the stream nor for itself.
/// Refused inside an application's own capture of the stream: the graph would copy, at every
/// replay, from a region of the ring that later uploads overwrite (a silent wrong input).
inline void copy_to_device(void* dst, const void* src, std::size_t bytes) {
  if (bytes == 0) return;
  if (capture_resources* c = active_capture()) {
    src = c->staging.stage(src, bytes);
  } else {
    if (captured_by_application(stream()))
      throw std::logic_error(
          "bilevel::cuda: an upload to the device while its stream is being captured into a CUDA graph that bilevel "
          "did not begin: the graph would copy from staging memory that later uploads reuse. Capture a solver's "
          "outer steps with solver::capture_steps (it keeps every captured upload's source for the replays), or "
          "make the uploads before the capture begins");
    if (upload_ring::for_thread().copy(dst, src, bytes, stream())) return;
  }
  BILEVEL_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream()));
}

/// An owning, uninitialised device array of n T's. Copies are deep (device to device, on
/// the stream); moves steal.
template <class T>
class device_buffer {
 public:
  device_buffer() = default;
  explicit device_buffer(std::size_t n) : p_(static_cast<T*>(allocate(n * sizeof(T)))), n_(n) {}
  device_buffer(const device_buffer& o) : device_buffer(o.n_) { copy_from(o.p_, n_); }
  device_buffer(device_buffer&& o) noexcept : p_(std::exchange(o.p_, nullptr)), n_(std::exchange(o.n_, 0)) {}
  device_buffer& operator=(const device_buffer& o) {
    if (this == &o) return *this;
    if (n_ != o.n_) {
      device_buffer fresh(o.n_);
      swap(fresh);
    }
    copy_from(o.p_, n_);
    return *this;
  }
  device_buffer& operator=(device_buffer&& o) noexcept {
    if (this != &o) {
      release(p_);
      p_ = std::exchange(o.p_, nullptr);
      n_ = std::exchange(o.n_, 0);
    }
    return *this;
  }
  ~device_buffer() { release(p_); }

  void swap(device_buffer& o) noexcept {
    std::swap(p_, o.p_);
    std::swap(n_, o.n_);
  }
  /// Reallocates (contents lost) when the size changes; keeps the block otherwise.
  void resize(std::size_t n) {
    if (n == n_) return;
    device_buffer fresh(n);
    swap(fresh);
  }
  [[nodiscard]] T* data() noexcept { return p_; }
  [[nodiscard]] const T* data() const noexcept { return p_; }
  [[nodiscard]] std::size_t size() const noexcept { return n_; }
  [[nodiscard]] bool empty() const noexcept { return n_ == 0; }

  /// this[0, n) = the device array src[0, n).
  void copy_from(const T* src, std::size_t n) {
    if (n == 0 || src == p_) return;
    BILEVEL_CUDA_CHECK(cudaMemcpyAsync(p_, src, n * sizeof(T), cudaMemcpyDeviceToDevice, stream()));
  }

 private:
  T* p_ = nullptr;
  std::size_t n_ = 0;
};

}  // namespace bilevel::policy::cuda_detail
