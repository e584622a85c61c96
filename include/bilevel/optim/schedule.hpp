// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// Learning-rate schedules.
///
/// Absolute schedules (step_schedule, cosine_schedule, multistep_schedule) are callables from
/// the step index (from 0) to a learning rate, for the `schedule` member of any optimizer;
/// each owns its base rate `lr`, and an optimizer with a schedule ignores its own `lr`.
///
/// Relative schedules (constant_decay, multistep_decay, cosine_decay; any of them is an
/// lr_decay) are what the method configurations hold: a shape stated against a base rate
/// given elsewhere (the configuration's `lr`) and against the length of training (fractions
/// of it), with no step counts. resolve_schedule turns one into an absolute schedule once
/// the base rate and the number of steps are known, so a configuration states its learning
/// rate once and its milestones without arithmetic on steps.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <functional>
#include <numbers>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <variant>
#include <vector>

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

/// lr · gamma^(number of milestones ≤ step) (PyTorch's MultiStepLR): the rate drops by gamma
/// when the step count reaches each milestone. Milestones need not be sorted; one given twice
/// counts twice, as in PyTorch. Meta-Weight-Net's schedule: lr 0.1, gamma 0.1, milestones at
/// epochs 80 and 100 (in steps: 80 and 100 times the steps per epoch).
struct multistep_schedule {
  double lr = 0.1, gamma = 0.1;
  std::vector<std::size_t> milestones{};
  double operator()(std::size_t step) const {
    const auto passed = std::count_if(milestones.begin(), milestones.end(), [&](std::size_t m) { return m <= step; });
    return lr * std::pow(gamma, double(passed));
  }
};

/// The base rate throughout (no schedule).
struct constant_decay {};

/// × gamma at each milestone, the milestones given as fractions of training in (0, 1]: the
/// relative form of multistep_schedule. A milestone at fraction f of T steps takes effect at
/// step round(f · T). Meta-Weight-Net's 80 and 100 of 120 epochs: {.at = {80.0 / 120, 100.0 / 120}}.
struct multistep_decay {
  std::vector<double> at{};
  double gamma = 0.1;
};

/// Cosine annealing from the base rate down to lr_min (an absolute rate, as PyTorch's
/// eta_min and DARTS's learning_rate_min) over the whole of training: the relative form of
/// cosine_schedule.
struct cosine_decay {
  double lr_min = 0.0;
};

/// A relative learning-rate schedule, as the method configurations hold one per trained level.
using lr_decay = std::variant<constant_decay, multistep_decay, cosine_decay>;

/// The absolute schedule `decay` describes for base rate `lr` over `total_steps` steps, for an
/// optimizer's `schedule` member; empty for constant_decay (the optimizer then uses its `lr`,
/// which the caller sets to the same `lr`). Past total_steps the rate stays where it ended.
/// Throws std::invalid_argument, naming `who` and the values, when the decay needs the
/// length of training and total_steps is 0, or when its parameters make no sense.
inline std::function<double(std::size_t)> resolve_schedule(const lr_decay& decay, double lr, std::size_t total_steps,
                                                           const std::string& who = "bilevel::optim::resolve_schedule") {
  auto bad = [&](const std::string& what) { throw std::invalid_argument(who + ": " + what); };
  return std::visit(
      [&](const auto& d) -> std::function<double(std::size_t)> {
        using D = std::decay_t<decltype(d)>;
        if constexpr (std::is_same_v<D, constant_decay>) {
          return {};
        } else {
          if (total_steps == 0)
            bad("the learning-rate decay is stated in fractions of training, but the length of training is 0 steps "
                "(set `epochs` in the configuration)");
          if constexpr (std::is_same_v<D, multistep_decay>) {
            if (!(d.gamma > 0.0)) bad("multistep_decay: gamma must be > 0, got " + std::to_string(d.gamma));
            multistep_schedule s{.lr = lr, .gamma = d.gamma, .milestones = {}};
            for (double f : d.at) {
              if (!(f > 0.0 && f <= 1.0))
                bad("multistep_decay: milestones are fractions of training in (0, 1], got " + std::to_string(f));
              s.milestones.push_back(std::size_t(std::llround(f * double(total_steps))));
            }
            return s;
          } else {
            if (!(d.lr_min >= 0.0 && d.lr_min <= lr))
              bad("cosine_decay: lr_min must be in [0, lr] = [0, " + std::to_string(lr) + "], got " +
                  std::to_string(d.lr_min));
            return cosine_schedule{.lr = lr, .lr_min = d.lr_min, .total_steps = total_steps};
          }
        }
      },
      decay);
}

}  // namespace bilevel::optim
