// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// The update rule of L2RW's weights (Ren et al., ICML 2018) as an optimizer of the upper
/// level: it ignores the current value and sets
///     w ← scale · max(−g, 0) / Σ_i max(−g_i, 0)      (w ← 0 when no entry of −g is positive),
/// g the hypergradient of the validation loss with respect to the weights. With the weights
/// at zero when g is taken (see methods/l2rw.hpp), −g_i is proportional to the alignment of
/// sample i's training gradient with the validation gradient. `scale` converts the paper's
/// weights (summing to 1 over the batch, loss Σ w_i ℓ_i) to a learner that averages
/// (1/B) Σ c_i ℓ_i: scale = B. It has no state and no VJP: nothing differentiates through it.
#include <cstddef>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "bilevel/core/elementwise.hpp"
#include "bilevel/core/entry_scalars.hpp"
#include "bilevel/core/optimizer.hpp"

namespace bilevel::optim {

template <tensor_policy P>
struct l2rw_rule {
  using policy = P;
  double scale = 1.0;

  optimizer_state<P> init(const vector_t<P>&) const {
    if (!(scale > 0.0 && scale < std::numeric_limits<double>::infinity()))
      throw std::invalid_argument("bilevel::optim::l2rw_rule: scale must be finite and > 0, got " + std::to_string(scale));
    return {};
  }
  void step(vector_t<P>& theta, optimizer_state<P>& state, const vector_t<P>& g) const {
    vector_t<P> w;
    P::transform(g, w, elementwise::negative_part{});
    if constexpr (device_resident<P> && nn_tensor_policy<P>) {
      // The sum and its reciprocal stay on the device: no host wait in the step.
      vector_t<P> factor;
      P::transform(bilevel::detail::sum_entry<P>(w), factor, elementwise::reciprocal_if_positive{scale});
      bilevel::detail::scale_by_entry<P>(w, factor);
    } else {
      const double total = P::sum(w);
      P::scale(w, scalar_t<P>(total > 0.0 ? scale / total : 0.0));
    }
    theta = std::move(w);
    ++state.step;
  }
};

}  // namespace bilevel::optim
