// SPDX-License-Identifier: MIT
#pragma once
// tests/derivative_checks.hpp for the CUDA suite (that header brings Eigen through
// bilevel.hpp): every first- and second-order member of a learner against central
// differences of the member one order below, all evaluated on the learner's own policy.
#include <doctest/doctest.h>

#include <vector>

#include <bilevel/core/learner.hpp>

#include "common.hpp"

namespace cuda_test {

/// h = 1e-5 central differences on a smooth function: truncation O(h²·f''') and round-off
/// O(ε·|f|/h), both ≲ 1e-10 relative in double for these O(1) problems; the default 1e-7
/// leaves a wide margin and still catches any wrong term, which shows up at O(1).
template <class L>
void check_learner_derivatives(const L& l, const std::vector<double>& theta_h,
                               const std::vector<std::vector<double>>& inputs_h, const typename L::batch_type& batch,
                               double tolerance = 1e-7) {
  using P = typename L::policy;
  using V = bilevel::vector_t<P>;
  constexpr double h = 1e-5;
  std::vector<V> inputs;
  for (const auto& in : inputs_h) inputs.push_back(device<P>(in));
  auto view = [](const std::vector<V>& vs) {
    std::vector<const V*> p;
    for (const auto& v : vs) p.push_back(&v);
    return p;
  };
  const auto in_ptrs = view(inputs);
  const bilevel::input_list<P> in(in_ptrs);
  const V theta = device<P>(theta_h);
  const auto v_h = random_vector(theta_h.size(), 101);

  V g;
  const double reported = l.gradient(theta, in, batch, g);
  CHECK(reported == doctest::Approx(l.loss(theta, in, batch)).epsilon(1e-14));
  const auto loss_at = [&](const std::vector<double>& t) { return l.loss(device<P>(t), in, batch); };
  CHECK(relative_error(host<P>(g), central_gradient(loss_at, theta_h, h)) <= tolerance);

  const auto grad_at = [&](const std::vector<double>& t) {
    V out;
    l.gradient(device<P>(t), in, batch, out);
    return host<P>(out);
  };
  if constexpr (bilevel::has_exact_hvp<L>) {
    V hv;
    l.hvp(theta, in, batch, device<P>(v_h), hv);
    CHECK(relative_error(host<P>(hv), central_directional(grad_at, theta_h, v_h, h)) <= tolerance);
  }
  for (std::size_t s = 0; s < inputs.size(); ++s) {
    CAPTURE(s);
    if constexpr (bilevel::input_differentiable_learner<L>) {
      V gi;
      l.input_gradient(theta, in, batch, s, gi);
      const auto loss_in = [&](const std::vector<double>& x) {
        auto moved = inputs;
        moved[s] = device<P>(x);
        const auto p = view(moved);
        return l.loss(theta, bilevel::input_list<P>(p), batch);
      };
      CHECK(relative_error(host<P>(gi), central_gradient(loss_in, inputs_h[s], h)) <= tolerance);
      if constexpr (bilevel::has_exact_mixed_vjp<L>) {
        V mv;
        l.mixed_vjp(theta, in, batch, s, device<P>(v_h), mv);
        const auto input_grad_at = [&](const std::vector<double>& t) {
          V out;
          l.input_gradient(device<P>(t), in, batch, s, out);
          return host<P>(out);
        };
        CHECK(relative_error(host<P>(mv), central_directional(input_grad_at, theta_h, v_h, h)) <= tolerance);
      }
    }
    if constexpr (bilevel::has_exact_mixed_jvp<L>) {
      const auto u_h = random_vector(inputs_h[s].size(), 202 + unsigned(s));
      V mu;
      l.mixed_jvp(theta, in, batch, s, device<P>(u_h), mu);
      const auto grad_in = [&](const std::vector<double>& x) {
        auto moved = inputs;
        moved[s] = device<P>(x);
        const auto p = view(moved);
        V out;
        l.gradient(theta, bilevel::input_list<P>(p), batch, out);
        return host<P>(out);
      };
      CHECK(relative_error(host<P>(mu), central_directional(grad_in, inputs_h[s], u_h, h)) <= tolerance);
    }
  }
}

}  // namespace cuda_test
