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
#include <string>

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

namespace detail {
/// The teacher for the student of `cfg`: it reads the features entering the student's last
/// layer, one vector per sample (sequential::feature_shape), and its logits. The student's
/// network is built once here to size it.
template <nn_tensor_policy P>
learners::teacher_weighting_net teacher_for(const meta_weight_net_config& cfg, const std::string& who) {
  const auto student = fixed_network<P>(classifier_shape(cfg.widths, cfg.input, cfg.layers, cfg.network), who,
                                        "methods::darts or methods::lfm_architecture_search");
  if (student.layer_list().size() < 2)
    throw std::invalid_argument(who + ": the student needs a hidden layer for the teacher to read (its network "
                                "has one layer, whose input is the data)");
  const learners::geometry features = student.feature_shape();
  if (features.pixels() != 1)
    throw std::invalid_argument(who + ": the teacher reads one feature vector per sample at the input of the "
                                "student's last layer, which takes " + learners::shape_text(features) +
                                " images; end the network with a global pooling or a flatten before its last layer");
  return {features.channels, student.classes(), cfg.hidden};
}
}  // namespace detail

/// The two levels, assembled; level 0 holds the student, level 1 the teacher's parameters.
/// The student is any network of the configuration (`widths`, `layers` or `network`) whose
/// last layer reads one feature vector per sample: an MLP with a hidden layer, a CNN ending in
/// flatten and dense layers, a ResNet; not one with mixed operations.
template <nn_tensor_policy P, class Adapt = detail::learner_as_is>
auto deep_interactions(std::shared_ptr<const data::dataset> train, std::shared_ptr<const data::dataset> validation,
                       const deep_interactions_config& cfg = {}, const Adapt& adapt = {}) {
  const std::string who = "bilevel::methods::deep_interactions";
  const learners::teacher_weighting_net teacher = detail::teacher_for<P>(cfg, who);
  return detail::reweighting_with_net<P, mwn_schedule::virtual_step_first, deep_interactions_solver>(
      teacher, teacher.initial_parameters<P>(cfg.seed + 1), std::move(train), std::move(validation), cfg, "teacher",
      who, adapt);
}

}  // namespace bilevel::methods
