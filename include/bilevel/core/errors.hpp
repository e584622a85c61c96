// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// Exceptions the library throws beyond std::invalid_argument (bad input, named in the message).
#include <cstddef>
#include <limits>
#include <stdexcept>
#include <string>

namespace bilevel {

/// A NaN or Inf where a finite number was needed: a loss, a gradient, a hypergradient, a
/// level's response. The message names the level, the outer iteration and the step where it
/// first appeared; the accessors give the same numbers to code that handles it.
class numerical_error : public std::runtime_error {
 public:
  static constexpr std::size_t no_step = std::numeric_limits<std::size_t>::max();

  numerical_error(const std::string& what, std::size_t level, std::size_t iteration, std::size_t step = no_step)
      : std::runtime_error(what), level_(level), iteration_(iteration), step_(step) {}
  [[nodiscard]] std::size_t level() const noexcept { return level_; }
  [[nodiscard]] std::size_t iteration() const noexcept { return iteration_; }
  /// The step within the level's block, or no_step when the failure was outside one.
  [[nodiscard]] std::size_t step() const noexcept { return step_; }

 private:
  std::size_t level_;
  std::size_t iteration_;
  std::size_t step_;
};

/// A linear solve (conjugate gradient, Neumann series) or fixed-point iteration inside a
/// hypergradient that ended above its tolerance, when the solver's failure policy says this
/// matters (failure_policy::unconverged_solve). Carries the relative residual it reached.
class convergence_error : public numerical_error {
 public:
  convergence_error(const std::string& what, std::size_t level, std::size_t iteration, std::size_t step,
                    double residual)
      : numerical_error(what, level, iteration, step), residual_(residual) {}
  [[nodiscard]] double residual() const noexcept { return residual_; }

 private:
  double residual_;
};

/// A checkpoint file that cannot be used: missing, truncated, corrupted (checksum), of another
/// format version or scalar type, or written by a solver of another shape (level names,
/// parameter counts, optimizer buffers). Nothing has been loaded when this is thrown.
class checkpoint_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace bilevel
