// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// First-order: treat the level's solution as if it did not depend on what it reads.
///
/// The hypergradient keeps only the direct term ∂F/∂λ; the path through the lower level is
/// dropped. This is DARTS's first-order variant and the baseline every paper compares
/// against. Free: no products, no memory. Also the natural choice for the top level, whose
/// strategy is never asked for a vjp.
#include <span>

#include "bilevel/core/hypergradient_report.hpp"
#include "bilevel/hypergrad/detail/step_tape.hpp"

namespace bilevel::hypergrad {

struct first_order {
  template <class L, class O>
  class engine {
   public:
    explicit engine(const first_order&) {}
    template <class Level> void begin_block(Level&, input_list<typename L::policy>) {}
    template <class Level>
    void on_step(Level&, input_list<typename L::policy>, const typename L::batch_type&,
                 const vector_t<typename L::policy>&) {}
    template <class Level>
    const vector_t<typename L::policy>& response(Level& lv, input_list<typename L::policy>) {
      return lv.theta;
    }
    template <class Level>
    hypergradient_report vjp(Level&, input_list<typename L::policy> in,
                             const vector_t<typename L::policy>&,
                             std::span<vector_t<typename L::policy>> out) {
      detail::zero_outputs<typename L::policy>(in, out);
      return {.strategy = "first_order"};
    }
  };
};

}  // namespace bilevel::hypergrad
