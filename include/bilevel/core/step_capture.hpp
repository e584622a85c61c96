// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// Outer steps captured as one device graph (`solver::capture_steps`): the solver's side, the
/// same on every back end. A back end that queues its work on streams may declare the optional
/// policy type
///
///   P::graph_capture  default-constructible; a copy is a fresh one (nothing shared); with
///     static std::size_t host_waits()   this thread's waits for the device so far
///     std::string refuse(P::stream&)    why the stream cannot be captured, or ""
///     void begin(P::stream&)            start capturing the stream's work
///     void end_and_launch(P::stream&)   end it, make or update the executable graph, launch it
///     void abort(P::stream&) noexcept   end a capture that failed, launching nothing
///     std::size_t instantiations() const, updates() const
///
/// (the CUDA policy's, policy/cuda/graph_capture.cuh). The host policies compute as they are
/// called and have no graph: on them a requested capture runs plainly and says so.
///
/// Why a step is captured anew each time rather than captured once and replayed. The host side
/// of a step decides what the device does: which batch is uploaded, the optimizers' step
/// counts and learning rates, which cache entries are fresh, where the deferred checks go.
/// A graph replayed without its host side would repeat the first step's decisions. Captured
/// each time, the graph is exactly the work the plain launches would have queued, in the same
/// order on one stream, so its results are the plain run's bit for bit; what it saves is the
/// device-side gap between launches (one graph launch instead of one per kernel and cuBLAS
/// call). An executable graph is instantiated once per shape of the step and updated in place
/// after that (the CUDA runtime's graph update), so re-capture on a change of shape is
/// automatic.
///
/// What cannot be captured: a host wait (a value read back) inside the step. The first
/// requested step therefore runs plainly as a probe, counting the thread's host waits (and the
/// second too, if the first waited: a first use may read what later steps do not); if the
/// probes waited, the steps run plainly from then on, and report().fallback says why (immediate finiteness
/// checks, a strategy that reads residuals on the host, ...). A step that waits although its
/// probe did not (its reads depend on the iteration) throws from inside the capture, naming
/// the read; the step's device work is then lost, so build the solver anew and load a
/// checkpoint into it: its networks' caches (a dropout mask, an uploaded table) may hold device
/// data that the lost work never wrote. (The policy's own caches keyed by host values drop
/// such data by themselves.)
#include <cstddef>
#include <string>
#include <type_traits>
#include <utility>

#include "bilevel/core/policy_stream.hpp"

namespace bilevel {

/// What `solver::capture_steps` did so far.
struct step_capture_report {
  bool requested = false;          ///< capture_steps(true) is in force
  std::size_t plain_steps = 0;     ///< outer steps run with plain launches while requested (the probe included)
  std::size_t captured_steps = 0;  ///< outer steps captured and launched as one graph
  std::size_t instantiations = 0;  ///< executable graphs made (one per shape of the step)
  std::size_t updates = 0;         ///< captured steps that updated an executable graph in place
  std::string fallback;            ///< why steps run plainly; empty while capturing or undecided
};

/// P declares a graph capture (see the file comment).
template <class P>
concept has_graph_capture = requires { typename P::graph_capture; } &&
                            requires(typename P::graph_capture& g, policy_stream_t<P>& s) {
                              { P::graph_capture::host_waits() } -> std::convertible_to<std::size_t>;
                              { g.refuse(s) } -> std::convertible_to<std::string>;
                              g.begin(s);
                              g.end_and_launch(s);
                              g.abort(s);
                              { g.instantiations() } -> std::convertible_to<std::size_t>;
                              { g.updates() } -> std::convertible_to<std::size_t>;
                            };

namespace detail {
struct no_graph_capture {};
template <class P>
struct graph_capture_of {
  using type = no_graph_capture;
};
template <has_graph_capture P>
struct graph_capture_of<P> {
  using type = typename P::graph_capture;
};
}  // namespace detail

/// The solver's bookkeeping around P::graph_capture: off until requested; then a probe step,
/// then captured steps or plain ones with the reason.
template <class P>
class step_capture {
 public:
  /// Turns capture on or off; turning it on (again) probes the next step afresh.
  void request(bool on) {
    report_.requested = on;
    report_.fallback.clear();
    decision_ = on ? decision::undecided : decision::plain;
    probes_ = 0;
  }
  /// The next step is probed again (the failure policy changed, say, and with it the reads).
  void reprobe() {
    if (report_.requested) request(true);
  }

  /// Runs one outer step `step` on stream s: plainly, or captured and launched as one graph.
  template <class F>
  void run(policy_stream_t<P>& s, F&& step) {
    if (!report_.requested) {
      step();
      return;
    }
    if constexpr (has_graph_capture<P>) {
      if (decision_ == decision::undecided) {
        std::string why = graph_.refuse(s);
        if (why.empty()) return probe(step);
        report_.fallback = std::move(why);
        decision_ = decision::plain;
      }
      if (decision_ == decision::capture) return capture(s, step);
    } else {
      report_.fallback = "this back end computes each operation as it is called: there is no device graph to capture";
    }
    step();
    ++report_.plain_steps;
  }

  [[nodiscard]] const step_capture_report& report() const noexcept { return report_; }

 private:
  /// The step run plainly, counting its host waits: none, and the next steps are captured.
  template <class F>
  void probe(F& step) {
    const std::size_t before = P::graph_capture::host_waits();
    step();
    ++report_.plain_steps;
    const std::size_t waits = P::graph_capture::host_waits() - before;
    if (waits == 0) {
      decision_ = decision::capture;
    } else if (++probes_ == max_probes) {  // else perhaps a first use (a cache filled): probe the next step too
      report_.fallback = "an outer step waits for the device " + std::to_string(waits) +
                         " times (values read back on the host: immediate finiteness checks, losses or norms for "
                         "on_step, a strategy's residuals), and a captured graph cannot wait; use deferred checks "
                         "(failure_policy::check_every > 1) and strategies that keep their scalars on the device to "
                         "capture it";
      decision_ = decision::plain;
    }
  }
  template <class F>
  void capture(policy_stream_t<P>& s, F& step) {
    graph_.begin(s);
    try {
      step();
    } catch (...) {
      graph_.abort(s);
      throw;
    }
    graph_.end_and_launch(s);
    ++report_.captured_steps;
    report_.instantiations = graph_.instantiations();
    report_.updates = graph_.updates();
  }

  enum class decision { plain, undecided, capture };
  static constexpr std::size_t max_probes = 2;  ///< steps that may wait before capture is given up
  std::size_t probes_ = 0;
  typename detail::graph_capture_of<P>::type graph_{};
  step_capture_report report_{};
  decision decision_ = decision::plain;
};

}  // namespace bilevel
