// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// What the solver does when a step fails numerically: a NaN or Inf in a loss, gradient,
/// hypergradient, response or in the parameters after a step, a linear solve inside a
/// hypergradient that did not reach its tolerance, or an implicit hypergradient taken where
/// the lower level is not stationary (the report's `stationarity` above
/// `stationarity_tolerance`).
///
/// The choices, per kind of failure:
///   - stop: throw (numerical_error / convergence_error) naming level, iteration and step;
///   - skip_step: leave that level's parameters and optimizer state as they were before the
///     failing step, and go on with its next step (the batch is consumed);
///   - roll_back: restore every level to the state at the start of the outer iteration and
///     go on with the next iteration (fresh batches);
///   - accept: take the step anyway (only for unconverged solves and non-stationary lower
///     levels, whose result is still a finite, if less accurate, hypergradient: the report
///     says so).
/// Either recovery gives up, throwing, after `max_consecutive_failures` failures in a row: a
/// run that cannot take a good step should not spin.
#include <cstddef>
#include <limits>
#include <string>
#include <string_view>

#include "bilevel/core/errors.hpp"

namespace bilevel {

enum class failure_action { stop, skip_step, roll_back, accept };

[[nodiscard]] constexpr std::string_view to_string(failure_action a) {
  switch (a) {
    case failure_action::stop: return "stop";
    case failure_action::skip_step: return "skip_step";
    case failure_action::roll_back: return "roll_back";
    case failure_action::accept: return "accept";
  }
  return "?";
}

struct failure_policy {
  failure_action non_finite = failure_action::stop;
  failure_action unconverged_solve = failure_action::accept;
  std::size_t max_consecutive_failures = 10;
  /// The largest relative stationarity (hypergradient_report::stationarity: the lower
  /// level's gradient norm at the solve over its norm at its first step) an implicit
  /// hypergradient may be taken at. +Inf, the default, checks nothing, because the right
  /// ratio depends on the problem: how far training can bring the gradient down, how noisy
  /// minibatch gradients are, how far the lower problem moves as the upper variables do. Set
  /// it to what the lower level should achieve, e.g. 1e-3 for one trained to convergence. A
  /// NaN stationarity (before the level's first step) never fails.
  double stationarity_tolerance = std::numeric_limits<double>::infinity();
  /// What to do when a report's stationarity is above the tolerance. Its own field rather
  /// than unconverged_solve's: setting a tolerance asks for the check, so it stops by
  /// default, while unconverged solves are accepted by default.
  failure_action non_stationary = failure_action::stop;
  /// Outer iterations between reads of the finiteness checks. 1, the default: every loss,
  /// (hyper)gradient, response and parameter vector is checked on the host as it is made.
  /// n > 1: the checks and the losses stay where the policy keeps its data
  /// (core/step_check_log.hpp) and are read once every n outer iterations, at the end of
  /// run() and by flush_checks(), so that a step on a device back end waits for nothing. A
  /// failure then throws numerical_error naming the first level, outer iteration and step
  /// that went non-finite, as the immediate check would, but only at the read, after the
  /// later steps were taken (on NaNs): deferred checks can only stop, so they need
  /// non_finite = stop. Step events (on_step) are held back until the read too.
  std::size_t check_every = 1;
};

/// An implicit hypergradient taken where the lower level was not stationary, thrown when
/// failure_policy::non_stationary says it matters. A convergence_error (the lower level's
/// training did not converge), so handlers of that catch it too; residual() is the linear
/// solve's, which is usually fine: stationarity() is what failed.
class stationarity_error : public convergence_error {
 public:
  stationarity_error(const std::string& what, std::size_t level, std::size_t iteration, std::size_t step,
                     double residual, double stationarity, double tolerance)
      : convergence_error(what, level, iteration, step, residual), stationarity_(stationarity), tolerance_(tolerance) {}
  [[nodiscard]] double stationarity() const noexcept { return stationarity_; }
  [[nodiscard]] double tolerance() const noexcept { return tolerance_; }

 private:
  double stationarity_;
  double tolerance_;
};

/// Passed to `on_failure` whenever the policy recovered from a failure.
struct failure_event {
  std::size_t iteration;
  std::size_t level;
  std::size_t step;
  std::string what;       ///< the error's message
  failure_action action;  ///< what the solver did
};

}  // namespace bilevel
