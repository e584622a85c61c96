// SPDX-License-Identifier: MIT
#pragma once
// Checks every first- and second-order member of a learner against central differences of
// the member one order below, at a given point. Shared by every learner's test.
#include <doctest/doctest.h>

#include <bilevel/bilevel.hpp>

#include "support.hpp"

namespace test {

/// Central differences with step h on a smooth function: truncation O(h²·f''') and round-off
/// O(ε·|f|/h). In double with h = 1e-5 both are ≲ 1e-10 relative for the O(1)-scaled test
/// problems here; `tolerance` (default 1e-7) leaves a wide margin and still catches any wrong
/// term, which shows up at O(1).
template <class L>
void check_learner_derivatives(const L& l, const std::vector<double>& theta_h,
                               const std::vector<std::vector<double>>& inputs_h,
                               const typename L::batch_type& batch, double tolerance = 1e-7) {
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

  // loss value and gradient
  V g;
  const double reported = l.gradient(theta, in, batch, g);
  CHECK(reported == doctest::Approx(l.loss(theta, in, batch)).epsilon(1e-14));
  const auto loss_at = [&](const std::vector<double>& t) { return l.loss(device<P>(t), in, batch); };
#ifdef BILEVEL_TEST_SANITIZED
  // Under the sanitizers (the second pass of ./scripts/test.sh) a θ of more than 256
  // coordinates is checked along 8 random unit directions instead of along every coordinate:
  // that pass looks for memory errors and undefined behaviour, which the same code shows in
  // one evaluation as in thousands (the tiny DARTS supernet's 2 · dim losses took 99 s of it),
  // and the release pass checks every coordinate. Unit directions keep the step h and so the
  // error bounds above.
  if (theta_h.size() > 256) {
    const auto g_h = host<P>(g);
    std::vector<double> exact, numeric;
    for (unsigned k = 0; k < 8; ++k) {
      auto d = random_vector(theta_h.size(), 300 + k);
      const double length = norm(d);
      for (double& x : d) x /= length;
      double dot = 0.0;
      for (std::size_t i = 0; i < d.size(); ++i) dot += g_h[i] * d[i];
      exact.push_back(dot);
      numeric.push_back(
          central_directional([&](const std::vector<double>& t) { return std::vector<double>{loss_at(t)}; },
                              theta_h, d, h)[0]);
    }
    CHECK(relative_error(exact, numeric) <= tolerance);
  } else {
    CHECK(relative_error(host<P>(g), central_gradient(loss_at, theta_h, h)) <= tolerance);
  }
#else
  CHECK(relative_error(host<P>(g), central_gradient(loss_at, theta_h, h)) <= tolerance);
#endif

  // HVP: directional derivative of the gradient along v
  if constexpr (bilevel::has_exact_hvp<L>) {
    V hv;
    l.hvp(theta, in, batch, device<P>(v_h), hv);
    const auto grad_at = [&](const std::vector<double>& t) {
      V out;
      l.gradient(device<P>(t), in, batch, out);
      return host<P>(out);
    };
    CHECK(relative_error(host<P>(hv), central_directional(grad_at, theta_h, v_h, h)) <= tolerance);
  }

  for (std::size_t s = 0; s < inputs.size(); ++s) {
    CAPTURE(s);
    if constexpr (bilevel::input_differentiable_learner<L>) {
      // input gradient: central differences of the loss in input s
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
        // (∂²L/∂in ∂θ) v = directional derivative of the input gradient along θ-direction v
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
      // (∂²L/∂θ ∂in) u = directional derivative of the θ-gradient along input-direction u
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

}  // namespace test
