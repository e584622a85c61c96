// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// Memory while a step is captured as a CUDA graph (cuda/graph_capture.cuh): where the
/// step's allocations, frees and host-to-device copies go instead of the plain paths.
///
/// Allocations. A captured cudaMallocAsync would become a graph memory node, whose block
/// exists only while the graph runs and whose address is fixed at capture: a step's
/// allocations that outlive it (new parameter vectors, caches) would then tie each graph to
/// its blocks. Instead a capture takes its blocks from a `capture_pool` of plain device
/// memory owned by the capturing solver: a block freed during the capture goes back to the
/// pool at once (the captured graph is one chain, so later nodes run after every earlier use),
/// a block that outlives the step stays the caller's until it is freed, whenever and on
/// whatever stream: on another stream than the pool's, its return waits for an event recorded
/// there, which the next capture orders its stream after. Identical steps ask for the same
/// sizes in the same order and get the same blocks, so successive graphs differ only in their
/// scalars and update in place.
///
/// Frees of ordinary blocks inside a capture are postponed until the graph is launched (a
/// captured free would free the block at capture time, before the graph has used it).
///
/// Host-to-device copies. A captured copy reads its host source when the graph runs, after
/// the step's host code has returned and its host buffers are gone. Inside a capture the
/// source is therefore first copied into pinned staging memory owned by the capture; a ring
/// of staging sets, each reused once the graph that read it has run (an event), lets the host
/// prepare the next steps while the device runs earlier ones.
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <utility>
#include <vector>

#include "bilevel/policy/cuda/error.cuh"

namespace bilevel::policy::cuda_detail {

class capture_pool;

/// Which pool each live capture block came from: a block may be freed after its solver (and
/// the solver's reference to the pool) is gone, so the map shares ownership of the pool.
class capture_block_registry {
 public:
  static capture_block_registry& get() {
    static capture_block_registry r;
    return r;
  }
  void add(void* p, std::shared_ptr<capture_pool> pool) {
    const std::lock_guard lock(mutex_);
    owner_.emplace(p, std::move(pool));
    live_.fetch_add(1, std::memory_order_relaxed);
  }
  /// The pool that p came from, removed from the map; nullptr when p is not a capture block.
  std::shared_ptr<capture_pool> take(void* p) {
    if (live_.load(std::memory_order_relaxed) == 0) return nullptr;  // no capture ever: no lock
    const std::lock_guard lock(mutex_);
    const auto it = owner_.find(p);
    if (it == owner_.end()) return nullptr;
    auto pool = std::move(it->second);
    owner_.erase(it);
    live_.fetch_sub(1, std::memory_order_relaxed);
    return pool;
  }

 private:
  std::mutex mutex_;
  std::unordered_map<void*, std::shared_ptr<capture_pool>> owner_;
  std::atomic<std::size_t> live_{0};
};

/// Device blocks for the allocations of captured steps (see the file comment).
class capture_pool : public std::enable_shared_from_this<capture_pool> {
 public:
  capture_pool() = default;
  capture_pool(const capture_pool&) = delete;
  capture_pool& operator=(const capture_pool&) = delete;
  ~capture_pool() {
    // Only once no block is out (the registry shares ownership of the pool with every live
    // block); errors are ignored (destructor, possibly at process exit).
    for (auto& [ev, p] : pending_) {
      (void)cudaEventSynchronize(ev);
      (void)cudaEventDestroy(ev);
      free_.emplace(sizes_[p], p);
    }
    for (auto& [size, p] : free_) (void)cudaFree(p);
  }

  /// The stream the pool's captures run on: frees on it need no event.
  void set_home(cudaStream_t s) noexcept { home_ = s; }

  /// A block of at least `bytes`: a free one that fits (at most twice the size), or a new one.
  void* allocate(std::size_t bytes) {
    const std::size_t want = round_up(bytes);
    void* p = nullptr;
    const std::lock_guard lock(mutex_);
    if (auto it = free_.lower_bound(want); it != free_.end() && it->first <= 2 * want) {
      p = it->second;
      free_.erase(it);
    } else {
      // Relaxed-mode capture allows cudaMalloc; it adds nothing to the graph.
      const cudaError_t e = cudaMalloc(&p, want);
      if (e == cudaErrorMemoryAllocation) {
        (void)cudaGetLastError();
        throw cuda_error("bilevel::cuda: out of device memory allocating " + std::to_string(want) +
                             " bytes for a captured step (cudaMalloc: " + cudaGetErrorString(e) + ")",
                         int(e));
      }
      check(e, "cudaMalloc (capture pool)");
      sizes_[p] = want;
    }
    capture_block_registry::get().add(p, shared_from_this());
    return p;
  }

  /// p is free again: at once when freed on the pool's stream or inside one of its captures,
  /// after an event on `current` otherwise.
  void give_back(void* p, cudaStream_t current) noexcept {
    const std::lock_guard lock(mutex_);  // the block may be freed on another thread than the pool's
    if (current == home_ || active_capture()) {
      free_.emplace(sizes_[p], p);
      return;
    }
    cudaEvent_t ev = nullptr;
    if (cudaEventCreateWithFlags(&ev, cudaEventDisableTiming) != cudaSuccess ||
        cudaEventRecord(ev, current) != cudaSuccess) {
      (void)cudaGetLastError();
      if (ev) (void)cudaEventDestroy(ev);
      (void)cudaStreamSynchronize(current);  // cannot throw here: wait instead, still correct
      free_.emplace(sizes_[p], p);
      return;
    }
    pending_.emplace_back(ev, p);
  }

