// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// bilevel::cuda_error and the checks every CUDA runtime and cuBLAS call of the CUDA policy
/// goes through: a failure throws, naming the call, the error string and the code.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace bilevel {

/// A CUDA runtime or cuBLAS call of the CUDA back end failed: no device, out of device
/// memory, a kernel that could not launch, an asynchronous fault reported at the next
/// synchronisation. `what()` names the call and the error; `code()` is the cudaError_t or
/// cublasStatus_t value (which one `from_cublas()` says).
class cuda_error : public std::runtime_error {
 public:
  cuda_error(const std::string& what, int code, bool from_cublas = false)
      : std::runtime_error(what), code_(code), from_cublas_(from_cublas) {}
  [[nodiscard]] int code() const noexcept { return code_; }
  [[nodiscard]] bool from_cublas() const noexcept { return from_cublas_; }

 private:
  int code_;
  bool from_cublas_;
};

}  // namespace bilevel

namespace bilevel::policy::cuda_detail {

/// What this process has asked of the device, all threads together: kernels launched, cuBLAS
/// calls, and waits of the host for a stream (each value a training step brings back to the
/// host: losses, dot products, finiteness checks, downloads). Read through
/// cuda<S>::activity(); the benchmark reports them per step, since on small networks these
/// counts, not the arithmetic, set the time.
/// Kernels and cuBLAS calls queued while a step is captured (solver::capture_steps) count
/// too, as the calls the host made; `graph_launches` counts the graphs launched in their place.
struct activity_counts {
  std::size_t kernels = 0, blas_calls = 0, host_waits = 0, graph_launches = 0;
};
struct activity_counters {
  std::atomic<std::size_t> kernels{0}, blas_calls{0}, host_waits{0}, graph_launches{0};
};
inline activity_counters& activity() {
  static activity_counters c;
  return c;
}

[[noreturn]] inline void throw_cuda(cudaError_t e, const char* call) {
  throw cuda_error(std::string("bilevel::cuda: ") + call + " failed: " + cudaGetErrorString(e) + " (" +
                       cudaGetErrorName(e) + ")",
                   int(e));
}
inline void check(cudaError_t e, const char* call) {
  if (e != cudaSuccess) throw_cuda(e, call);
}
inline void check(cublasStatus_t s, const char* call) {
  activity().blas_calls.fetch_add(1, std::memory_order_relaxed);
  if (s != CUBLAS_STATUS_SUCCESS)
    throw cuda_error(std::string("bilevel::cuda: ") + call + " failed: " + cublasGetStatusString(s) + " (" +
                         cublasGetStatusName(s) + ")",
                     int(s), true);
}
/// After a kernel launch: launch errors (bad configuration, no kernel image for this GPU).
inline void check_launch(const char* kernel) {
  activity().kernels.fetch_add(1, std::memory_order_relaxed);
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess)
    throw cuda_error(std::string("bilevel::cuda: launching kernel ") + kernel + " failed: " + cudaGetErrorString(e) +
                         " (" + cudaGetErrorName(e) + ")",
                     int(e));
}

}  // namespace bilevel::policy::cuda_detail

namespace bilevel::policy::cuda_detail {
/// This thread's host waits (wait_for): a step that made none can be captured as a graph
/// (core/step_capture.hpp probes with it).
inline std::size_t& thread_host_waits() noexcept {
  thread_local std::size_t n = 0;
  return n;
}
/// What a capture in progress uses (cuda/graph_memory.cuh): where allocations, frees and uploads go.
struct capture_resources;
/// The resources of the capture in progress on this thread (cuda/graph_capture.cuh), or nullptr.
inline capture_resources*& active_capture() noexcept {
  thread_local capture_resources* c = nullptr;
  return c;
}
/// How many of this thread's captures were discarded (aborted, or failed to end or launch).
/// The thread's caches of device data keyed by host values (the index plans, the ones of
/// the column sums) drop what they hold when this changes: what a discarded capture queued
/// into them never ran.
inline std::uint64_t& discarded_captures() noexcept {
  thread_local std::uint64_t n = 0;
  return n;
}
/// Whether a capture of this thread was discarded since a cache last saw the count in `seen`
/// (which is brought up to date): the cache then drops what it holds.
inline bool capture_discarded_since(std::uint64_t& seen) noexcept {
  if (seen == discarded_captures()) return false;
  seen = discarded_captures();
  return true;
}
/// A host wait about to happen (wait_for, or a cuBLAS call that returns a host value), counted
/// in activity().host_waits. Inside a captured step there is nothing to wait for yet: that is
/// an error, named here rather than left to the driver's "operation not permitted when stream
/// is capturing".
inline void note_host_wait() {
  if (active_capture())
    throw std::logic_error(
        "bilevel::cuda: a value is read back on the host inside an outer step being captured as a CUDA graph "
        "(solver::capture_steps); the step's reads changed after its probe step, and its device work is lost: "
        "build the solver anew, load a checkpoint into it (the networks' caches may hold device data that the lost "
        "work never wrote), and run such steps without capture_steps");
  activity().host_waits.fetch_add(1, std::memory_order_relaxed);
  ++thread_host_waits();
}
/// Whether a pinned staging buffer's event has happened, without waiting (the upload rings:
/// cuda/graph_memory.cuh, cuda/upload_staging.cuh); throws on a real error. A query that
/// finds the event pending leaves cudaErrorNotReady as the thread's last error, which the next
/// launch check would report: cleared here.
inline bool staging_done(cudaEvent_t done, const char* what) {
  const cudaError_t q = cudaEventQuery(done);
  if (q == cudaErrorNotReady) {
    (void)cudaGetLastError();
    return false;
  }
  check(q, what);
  return true;
}
/// Waits for a pinned staging buffer's event if it has not happened yet. A real host wait,
/// counted in activity().host_waits, but not in thread_host_waits, which tells a probe step
/// that a value is read back (a captured step stages its uploads in the capture's own ring).
inline void await_staging(cudaEvent_t done, const char* what) {
  if (staging_done(done, what)) return;
  activity().host_waits.fetch_add(1, std::memory_order_relaxed);
  check(cudaEventSynchronize(done), what);
}
/// The waiting half of wait_for, for a read whose wait was noted before its copy was queued.
inline void wait_noted(cudaStream_t s) { check(cudaStreamSynchronize(s), "cudaStreamSynchronize"); }
inline void wait_for(cudaStream_t s) {
  note_host_wait();
  wait_noted(s);
}
}  // namespace bilevel::policy::cuda_detail

/// Checks a cudaError_t or cublasStatus_t expression, naming it in the exception.
#define BILEVEL_CUDA_CHECK(call) ::bilevel::policy::cuda_detail::check((call), #call)
