// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// Reweighting with deep interactions (Fan et al., AAAI 2021) as an instantiation of the one
/// solver: Meta-Weight-Net's two levels with a teacher that reads the student's internal
/// states (penultimate features, logits, loss, label) instead of the loss alone:
///
///     level 0 (student θ):   min_θ (1/B) Σ_i φ(s_i(θ)⁻) ℓ_i(θ)     on training batches
///     level 1 (teacher φ):   min_φ L_val(θ*(φ))                       on clean validation batches
///
/// The teacher is learners/teacher_weighting_net.hpp (a reconstruction: the paper's teacher
/// network was not available; its header says what was assumed). Schedule, strategy and
/// defaults are Meta-Weight-Net's (methods/meta_weight_net.hpp), with `hidden` the teacher's
/// hidden width.
#include <cstddef>
#include <memory>
#include <stdexcept>

#include "bilevel/learners/teacher_weighting_net.hpp"
#include "bilevel/methods/meta_weight_net.hpp"

namespace bilevel::methods {

/// Meta-Weight-Net's settings (meta_weight_net_config: fields in declaration order for
/// designated initialisers), `hidden` the teacher's hidden width.
using deep_interactions_config = meta_weight_net_config;

/// What deep_interactions returns: Meta-Weight-Net's result (classifier(), weighting_net(),
/// model(), sample_weights(d)) with the paper's names for the same two levels:
///
///     student()   level 0, the student θ (= classifier())
///     teacher()   level 1, the teacher's parameters φ (= weighting_net())
template <class Solver>
class deep_interactions_solver : public meta_weight_net_solver<Solver> {
 public:
  using meta_weight_net_solver<Solver>::meta_weight_net_solver;
  auto& student() { return Solver::template level<0>(); }
  const auto& student() const { return Solver::template level<0>(); }
  auto& teacher() { return Solver::template level<1>(); }
  const auto& teacher() const { return Solver::template level<1>(); }
};

/// The two levels, assembled; level 0 holds the student, level 1 the teacher's parameters.
template <nn_tensor_policy P>
auto deep_interactions(std::shared_ptr<const data::dataset> train, std::shared_ptr<const data::dataset> validation,
                       const deep_interactions_config& cfg = {}) {
  if (!cfg.layers.empty() || cfg.network)
    throw std::invalid_argument("bilevel::methods::deep_interactions: the teacher reads an MLP student's penultimate "
                                "features, sized from `widths`; a student given by `layers` or `network` is not supported");
  if (cfg.widths.size() < 3)
    throw std::invalid_argument("bilevel::methods::deep_interactions: the student needs a hidden layer for the "
                                "teacher to read (widths has " + std::to_string(cfg.widths.size()) + " entries)");
  const learners::teacher_weighting_net teacher{cfg.widths[cfg.widths.size() - 2], cfg.widths.back(), cfg.hidden};
  return detail::reweighting_with_net<P, mwn_schedule::virtual_step_first, deep_interactions_solver>(
      teacher, teacher.initial_parameters<P>(cfg.seed + 1), std::move(train), std::move(validation), cfg, "teacher",
      "bilevel::methods::deep_interactions");
}

}  // namespace bilevel::methods