  /// Before a capture on `s`: s waits (on the device) for the blocks freed on other streams,
  /// which are then free for the capture.
  void settle(cudaStream_t s) {
    const std::lock_guard lock(mutex_);
    for (auto& [ev, p] : pending_) {
      check(cudaStreamWaitEvent(s, ev, 0), "cudaStreamWaitEvent (capture pool)");
      (void)cudaEventDestroy(ev);
      free_.emplace(sizes_[p], p);
    }
    pending_.clear();
  }

 private:
  static std::size_t round_up(std::size_t bytes) {
    constexpr std::size_t small = 512, large = std::size_t(1) << 20;
    const std::size_t step = bytes >= 16 * large ? large : small;
    return (bytes + step - 1) / step * step;
  }
  std::mutex mutex_;
  cudaStream_t home_ = nullptr;
  std::multimap<std::size_t, void*> free_;  ///< by size
  std::unordered_map<void*, std::size_t> sizes_;
  std::vector<std::pair<cudaEvent_t, void*>> pending_;
};

/// Pinned host memory that a captured step's uploads read from (see the file comment): a
/// ring of sets, one per graph in flight.
class staging_ring {
 public:
  static constexpr std::size_t sets = 4;
  static constexpr std::size_t min_chunk = std::size_t(1) << 20;
  staging_ring() = default;
  staging_ring(const staging_ring&) = delete;
  staging_ring& operator=(const staging_ring&) = delete;
  ~staging_ring() {
    for (auto& s : ring_) {
      if (s.done) {
        (void)cudaEventSynchronize(s.done);
        (void)cudaEventDestroy(s.done);
      }
      for (auto& c : s.chunks) (void)cudaFreeHost(c.first);
    }
  }

  /// Before a capture: the next set, once the graph that last read it has run (a host wait
  /// only when the host is `sets` steps ahead of the device), with room for what the last
  /// step staged.
  void begin() {
    set& s = ring_[next_];
    if (s.recorded) {
      await_staging(s.done, "the capture's staging event");
      s.recorded = false;
    }
    s.chunk = 0;
    s.offset = 0;
    // Made here, outside the capture, as large as the largest step staged so far (1 MiB at
    // first): inside it, a new chunk is an allocation the relaxed capture mode must let through.
    const std::size_t want = std::max(last_bytes_, min_chunk);
    if (s.chunks.empty() || s.chunks.front().second < want) {
      for (auto& c : s.chunks) (void)cudaFreeHost(c.first);
      s.chunks.clear();
      s.chunks.push_back(new_chunk(want));
    }
    staged_ = 0;
  }
  /// A pinned copy of host[0, bytes), valid until the graph of this capture has run.
  const void* stage(const void* host, std::size_t bytes) {
    set& s = ring_[next_];
    constexpr std::size_t align = 256;
    while (true) {
      if (s.chunk < s.chunks.size()) {
        auto& [base, size] = s.chunks[s.chunk];
        const std::size_t at = (s.offset + align - 1) / align * align;
        if (at + bytes <= size) {
          std::memcpy(base + at, host, bytes);
          s.offset = at + bytes;
          staged_ += bytes + align;
          return base + at;
        }
        ++s.chunk;
        s.offset = 0;
        continue;
      }
      s.chunks.push_back(new_chunk(std::max(bytes + align, min_chunk)));
    }
  }
  /// After the graph's launch on `stream`: the set is in flight until the event.
  void launched(cudaStream_t stream) {
    set& s = ring_[next_];
    if (!s.done) check(cudaEventCreateWithFlags(&s.done, cudaEventDisableTiming), "cudaEventCreateWithFlags");
    check(cudaEventRecord(s.done, stream), "cudaEventRecord (staging)");
    s.recorded = true;
    last_bytes_ = std::max(last_bytes_, staged_);
    next_ = (next_ + 1) % sets;
  }

 private:
  struct set {
    std::vector<std::pair<char*, std::size_t>> chunks;
    std::size_t chunk = 0, offset = 0;
    cudaEvent_t done = nullptr;
    bool recorded = false;
  };
  static std::pair<char*, std::size_t> new_chunk(std::size_t bytes) {
    void* p = nullptr;
    check(cudaHostAlloc(&p, bytes, cudaHostAllocDefault), "cudaHostAlloc (staging)");
    return {static_cast<char*>(p), bytes};
  }
  set ring_[sets];
  std::size_t next_ = 0;
  std::size_t staged_ = 0, last_bytes_ = 0;
};

/// What a capture in progress on this thread uses (cuda_detail::active_capture()): its memory
/// pool, its staging ring for uploads, and the ordinary blocks freed while it lasts.
struct capture_resources {
  std::shared_ptr<capture_pool> pool = std::make_shared<capture_pool>();
  staging_ring staging;
  std::vector<void*> postponed;  ///< ordinary blocks freed during the capture
};

}  // namespace bilevel::policy::cuda_detail
