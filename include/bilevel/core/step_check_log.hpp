// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// The solver's deferred checks: what its steps would read on the host (losses, finiteness
/// of gradients, responses and parameters), left on the policy's storage instead and read
/// all at once.
///
/// On a device back end each host read is a wait for the queue to drain; a Meta-Weight-Net
/// step made nine of them for its checks and losses alone. With failure_policy::check_every
/// > 1 the solver gives every step a few entries of one vector here (its loss, its gradient's
/// squared norm when a step callback wants it, one flag per check, set by the policy's
/// mark_nonfinite), and one read (to_host) every check_every outer iterations turns them back
/// into the first failure, named as an immediate check would name it, and into the step
/// events held back until then.
#include <algorithm>
#include <cstddef>
#include <vector>

#include "bilevel/core/device_loss.hpp"
#include "bilevel/core/entry_scalars.hpp"
#include "bilevel/core/hypergradient_report.hpp"
#include "bilevel/core/tensor_policy.hpp"

namespace bilevel {

template <tensor_policy P>
class step_check_log {
 public:
  /// Entries of one step, from `first`: its loss, its gradient's squared norm, the flags of
  /// its gradient and of its parameters after the step, then one flag per response (in the
  /// order `responses` lists their levels).
  struct step {
    std::size_t iteration = 0, level = 0, index = 0;  ///< outer iteration, level, step in its block
    std::size_t first = 0;
    std::vector<std::size_t> responses{};
    bool wants_event = false;  ///< a step callback waits for it: the norm entry is filled
    std::vector<hypergradient_report> reports{};
  };
  static constexpr std::size_t loss_entry = 0, norm_entry = 1, gradient_flag = 2, parameters_flag = 3,
                               first_response_flag = 4;

  /// Entries for a new step with `responses` response flags; their values start at zero.
  step& begin_step(std::size_t iteration, std::size_t level, std::size_t index, std::size_t responses) {
    const std::size_t need = first_response_flag + responses;
    if (used_ + need > P::size(values_)) grow(used_ + need);
    steps_.push_back({iteration, level, index, used_, std::vector<std::size_t>(responses, 0)});
    used_ += need;
    return steps_.back();
  }
  /// The level whose response the last step's k-th response flag checks.
  void set_response_level(std::size_t k, std::size_t level) { steps_.back().responses.at(k) = level; }
  /// The last step's event is wanted: its gradient's squared norm goes to its norm entry
  /// (reduced on the policy's storage where it has add_dot_into), its reports are kept.
  void hold_event(const vector_t<P>& gradient, std::vector<hypergradient_report> reports) {
    step& s = steps_.back();
    s.wants_event = true;
    s.reports = std::move(reports);
    const std::size_t at = s.first + norm_entry;
    if constexpr (nn_tensor_policy<P>) detail::add_dot_into_entry<P>(gradient, gradient, values_, at);
    else detail::add_host_value<P>(P::dot(gradient, gradient), {&values_, at});
  }
  /// Forgets the steps from `count` on (a step undone by a recovery); their entries stay
  /// used until the next read.
  void drop_steps_from(std::size_t count) {
    if (count < steps_.size()) steps_.resize(count);
  }
  [[nodiscard]] std::size_t steps() const { return steps_.size(); }
  [[nodiscard]] bool empty() const { return steps_.empty(); }

  vector_t<P>& values() { return values_; }

  /// Entry `at` = 1 when x has a NaN or Inf: on the policy's storage where it can
  /// (deferred_checks), through all_finite otherwise.
  void mark_nonfinite(const vector_t<P>& x, std::size_t at) {
    if constexpr (deferred_checks<P>) P::mark_nonfinite(x, values_, at);
    else if (!P::all_finite(x)) detail::add_host_value<P>(1.0, {&values_, at});  // each flag is set once
  }

  /// The steps logged since the last read and their entries, on the host (one read); the log
  /// is empty afterwards, its entries zeroed for the next steps.
  struct reading {
    std::vector<step> steps;
    std::vector<double> values;
  };
  reading read() {
    reading r;
    r.steps = std::move(steps_);
    steps_.clear();
    if (used_ > 0) {
      const auto host = P::to_host(values_);
      r.values.assign(host.begin(), host.begin() + std::ptrdiff_t(used_));
      P::fill(values_, scalar_t<P>(0));
    }
    used_ = 0;
    return r;
  }

 private:
  /// At least `need` entries, keeping those in use: a larger zeroed vector with the old one
  /// copied in, on the policy's storage where it has segment writes.
  void grow(std::size_t need) {
    std::size_t capacity = std::max<std::size_t>(64, 2 * P::size(values_));
    while (capacity < need) capacity *= 2;
    vector_t<P> bigger = P::zeros(capacity);
    if constexpr (requires(vector_t<P>& v, const vector_t<P>& cv, std::size_t i) { P::set_segment(cv, v, i); }) {
      if (P::size(values_) > 0) P::set_segment(values_, bigger, 0);
    } else if (P::size(values_) > 0) {
      auto host = P::to_host(bigger);
      const auto old = P::to_host(values_);
      std::copy(old.begin(), old.end(), host.begin());
      bigger = P::from_host(host);
    }
    values_ = std::move(bigger);
  }

  vector_t<P> values_{};
  std::size_t used_ = 0;
  std::vector<step> steps_{};
};

}  // namespace bilevel
