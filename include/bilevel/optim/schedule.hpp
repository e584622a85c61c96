// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// Learning-rate schedules: callables from the step index (from 0) to a learning rate, for
/// the `schedule` member of any optimizer.
#include <cmath>
#include <cstddef>
#include <numbers>
#include <stdexcept>

namespace bilevel::optim {

/// lr · gamma^⌊step / every⌋ (PyTorch's StepLR).
struct step_schedule {
  double lr = 0.1, gamma = 0.1;
  std::size_t every = 1000;
  double operator()(std::size_t step) const {
    if (every == 0) throw std::invalid_argument("bilevel::optim::step_schedule: `every` must be >= 1");
    return lr * std::pow(gamma, double(step / every));
  }
};

/// Cosine annealing from lr to lr_min over total_steps, then constant at lr_min
/// (PyTorch's CosineAnnealingLR without restarts, as DARTS and LFM use).
struct cosine_schedule {
  double lr = 0.1, lr_min = 0.0;
  std::size_t total_steps = 1000;
  double operator()(std::size_t step) const {
    if (total_steps == 0) throw std::invalid_argument("bilevel::optim::cosine_schedule: total_steps must be >= 1");
    if (step >= total_steps) return lr_min;
    return lr_min + 0.5 * (lr - lr_min) * (1.0 + std::cos(std::numbers::pi * double(step) / double(total_steps)));
  }
};

}  // namespace bilevel::optim
