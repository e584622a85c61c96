// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// What the solver does when a step fails numerically: a NaN or Inf in a loss, gradient,
/// hypergradient, response or in the parameters after a step, or a linear solve inside a
/// hypergradient that did not reach its tolerance.
///
/// The choices, per kind of failure:
///   - stop: throw (numerical_error / convergence_error) naming level, iteration and step;
///   - skip_step: leave that level's parameters and optimizer state as they were before the
///     failing step, and go on with its next step (the batch is consumed);
///   - roll_back: restore every level to the state at the start of the outer iteration and
///     go on with the next iteration (fresh batches);
///   - accept: take the step anyway (only for unconverged solves, whose result is still a
///     finite, if less accurate, hypergradient: the report says so).
/// Either recovery gives up, throwing, after `max_consecutive_failures` failures in a row: a
/// run that cannot take a good step should not spin.
#include <cstddef>
#include <string>
#include <string_view>

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
