// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// The upper objective of architecture search: a network's loss on the upper level's data at
/// a lower level's weights θ* (input slot 0), as a function of the architecture α, which is
/// the upper level's own variable and enters the loss directly as well (DARTS's L_val(w*, α)).
/// Given a shared_network, it evaluates the lower level's own network object (one cache for
/// both levels, shared_network.hpp); given a network, a copy of its own.
#include <cstddef>
#include <stdexcept>
#include <utility>

#include "bilevel/core/device_loss.hpp"
#include "bilevel/learners/shared_network.hpp"

namespace bilevel::learners {

template <class Net>
class architecture_loss {
 public:
  using policy = typename Net::policy;
  using batch_type = typename Net::batch_type;
  using vector = vector_t<policy>;

  explicit architecture_loss(Net net) : architecture_loss(shared_network<Net>(std::move(net))) {}
  explicit architecture_loss(shared_network<Net> net) : shared_(std::move(net)) {
    if (network().arch_slot() != 0 || network().num_inputs() != 1)
      throw std::invalid_argument("bilevel::learners::architecture_loss: the network must read only its architecture "
                                  "(an unweighted network with mixed operations)");
  }

  [[nodiscard]] std::size_t num_parameters() const { return network().arch_size(); }
  [[nodiscard]] std::size_t num_inputs() const { return 1; }
  [[nodiscard]] std::size_t input_size(std::size_t) const { return network().num_parameters(); }
  [[nodiscard]] const Net& network() const { return shared_.network(); }

  double loss(const vector& alpha, input_list<policy> in, const batch_type& b) const {
    const vector* arch[] = {&alpha};
    return network().loss(*in[0], arch, b);
  }
  /// ∂L/∂α, the direct term of the architecture's hypergradient.
  double gradient(const vector& alpha, input_list<policy> in, const batch_type& b, vector& out) const {
    const vector* arch[] = {&alpha};
    network().input_gradient(*in[0], arch, b, network().arch_slot(), out);
    return network().loss(*in[0], arch, b);
  }
  /// The same two, leaving the loss on the policy's storage (core/device_loss.hpp).
  void loss(const vector& alpha, input_list<policy> in, const batch_type& b, loss_slot<policy> slot) const {
    const vector* arch[] = {&alpha};
    loss_into(network(), *in[0], arch, b, slot);
  }
  void gradient(const vector& alpha, input_list<policy> in, const batch_type& b, vector& out,
                loss_slot<policy> slot) const {
    const vector* arch[] = {&alpha};
    network().input_gradient(*in[0], arch, b, network().arch_slot(), out);
    loss_into(network(), *in[0], arch, b, slot);
  }
  /// ∂L/∂θ*.
  void input_gradient(const vector& alpha, input_list<policy> in, const batch_type& b, std::size_t, vector& out) const {
    const vector* arch[] = {&alpha};
    gradient_into(network(), *in[0], arch, b, out);
  }

 private:
  shared_network<Net> shared_;
};

}  // namespace bilevel::learners
