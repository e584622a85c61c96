// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// A learner that reads one of its inputs as a segment of a longer vector.
///
/// Upper levels often pack several variables into one vector: LFM's architecture-search
/// top level is [A | V | r] (architecture, encoder, coefficients), SGL's is [A_1 | … | A_K]
/// (one architecture per learner). The networks below read only their architecture: a
/// prefix, or the k-th block. `reading_segment<L>` wraps any learner L so that its input
/// `slot` is the whole packed vector (of `full_size` entries) while L sees only the entries
/// [offset, offset + n), n = L's own input size there. Everything else passes through.
///
/// Derivatives follow from L's: the loss does not depend on the entries outside the segment,
/// so ∂L/∂in and the mixed product (∂²L/∂in∂θ)v are L's, padded with zeros to full_size; the
/// product (∂²L/∂θ∂in)u is L's along the segment of u. Exactness is L's: each second-order
/// member exists exactly when L has it exactly (otherwise bilevel::hvp and friends fall back
/// to central differences and say so, as for any learner).
///
/// L must declare its inputs (num_inputs(), input_size()); each call copies the segment
/// (n entries), which is small beside a network's passes.
#include <cstddef>
#include <span>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "bilevel/core/device_loss.hpp"

namespace bilevel::learners {

template <class L>
  requires input_differentiable_learner<L> && declares_inputs<L> && nn_tensor_policy<typename L::policy>
class reading_segment {
 public:
  using policy = typename L::policy;
  using batch_type = typename L::batch_type;
  using vector = vector_t<policy>;

  /// Input `slot` of the wrapped learner becomes a vector of `full_size` entries, of which it
  /// reads [offset, offset + inner.input_size(slot)).
  reading_segment(L inner, std::size_t slot, std::size_t offset, std::size_t full_size)
      : inner_(std::move(inner)), slot_(slot), offset_(offset), full_(full_size) {
    if (slot_ >= inner_.num_inputs())
      throw std::invalid_argument("bilevel::learners::reading_segment: input slot " + std::to_string(slot_) +
                                  " but the learner reads " + std::to_string(inner_.num_inputs()) + " input(s)");
    if (offset_ + inner_.input_size(slot_) > full_)
      throw std::invalid_argument("bilevel::learners::reading_segment: the segment [" + std::to_string(offset_) + ", " +
                                  std::to_string(offset_ + inner_.input_size(slot_)) + ") does not fit in " +
                                  std::to_string(full_) + " entries");
  }

  [[nodiscard]] const L& inner() const { return inner_; }
  [[nodiscard]] std::size_t segment_slot() const { return slot_; }
  [[nodiscard]] std::size_t segment_offset() const { return offset_; }
  [[nodiscard]] std::size_t segment_size() const { return inner_.input_size(slot_); }

  [[nodiscard]] std::size_t num_parameters() const { return inner_.num_parameters(); }
  [[nodiscard]] std::size_t num_inputs() const { return inner_.num_inputs(); }
  [[nodiscard]] std::size_t input_size(std::size_t s) const { return s == slot_ ? full_ : inner_.input_size(s); }

  /// For a network with mixed operations whose architecture is the segment: its slot, and
  /// the size of what that slot now reads, so architecture_loss takes the packed vector as
  /// the upper level's own variable.
  [[nodiscard]] std::size_t arch_slot() const
    requires requires(const L& l) { l.arch_slot(); }
  {
    return inner_.arch_slot();
  }
  [[nodiscard]] std::size_t arch_size() const
    requires requires(const L& l) { l.arch_slot(); }
  {
    return input_size(inner_.arch_slot());
  }
  /// The wrapped network's forward pass (logits, features, losses), reading the segment.
  [[nodiscard]] auto forward(const vector& theta, const batch_type& b, input_list<policy> in) const
    requires requires(const L& l, const vector& t, const batch_type& bb, input_list<policy> i) { l.forward(t, bb, i); }
  {
    const narrowed n(*this, in);
    return inner_.forward(theta, b, n.list());
  }
  /// In a mode (evaluation: running statistics), where the wrapped network has modes.
  template <class Mode>
  [[nodiscard]] auto forward(const vector& theta, const batch_type& b, input_list<policy> in, Mode mode) const
    requires requires(const L& l, const vector& t, const batch_type& bb, input_list<policy> i) { l.forward(t, bb, i, mode); }
  {
    const narrowed n(*this, in);
    return inner_.forward(theta, b, n.list(), mode);
  }
  /// The wrapped network's state, for checkpoints.
  [[nodiscard]] std::vector<double> state() const
    requires requires(const L& l) { l.state(); }
  {
    return inner_.state();
  }
  void restore(std::span<const double> s)
    requires requires(L& l) { l.restore(s); }
  {
    inner_.restore(s);
  }
  /// The wrapped network's state changes with the real step (batch normalization's running
  /// statistics), reading the segment.
  void on_real_step(const vector& theta, input_list<policy> in, const batch_type& b)
    requires requires(L& l, const vector& t, const batch_type& bb, input_list<policy> i) { l.on_real_step(t, i, bb); }
  {
    const narrowed n(*this, in);
    inner_.on_real_step(theta, n.list(), b);
  }

