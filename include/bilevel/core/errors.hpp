// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// Exceptions the library throws beyond std::invalid_argument (bad input, named in the message).
#include <cstddef>
#include <stdexcept>
#include <string>

namespace bilevel {

/// A NaN or Inf where a finite number was needed: a loss, a gradient, a hypergradient. The
/// message names the level, the outer iteration and the step where it first appeared.
class numerical_error : public std::runtime_error {
 public:
  numerical_error(const std::string& what, std::size_t level, std::size_t iteration)
      : std::runtime_error(what), level_(level), iteration_(iteration) {}
  [[nodiscard]] std::size_t level() const noexcept { return level_; }
  [[nodiscard]] std::size_t iteration() const noexcept { return iteration_; }

 private:
  std::size_t level_;
  std::size_t iteration_;
};

}  // namespace bilevel
