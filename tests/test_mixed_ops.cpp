// SPDX-License-Identifier: MIT
// Mixed operations (DARTS): a network that reads its architecture as an input, with ∂L/∂α,
// (∂²L/∂α∂θ)v and (∂²L/∂θ∂α)u against central differences, alone and beside per-sample
// weights; the architecture's upper objective; and a DARTS step through the solver, the
// finite-difference strategy against the exact one-step hypergradient and both against
// central differences.
#include <doctest/doctest.h>

#include <bilevel/bilevel.hpp>
#include <bilevel/learners/architecture_loss.hpp>
#include <bilevel/learners/sequential.hpp>

#include "batches.hpp"
#include "derivative_checks.hpp"

namespace {
using P = test::P64;
using namespace bilevel::learners;


/// dense → tanh → mixed{dense+relu, dense+tanh, skip, zero} → mixed{dense+sigmoid, skip} → dense
std::vector<layer::spec> cell() {
  return {layer::dense{5}, layer::act{activation::tanh},
          layer::mixed{{layer::candidate{{layer::dense{5}, layer::act{activation::relu}}},
                        layer::candidate{{layer::dense{5}, layer::act{activation::tanh}}}, layer::skip(),
                        layer::zero_op()}},
          layer::mixed{{layer::candidate{{layer::dense{5}, layer::act{activation::sigmoid}}}, layer::skip()}},
          layer::dense{3}};
}
}  // namespace

TEST_CASE("mixed ops: the architecture is an input with every exact product") {
  const sequential<P> net({1, 1, 4}, cell());
  CHECK(net.num_inputs() == 1);
  CHECK(net.arch_size() == 6);
  const std::vector<double> alpha = {0.3, -0.2, 0.1, 0.5, -0.4, 0.2};
  test::check_learner_derivatives(net, test::host<P>(net.initial_parameters(3)), {alpha}, test::random_batch<P>(5, 4, 3, 1), 1e-6);
}

TEST_CASE("mixed ops beside per-sample weights: slots are weights, then architecture") {
  const sequential<P, sample_weights> net({1, 1, 4}, cell(), loss_kind::cross_entropy, sample_weights{5});
  CHECK(net.arch_slot() == 1);
  test::check_learner_derivatives(net, test::host<P>(net.initial_parameters(4)),
                                  {{1.0, 0.5, 1.5, 0.8, 1.2}, {0.1, 0.2, -0.3, 0.0, 0.4, -0.1}},
                                  test::random_batch<P>(5, 4, 3, 2), 1e-6);
}

TEST_CASE("architecture_loss: ∂L/∂α and ∂L/∂θ* against central differences") {
  const architecture_loss<sequential<P>> upper{sequential<P>({1, 1, 4}, cell())};
  const auto theta = test::host<P>(upper.network().initial_parameters(5));
  test::check_learner_derivatives(upper, {0.3, -0.2, 0.1, 0.5, -0.4, 0.2}, {theta}, test::random_batch<P>(5, 4, 3, 6), 1e-6);
}

TEST_CASE("mixed ops: a missing or mis-sized architecture input is named") {
  const sequential<P> net({1, 1, 4}, cell());
  const auto theta = net.initial_parameters(1);
  CHECK_THROWS_WITH_AS(net.loss(theta, {}, test::random_batch<P>(5, 4, 3, 1)), doctest::Contains("reads its architecture as input 0"),
                       std::invalid_argument);
  const P::vector short_alpha = P::zeros(3);
  const P::vector* in[] = {&short_alpha};
  CHECK_THROWS_WITH_AS(net.loss(theta, in, test::random_batch<P>(5, 4, 3, 1)),
                       doctest::Contains("architecture input has 3 entries, the network's mixed operations have 6"),
                       std::invalid_argument);
}

TEST_CASE("DARTS through the solver: finite differences against the exact one-step hypergradient") {
  using net_t = sequential<P>;
  const net_t net({1, 1, 4}, cell());
  const auto train = test::random_batch<P>(6, 4, 3, 7), val = test::random_batch<P>(6, 4, 3, 8);
  const auto w0 = net.initial_parameters(9);
  const std::vector<double> alpha0 = {0.3, -0.2, 0.1, 0.5, -0.4, 0.2};
  const double lr = 0.3;
  auto solve = [&](auto strategy) {
    auto weights = bilevel::make_level("weights", net, bilevel::optim::sgd<P>{.lr = lr, .momentum = 0.9, .weight_decay = 3e-4},
                                       strategy, w0, [&] { return train; })
                       .reading({1});
    auto arch = bilevel::make_level("alpha", architecture_loss<net_t>(net), bilevel::optim::adam<P>{.lr = 3e-4},
                                    bilevel::hypergrad::first_order{}, test::device<P>(alpha0), [&] { return val; })
                    .reading({0});
    bilevel::solver s(std::move(weights), std::move(arch));
    return test::host<P>(s.hypergradient(1).gradient);
  };
  const auto fd = solve(bilevel::hypergrad::finite_difference{});
  const auto exact = solve(bilevel::hypergrad::lookahead{.steps = 1});
  // One virtual step w' = w − η(∇L_tr + wd·w) (zero momentum buffer), F(α) = L_val(w'(α), α),
  // written out independently:
  auto objective = [&](const std::vector<double>& a) {
    const P::vector av = test::device<P>(a);
    const P::vector* in[] = {&av};
    P::vector g;
    net.gradient(w0, in, train, g);
    const P::vector w1 = w0 - lr * (g + 3e-4 * w0);
    return net.loss(w1, in, val);
  };
  const auto reference = test::central_gradient(objective, alpha0, 1e-5);
  // h = 1e-5 central differences: ≲ 1e-9 relative. The DARTS strategy's own differences
  // (s = 1e-4 in double) add O(s²) ≈ 1e-8 relative.
  CHECK(test::relative_error(exact, reference) <= 1e-6);
  CHECK(test::relative_error(fd, exact) <= 1e-6);
  CHECK(test::relative_error(fd, reference) <= 1e-6);
}
