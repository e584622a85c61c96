// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// A stream per solver: `cuda_stream` (an owned or borrowed CUDA stream) and
/// `cuda_stream_scope` (binds one to the calling thread for a scope). They are the CUDA
/// policy's `stream` and `stream_scope` (core/policy_stream.hpp), so every solver on the CUDA
/// policy queues its work on a stream of its own, and an application can hand the solver the
/// stream its other work runs on.
///
/// Ordering. Entering a scope makes the new stream wait (an event, not a host wait) for all
/// the thread queued before on its old stream; leaving it makes the old stream wait for all
/// queued inside. Arrays made outside a scope can therefore be used, and freed, inside it and
/// the other way round (stream-ordered allocation included: a block is freed on the stream
/// current at the free, which is ordered after every use). What the ordering does not give
/// is overlap on one thread: host reads (losses, dot products) wait for the current stream,
/// so two solvers on one thread still take turns; two solvers on two threads run side by
/// side, each on its own stream.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <utility>

#include "bilevel/policy/cuda/context.cuh"
#include "bilevel/policy/cuda/error.cuh"

namespace bilevel::policy {

class cuda_stream {
 public:
  /// A stream of its own, made (non-blocking, on the device current then) at first use, so a
  /// solver can be built and copied without a device.
  cuda_stream() = default;
  /// The caller's stream: used, never destroyed here; the caller keeps it alive.
  static cuda_stream borrow(cudaStream_t s) noexcept {
    cuda_stream b;
    b.stream_ = s;
    b.owned_ = false;
    return b;
  }
  /// A copy is a new stream of its own (a copied solver must not share its original's).
  cuda_stream(const cuda_stream&) noexcept {}
  cuda_stream& operator=(const cuda_stream& o) noexcept {
    if (this != &o) reset();
    return *this;
  }
  cuda_stream(cuda_stream&& o) noexcept
      : stream_(std::exchange(o.stream_, nullptr)), owned_(std::exchange(o.owned_, true)) {}
  cuda_stream& operator=(cuda_stream&& o) noexcept {
    if (this != &o) {
      reset();
      stream_ = std::exchange(o.stream_, nullptr);
      owned_ = std::exchange(o.owned_, true);
    }
    return *this;
  }
  ~cuda_stream() { reset(); }

  /// The stream, made now if this one owns its stream and has none yet.
  [[nodiscard]] cudaStream_t get() {
    if (!stream_ && owned_) {
      cuda_detail::context::get();  // the device check, with its clear message
      BILEVEL_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    }
    return stream_;
  }
  [[nodiscard]] bool owned() const noexcept { return owned_; }
  /// Waits for everything queued on this stream (nothing to wait for before first use).
  void synchronize() {
    if (stream_) cuda_detail::wait_for(stream_);
  }

 private:
  void reset() noexcept {
    // Destroying a stream with work queued is allowed: the work completes, then the stream
    // goes. Errors are ignored (destructors, and at process exit the runtime may be gone).
    if (stream_ && owned_) (void)cudaStreamDestroy(stream_);
    stream_ = nullptr;
    owned_ = true;
  }
  cudaStream_t stream_ = nullptr;  ///< nullptr: none made yet (owned), or the legacy default stream (borrowed)
  bool owned_ = true;
};

/// While it lives, the calling thread's CUDA-policy operations (kernels, cuBLAS, copies,
/// allocations) go to `s`, ordered after what the thread queued before and before what it
/// queues after (see the file comment). Scopes nest; one for the stream already current does
/// nothing. Create and destroy it on the same thread.
class cuda_stream_scope {
 public:
  explicit cuda_stream_scope(cuda_stream& s) : cuda_stream_scope(s.get()) {}
  explicit cuda_stream_scope(cudaStream_t s) : previous_(cuda_detail::current_stream()), bound_(s) {
    if (bound_ == previous_) return;
    const auto& ctx = cuda_detail::context::get();
    order(ctx, previous_, bound_);
    ctx.bind(bound_);
    cuda_detail::current_stream() = bound_;
    active_ = true;
  }
  cuda_stream_scope(const cuda_stream_scope&) = delete;
  cuda_stream_scope& operator=(const cuda_stream_scope&) = delete;
  ~cuda_stream_scope() {
    if (!active_) return;
    // Restored whatever happens; a failure to order the streams here cannot be thrown from a
    // destructor, so the old stream then waits on the host instead (still correct).
    const auto& ctx = cuda_detail::context::get();
    cuda_detail::current_stream() = previous_;
    ctx.bind_noexcept(previous_);
    if (cudaEventRecord(ctx.order_event(), bound_) != cudaSuccess ||
        cudaStreamWaitEvent(previous_, ctx.order_event(), 0) != cudaSuccess) {
      (void)cudaGetLastError();
      (void)cudaStreamSynchronize(bound_);
    }
  }

 private:
  static void order(const cuda_detail::context& ctx, cudaStream_t before, cudaStream_t after) {
    BILEVEL_CUDA_CHECK(cudaEventRecord(ctx.order_event(), before));
    BILEVEL_CUDA_CHECK(cudaStreamWaitEvent(after, ctx.order_event(), 0));
  }
  cudaStream_t previous_;
  cudaStream_t bound_;
  bool active_ = false;
};

}  // namespace bilevel::policy
