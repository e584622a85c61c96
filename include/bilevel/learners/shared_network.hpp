// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// shared_network<Net>: one network object serving several levels, a learner that forwards to
/// it. Copies of the handle are the same network.
///
/// Why: a network keeps its value and backward passes in a cache (sequential.hpp), as large
/// as every activation of a batch. When two levels evaluate the same network (DARTS's weights
/// and architecture levels: L_train(w, α) and L_val(w*, α)), two copies hold two caches, and
/// a second-order iteration's peak memory doubles. Shared, the levels take turns in one
/// cache. That costs no extra passes where the levels never return to a point the other
/// level's passes have evicted (DARTS: the central differences move the weights' network
/// off its point before its real step anyway), and it stays correct where they do: the cache
/// is keyed on the contents of θ, the inputs and the batch, never on who asks.
///
/// The network's state (running statistics, the dropout step counter) is shared too: the real
/// steps of the level that owns the hook (on_real_step) update it for every level that reads
/// the network. Like the network itself, a handle is not safe to use from two threads.
#include <cstddef>
#include <memory>
#include <span>
#include <utility>
#include <vector>

#include "bilevel/core/device_loss.hpp"

namespace bilevel::learners {

template <class Net>
class shared_network {
 public:
  using policy = typename Net::policy;
  using batch_type = typename Net::batch_type;
  using vector = vector_t<policy>;
  using network_type = Net;

  explicit shared_network(Net net) : net_(std::make_shared<Net>(std::move(net))) {}

  [[nodiscard]] Net& network() { return *net_; }
  [[nodiscard]] const Net& network() const { return *net_; }

  [[nodiscard]] std::size_t num_parameters() const { return net_->num_parameters(); }
  [[nodiscard]] std::size_t num_inputs() const { return net_->num_inputs(); }
  [[nodiscard]] std::size_t input_size(std::size_t slot) const { return net_->input_size(slot); }

  double loss(const vector& theta, input_list<policy> in, const batch_type& b) const { return net_->loss(theta, in, b); }
  double gradient(const vector& theta, input_list<policy> in, const batch_type& b, vector& out) const {
    return net_->gradient(theta, in, b, out);
  }
  /// The same two, leaving the loss on the policy's storage (core/device_loss.hpp).
  void loss(const vector& theta, input_list<policy> in, const batch_type& b, loss_slot<policy> slot) const {
    loss_into(*net_, theta, in, b, slot);
  }
  void gradient(const vector& theta, input_list<policy> in, const batch_type& b, vector& out,
                loss_slot<policy> slot) const {
    gradient_into(*net_, theta, in, b, out, slot);
  }
  void input_gradient(const vector& theta, input_list<policy> in, const batch_type& b, std::size_t slot,
                      vector& out) const {
    net_->input_gradient(theta, in, b, slot, out);
  }
  void hvp(const vector& theta, input_list<policy> in, const batch_type& b, const vector& v, vector& out) const
    requires has_exact_hvp<Net>
  {
    net_->hvp(theta, in, b, v, out);
  }
  void mixed_vjp(const vector& theta, input_list<policy> in, const batch_type& b, std::size_t slot, const vector& v,
                 vector& out) const
    requires has_exact_mixed_vjp<Net>
  {
    net_->mixed_vjp(theta, in, b, slot, v, out);
  }
  void mixed_jvp(const vector& theta, input_list<policy> in, const batch_type& b, std::size_t slot, const vector& u,
                 vector& out) const
    requires has_exact_mixed_jvp<Net>
  {
    net_->mixed_jvp(theta, in, b, slot, u, out);
  }

  void on_real_step(const vector& theta, input_list<policy> in, const batch_type& b)
    requires has_real_step_hook<Net>
  {
    net_->on_real_step(theta, in, b);
  }
  [[nodiscard]] std::vector<double> state() const
    requires has_learner_state<Net>
  {
    return net_->state();
  }
  void restore(std::span<const double> s)
    requires has_learner_state<Net>
  {
    net_->restore(s);
  }

 private:
  std::shared_ptr<Net> net_;
};

}  // namespace bilevel::learners
