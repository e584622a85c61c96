// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// Pinned staging of host-to-device copies outside a captured step (inside one, the capture
/// stages them: cuda/graph_memory.cuh).
///
/// A copy from pageable host memory is not reliably asynchronous: CUDA's notes on API
/// synchronisation say the driver may synchronise with the stream to stage it into pinned
/// memory itself, which would put a host wait for all queued work at every upload of a
/// batch, the very wait that deferred checks take out of a step. A copy from pinned memory is
/// queued and returns. So an upload first copies its source on the host into a ring of pinned
/// memory of its thread and queues the copy from there; a region of the ring is written again
/// only once the copy that read it has run (an event per upload), so the host waits only when
/// it has queued a whole ring of uploads that the device has not reached (counted in
/// activity().host_waits; not a read back, so a captured step's probe ignores it). A source larger
/// than a quarter of the ring goes from pageable memory as before.
#include <cuda_runtime.h>

#include <cstddef>
#include <cstring>
#include <deque>
#include <vector>

#include "bilevel/policy/cuda/error.cuh"

namespace bilevel::policy::cuda_detail {

class upload_ring {
 public:
  static constexpr std::size_t capacity = std::size_t(32) << 20;
  static constexpr std::size_t largest = capacity / 4;
  static constexpr std::size_t align = 256;

  /// This thread's ring (its pinned memory is allocated at the first staged upload).
  static upload_ring& for_thread() {
    thread_local upload_ring r;
    return r;
  }
  upload_ring() = default;
  upload_ring(const upload_ring&) = delete;
  upload_ring& operator=(const upload_ring&) = delete;
  ~upload_ring() {
    // A thread's end: let the copies that read the ring finish, then free it. Errors are
    // ignored (at process exit the runtime may be shutting down).
    for (const auto& r : in_flight_) (void)cudaEventSynchronize(r.done);
    for (const auto& r : in_flight_) (void)cudaEventDestroy(r.done);
    for (cudaEvent_t e : spare_) (void)cudaEventDestroy(e);
    if (base_) (void)cudaFreeHost(base_);
  }

  /// Queues dst[0, bytes) = src[0, bytes) on stream s from a pinned copy of src; false (and
  /// nothing queued) when the source is too large for the ring or pinned memory cannot be had,
  /// and the caller copies from pageable memory instead.
  bool copy(void* dst, const void* src, std::size_t bytes, cudaStream_t s) {
    if (bytes > largest || !ready()) return false;
    const std::size_t at = reserve(bytes);
    std::memcpy(base_ + at, src, bytes);
    check(cudaMemcpyAsync(dst, base_ + at, bytes, cudaMemcpyHostToDevice, s), "cudaMemcpyAsync (staged upload)");
    cudaEvent_t done = next_event();
    check(cudaEventRecord(done, s), "cudaEventRecord (staged upload)");
    in_flight_.push_back({at, done});
    // Many small uploads would keep as many events: the oldest that have run go back now.
    if (in_flight_.size() > 64) retire_done();
    return true;
  }

 private:
  struct region {
    std::size_t begin;  ///< where it starts; it ends before the next region's start (or the ring's end)
    cudaEvent_t done;
  };
  bool ready() {
    if (base_ || failed_) return base_ != nullptr;
    void* p = nullptr;
    if (cudaHostAlloc(&p, capacity, cudaHostAllocDefault) != cudaSuccess) {
      (void)cudaGetLastError();  // no pinned memory to be had: pageable copies, as before
      failed_ = true;
      return false;
    }
    base_ = static_cast<char*>(p);
    return true;
  }
  /// The offset of `bytes` free bytes of the ring. Regions still in flight from the ring's
  /// last lap lie at and after head_, oldest first, at the front of in_flight_; this lap's
  /// lie before head_. Wrapping, the last lap's tail must be read first.
  std::size_t reserve(std::size_t bytes) {
    if (head_ + bytes > capacity) {
      while (!in_flight_.empty() && in_flight_.front().begin >= head_) retire_front();
      head_ = 0;
    }
    while (!in_flight_.empty() && in_flight_.front().begin >= head_ && in_flight_.front().begin < head_ + bytes)
      retire_front();
    const std::size_t at = head_;
    head_ = (at + bytes + align - 1) / align * align;
    return at;
  }
  /// Retires the oldest regions whose copies have run, without waiting.
  void retire_done() {
    while (!in_flight_.empty()) {
      if (!staging_done(in_flight_.front().done, "the staged upload's event")) return;
      spare_.push_back(in_flight_.front().done);
      in_flight_.pop_front();
    }
  }
  /// Waits, if it has not happened yet, for the copy that read the oldest region.
  void retire_front() {
    const region r = in_flight_.front();
    in_flight_.pop_front();
    spare_.push_back(r.done);  // reusable whatever the wait throws: a recorded event may be recorded again
    await_staging(r.done, "the staged upload's event");
  }
  cudaEvent_t next_event() {
    if (!spare_.empty()) {
      cudaEvent_t e = spare_.back();
      spare_.pop_back();
      return e;
    }
    cudaEvent_t e = nullptr;
    check(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), "cudaEventCreateWithFlags (staged upload)");
    return e;
  }

  char* base_ = nullptr;
  bool failed_ = false;
  std::size_t head_ = 0;
  std::deque<region> in_flight_;
  std::vector<cudaEvent_t> spare_;
};

}  // namespace bilevel::policy::cuda_detail
