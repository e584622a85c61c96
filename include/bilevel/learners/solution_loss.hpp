// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// The upper objective of most bilevel problems: a learner's loss evaluated at a lower
/// level's solution (input slot 0) on the upper level's own data, e.g. the validation loss
/// of the trained network. It does not depend on the upper level's own variables directly
/// (sample weights, penalties, class weights act only through the solution), so its own
/// gradient is zero and its input gradient is the learner's gradient.
#include <cstddef>
#include <utility>

#include "bilevel/core/device_loss.hpp"

namespace bilevel::learners {

template <learner L>
class solution_loss {
 public:
  using policy = typename L::policy;
  using batch_type = typename L::batch_type;
  using vector = vector_t<policy>;

  /// `own_parameters`: the size of the upper level's variables.
  solution_loss(L learner, std::size_t own_parameters) : learner_(std::move(learner)), own_(own_parameters) {}

  [[nodiscard]] std::size_t num_parameters() const { return own_; }
  [[nodiscard]] std::size_t num_inputs() const { return 1; }
  [[nodiscard]] std::size_t input_size(std::size_t) const { return learner_.num_parameters(); }
  [[nodiscard]] const L& evaluated() const { return learner_; }

  double loss(const vector&, input_list<policy> in, const batch_type& b) const {
    return learner_.loss(*in[0], {}, b);
  }
  double gradient(const vector& own, input_list<policy> in, const batch_type& b, vector& out) const {
    out = policy::zeros(policy::size(own));
    return loss(own, in, b);
  }
  /// The same, leaving the loss on the policy's storage (core/device_loss.hpp).
  void loss(const vector&, input_list<policy> in, const batch_type& b, loss_slot<policy> slot) const {
    loss_into(learner_, *in[0], {}, b, slot);
  }
  void gradient(const vector& own, input_list<policy> in, const batch_type& b, vector& out,
                loss_slot<policy> slot) const {
    out = policy::zeros(policy::size(own));
    loss_into(learner_, *in[0], {}, b, slot);
  }
  void input_gradient(const vector&, input_list<policy> in, const batch_type& b, std::size_t, vector& out) const {
    gradient_into(learner_, *in[0], {}, b, out);
  }

 private:
  L learner_;
  std::size_t own_;
};

}  // namespace bilevel::learners