  double loss(const vector& theta, input_list<policy> in, const batch_type& b) const {
    const narrowed n(*this, in);
    return inner_.loss(theta, n.list(), b);
  }
  double gradient(const vector& theta, input_list<policy> in, const batch_type& b, vector& out) const {
    const narrowed n(*this, in);
    return inner_.gradient(theta, n.list(), b, out);
  }
  /// The same, leaving the loss on the policy's storage (core/device_loss.hpp).
  void loss(const vector& theta, input_list<policy> in, const batch_type& b, loss_slot<policy> slot) const {
    const narrowed n(*this, in);
    loss_into(inner_, theta, n.list(), b, slot);
  }
  void gradient(const vector& theta, input_list<policy> in, const batch_type& b, vector& out,
                loss_slot<policy> slot) const {
    const narrowed n(*this, in);
    gradient_into(inner_, theta, n.list(), b, out, slot);
  }
  void input_gradient(const vector& theta, input_list<policy> in, const batch_type& b, std::size_t s,
                      vector& out) const {
    const narrowed n(*this, in);
    inner_.input_gradient(theta, n.list(), b, s, out);
    if (s == slot_) out = padded(out);
  }

  void hvp(const vector& theta, input_list<policy> in, const batch_type& b, const vector& v, vector& out) const
    requires has_exact_hvp<L>
  {
    const narrowed n(*this, in);
    inner_.hvp(theta, n.list(), b, v, out);
  }
  void mixed_vjp(const vector& theta, input_list<policy> in, const batch_type& b, std::size_t s, const vector& v,
                 vector& out) const
    requires has_exact_mixed_vjp<L>
  {
    const narrowed n(*this, in);
    inner_.mixed_vjp(theta, n.list(), b, s, v, out);
    if (s == slot_) out = padded(out);
  }
  void mixed_jvp(const vector& theta, input_list<policy> in, const batch_type& b, std::size_t s, const vector& u,
                 vector& out) const
    requires has_exact_mixed_jvp<L>
  {
    const narrowed n(*this, in);
    if (s != slot_) {
      inner_.mixed_jvp(theta, n.list(), b, s, u, out);
      return;
    }
    inner_.mixed_jvp(theta, n.list(), b, s, segment_of(u), out);
  }

 private:
  /// The inputs as the wrapped learner sees them: slot replaced by its segment.
  class narrowed {
   public:
    narrowed(const narrowed&) = delete;  // pointers_ may point at segment_
    narrowed& operator=(const narrowed&) = delete;
    narrowed(const reading_segment& self, input_list<policy> in) : pointers_(in.begin(), in.end()) {
      if (self.slot_ < in.size()) {
        segment_ = self.segment_of(*in[self.slot_]);
        pointers_[self.slot_] = &segment_;
      }
    }
    [[nodiscard]] input_list<policy> list() const { return input_list<policy>(pointers_); }

   private:
    vector segment_;
    std::vector<const vector*> pointers_;
  };

  [[nodiscard]] vector segment_of(const vector& full) const {
    if (policy::size(full) != full_)
      throw std::invalid_argument("bilevel::learners::reading_segment: input " + std::to_string(slot_) + " has " +
                                  std::to_string(policy::size(full)) + " entries, expected " + std::to_string(full_));
    vector s;
    policy::segment(full, offset_, segment_size(), s);
    return s;
  }
  [[nodiscard]] vector padded(const vector& part) const {
    vector out = policy::zeros(full_);
    policy::set_segment(part, out, offset_);
    return out;
  }

  L inner_;
  std::size_t slot_, offset_, full_;
};

}  // namespace bilevel::learners
