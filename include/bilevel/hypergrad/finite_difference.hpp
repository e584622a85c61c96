// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// Finite difference as DARTS does it (Liu et al., 2019, eq. 7-8).
///
/// One virtual optimizer step w' = step(w, ∇_w L(w, λ)) (momentum and weight decay included,
/// as DARTS's `_compute_unrolled_model`); upper levels read w'. Given v = ∂F/∂w', the
/// hypergradient contribution is the mixed product through that step, taken by central
/// differences of the input gradient *at the original w*:
///
///     −η · [∇_λ L(w + εv, λ) − ∇_λ L(w − εv, λ)] / 2ε,   ε = s/‖v‖,
///
/// (for plain SGD; in general the optimizer's VJP maps v to the gradient's adjoint first).
/// Only first-order learner members are used, even when exact products exist: this is the
/// approximation, kept faithful. s defaults to 1e-2 in float (DARTS's value, about optimal
/// there) and 1e-4 in double (1e-2 would waste eight digits); never forward differences.
#include <cstddef>
#include <stdexcept>
#include <string>
#include <deque>
#include <limits>
#include <span>

#include "bilevel/hypergrad/detail/step_tape.hpp"

namespace bilevel::hypergrad {

struct finite_difference {
  /// Central-difference scale s; 0 means the default for the level's scalar type.
  double scale = 0.0;
  /// The virtual step takes the batch the level's next real step will take (see lookahead).
  bool on_next_batch = false;

  template <class L, class O>
  class engine {
    using P = typename L::policy;

   public:
    explicit engine(const finite_difference& options) : scale_(options.scale), on_next_batch_(options.on_next_batch) {
      if (!(scale_ >= 0.0) || scale_ == std::numeric_limits<double>::infinity())
        throw std::invalid_argument("bilevel::hypergrad::finite_difference: scale must be finite and >= 0 (0: the "
                                    "default), got " + std::to_string(scale_));
    }
    template <class Level> void begin_block(Level&, input_list<P>) {}
    template <class Level>
    void on_step(Level&, input_list<P>, const typename L::batch_type&, const vector_t<P>&) {}
    template <class Level>
    const vector_t<P>& response(Level& lv, input_list<P> in) {
      hypergradient_report scratch;
      ahead_ = detail::virtual_steps(lv, in, 1, tape_, scratch, on_next_batch_);
      return ahead_;
    }
    template <class Level>
    hypergradient_report vjp(Level& lv, input_list<P> in, const vector_t<P>& adjoint,
                             std::span<vector_t<P>> out) {
      hypergradient_report r{.strategy = "finite_difference"};
      r.gradient_evals = 1;
      const second_order_options so{scale_ > 0.0 ? scale_ : default_fd_scale<scalar_t<P>>(), true};
      detail::reverse_through_steps(lv, in, tape_, adjoint, out, so, r);
      return r;
    }

   private:
    double scale_;
    bool on_next_batch_;
    std::deque<detail::step_record<L>> tape_;
    vector_t<P> ahead_;
  };
};

}  // namespace bilevel::hypergrad
