// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// Forward mode (real-time recurrent learning): Jacobian-vector products carried through the
/// steps as they are taken.
///
/// For every scalar component e of every input, the tangent dθ_t/de (and that of the
/// optimizer state) is pushed through each step:
///     ġ_t = H(θ_t) θ̇_t + (∂²L/∂θ∂in) e,    (θ̇_{t+1}, ṡ_{t+1}) = JVP of the step.
/// At hypergradient time the contribution is ⟨v, θ̇_T⟩ per component. Exact for the steps
/// taken in the block (the same derivative as `unrolled`), memory independent of the number
/// of steps, but cost and memory grow with the number of input components: use it for
/// problems with few hyperparameters (a handful of penalties, a learning rate), not for
/// per-sample weights.
#include <cstddef>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "bilevel/hypergrad/detail/step_tape.hpp"

namespace bilevel::hypergrad {

struct forward_mode {
  /// Refuse inputs with more components than this (the cost is one HVP per component per
  /// step, so a large input is almost always a mistake).
  std::size_t max_components = 4096;

  template <class L, class O>
  class engine {
    using P = typename L::policy;
    struct tangent {
      vector_t<P> theta;
      optimizer_state<P> state;
    };

   public:
    explicit engine(const forward_mode& options) : max_components_(options.max_components) {}

    template <class Level>
    void begin_block(Level& lv, input_list<P> in) {
      static_assert(differentiable_optimizer<O>,
                    "bilevel::hypergrad::forward_mode pushes tangents through the optimizer's update: "
                    "the optimizer needs jvp() (see bilevel/core/optimizer.hpp)");
      tangents_.assign(in.size(), {});
      steps_ = 0;
      for (std::size_t s = 0; s < in.size(); ++s) {
        const std::size_t dim = P::size(*in[s]);
        if (dim > max_components_)
          throw std::invalid_argument("bilevel::hypergrad::forward_mode: level '" + lv.name + "' input " +
                                      std::to_string(s) + " has " + std::to_string(dim) +
                                      " components, above max_components = " + std::to_string(max_components_) +
                                      "; use a reverse-mode strategy for many upper variables");
        tangents_[s].assign(dim, tangent{P::zeros(P::size(lv.theta)), lv.state.zeros_like()});
      }
    }

    template <class Level>
    void on_step(Level& lv, input_list<P> in, const typename L::batch_type& b, const vector_t<P>& g) {
      vector_t<P> g_dot, mixed;
      for (std::size_t s = 0; s < tangents_.size(); ++s) {
        std::vector<scalar_t<P>> unit(P::size(*in[s]), scalar_t<P>(0));
        for (std::size_t c = 0; c < tangents_[s].size(); ++c) {
          auto& t = tangents_[s][c];
          exact_ &= hvp(lv.learner, lv.theta, in, b, t.theta, g_dot, lv.second_order);
          unit[c] = scalar_t<P>(1);
          exact_ &= mixed_jvp(lv.learner, lv.theta, in, b, s, P::from_host(unit), mixed, lv.second_order);
          unit[c] = scalar_t<P>(0);
          P::axpy(scalar_t<P>(1), mixed, g_dot);
          lv.optimizer.jvp(lv.theta, lv.state, g, t.theta, t.state, g_dot);
          hvps_ += 1;
        }
      }
      ++steps_;
    }

    template <class Level>
    const vector_t<P>& response(Level& lv, input_list<P>) { return lv.theta; }

    template <class Level>
    hypergradient_report vjp(Level&, input_list<P> in, const vector_t<P>& v, std::span<vector_t<P>> out) {
      hypergradient_report r{.strategy = "forward_mode", .steps_kept = steps_};
      r.hvp_evals = hvps_;
      r.mixed_evals = hvps_;
      r.exact_second_order = exact_;
      for (std::size_t s = 0; s < out.size(); ++s) {
        if (s >= tangents_.size()) throw std::logic_error("bilevel::hypergrad::forward_mode: vjp before any block");
        std::vector<scalar_t<P>> host(P::size(*in[s]));
        for (std::size_t c = 0; c < host.size(); ++c) host[c] = scalar_t<P>(P::dot(v, tangents_[s][c].theta));
        out[s] = P::from_host(host);
      }
      return r;
    }

   private:
    std::size_t max_components_;
    std::vector<std::vector<tangent>> tangents_;
    std::size_t steps_ = 0;
    std::size_t hvps_ = 0;
    bool exact_ = true;
  };
};

}  // namespace bilevel::hypergrad
