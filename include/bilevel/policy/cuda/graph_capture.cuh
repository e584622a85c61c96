// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// `cuda_graph_capture`: the CUDA policy's `graph_capture` (core/step_capture.hpp), with
/// which `solver::capture_steps` runs each outer step as one CUDA graph.
///
/// A step is captured from the solver's stream (relaxed mode: the capture pool may call
/// cudaMalloc while it grows), with its allocations, frees and uploads redirected as
/// cuda/graph_memory.cuh says. The captured graph updates the most recently used executable
/// graph with as many nodes in place (cudaGraphExecUpdate: the same nodes, new scalars and
/// addresses), or is instantiated as a new one when no kept graph takes it (the first step, a
/// changed network); up to `kept_graphs` are kept. The graph is
/// then launched on the stream, so it is ordered like the plain launches it replaces.
#include <cuda_runtime.h>

#include <cstddef>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "bilevel/policy/cuda/context.cuh"
#include "bilevel/policy/cuda/error.cuh"
#include "bilevel/policy/cuda/graph_memory.cuh"
#include "bilevel/policy/cuda/stream.cuh"

namespace bilevel::policy {

class cuda_graph_capture {
 public:
  static constexpr std::size_t kept_graphs = 4;

  cuda_graph_capture() = default;
  /// A copy is a fresh one: executable graphs and pools are not shared.
  cuda_graph_capture(const cuda_graph_capture&) noexcept {}
  cuda_graph_capture& operator=(const cuda_graph_capture& o) noexcept {
    if (this != &o) reset();
    return *this;
  }
  ~cuda_graph_capture() { reset(); }

  /// This thread's host waits so far (the probe of core/step_capture.hpp).
  static std::size_t host_waits() noexcept { return cuda_detail::thread_host_waits(); }

  /// Why a step on s cannot be captured, or "".
  std::string refuse(cuda_stream& s) {
    const cudaStream_t h = s.get();
    if (h == nullptr || h == cudaStreamLegacy)
      return "the solver runs on the legacy default stream, which CUDA cannot capture; leave the solver its own "
             "stream (the default) or borrow a stream made with cudaStreamCreate";
    if (cuda_detail::active_capture())
      return "another step is being captured on this thread (a solver stepped from inside another's step)";
    return {};
  }

  void begin(cuda_stream& s) {
    const cudaStream_t h = s.get();
    cuda_detail::context::get();  // the device check, before the capture
    if (!resources_) resources_ = std::make_unique<cuda_detail::capture_resources>();
    resources_->pool->set_home(h);
    resources_->pool->settle(h);
    resources_->staging.begin();
    BILEVEL_CUDA_CHECK(cudaStreamBeginCapture(h, cudaStreamCaptureModeRelaxed));
    cuda_detail::active_capture() = resources_.get();
  }

  void end_and_launch(cuda_stream& s) {
    const cudaStream_t h = s.get();
    stop_capturing();
    cudaGraph_t graph = nullptr;
    const cudaError_t e = cudaStreamEndCapture(h, &graph);
    if (e != cudaSuccess) {
      (void)cudaGetLastError();
      ++cuda_detail::discarded_captures();
      release_postponed();
      throw cuda_error(std::string("bilevel::cuda: an outer step could not be captured as a CUDA graph "
                                   "(cudaStreamEndCapture: ") +
                           cudaGetErrorString(e) + "); a call inside it cannot be captured, and the step's device "
                           "work is lost: build the solver anew, load a checkpoint into it (the networks' caches may "
                           "hold device data that the lost work never wrote) and run without solver::capture_steps",
                       int(e));
    }
    try {
      launch(graph, h);
    } catch (...) {
      (void)cudaGraphDestroy(graph);
      ++cuda_detail::discarded_captures();
      release_postponed();
      throw;
    }
    (void)cudaGraphDestroy(graph);  // the executable graph keeps what it needs
    release_postponed();            // stream-ordered after the launch
    resources_->staging.launched(h);
  }

  void abort(cuda_stream& s) noexcept {
    const cudaStream_t h = s.get();
    stop_capturing();
    cudaGraph_t graph = nullptr;
    (void)cudaStreamEndCapture(h, &graph);
    if (graph) (void)cudaGraphDestroy(graph);
    (void)cudaGetLastError();
    ++cuda_detail::discarded_captures();
    release_postponed();
  }

  [[nodiscard]] std::size_t instantiations() const noexcept { return instantiations_; }
  [[nodiscard]] std::size_t updates() const noexcept { return updates_; }

 private:
  static void stop_capturing() noexcept {
    cuda_detail::active_capture() = nullptr;
  }
  /// Updates the most recently used graph that takes `graph`'s shape, or instantiates one;
  /// launches it on h.
  /// An executable graph is tried for an update only by a graph with as many nodes, and one
  /// whose update failed is not kept (the runtime does not promise what a failed update leaves).
  void launch(cudaGraph_t graph, cudaStream_t h) {
    std::size_t nodes = 0;
    BILEVEL_CUDA_CHECK(cudaGraphGetNodes(graph, nullptr, &nodes));
    kept found{nullptr, nodes};
    for (std::size_t i = 0; i < execs_.size() && !found.exec;) {
      if (execs_[i].nodes != nodes) {
        ++i;
        continue;
      }
      cudaGraphExecUpdateResultInfo info{};
      if (cudaGraphExecUpdate(execs_[i].exec, graph, &info) == cudaSuccess) {
        found.exec = execs_[i].exec;
        ++updates_;
      } else {
        (void)cudaGetLastError();
        (void)cudaGraphExecDestroy(execs_[i].exec);  // freed when its launches in flight are done
      }
      execs_.erase(execs_.begin() + std::ptrdiff_t(i));  // found goes back in front below
    }
    if (!found.exec) {
      BILEVEL_CUDA_CHECK(cudaGraphInstantiate(&found.exec, graph, 0));
      ++instantiations_;
      if (execs_.size() == kept_graphs) {
        (void)cudaGraphExecDestroy(execs_.back().exec);
        execs_.pop_back();
      }
    }
    execs_.insert(execs_.begin(), found);  // most recently used first
    BILEVEL_CUDA_CHECK(cudaGraphLaunch(found.exec, h));
    cuda_detail::activity().graph_launches.fetch_add(1, std::memory_order_relaxed);
  }
  /// The ordinary blocks freed during the capture, freed now: after the graph on the stream.
  void release_postponed() noexcept {
    if (!resources_) return;
    auto blocks = std::move(resources_->postponed);
    resources_->postponed.clear();
    for (void* p : blocks) cuda_detail::release(p);
  }
  void reset() noexcept {
    for (const kept& k : execs_) (void)cudaGraphExecDestroy(k.exec);
    execs_.clear();
    resources_.reset();  // the pool lives on while its blocks are out (cuda/graph_memory.cuh)
  }

  struct kept {
    cudaGraphExec_t exec;
    std::size_t nodes;  ///< of the graph it was made or last updated from
  };
  std::vector<kept> execs_;
  std::unique_ptr<cuda_detail::capture_resources> resources_;
  std::size_t instantiations_ = 0, updates_ = 0;
};

}  // namespace bilevel::policy
