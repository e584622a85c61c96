// SPDX-License-Identifier: MIT
// Mixed operations (DARTS): a network that reads its architecture as an input, with ∂L/∂α,
// (∂²L/∂α∂θ)v and (∂²L/∂θ∂α)u against central differences, alone and beside per-sample
// weights; the architecture's upper objective; and a DARTS step through the solver, the
// finite-difference strategy against the exact one-step hypergradient and both against
// central differences.
#include <doctest/doctest.h>

#include <bilevel/eigen.hpp>
#include <bilevel/learners/architecture_loss.hpp>
#include <bilevel/learners/sequential.hpp>
#include <bilevel/methods/darts.hpp>

#include <numeric>

#include "batches.hpp"
#include "derivative_checks.hpp"
#include "search_cell.hpp"

namespace {
using P = test::P64;
using namespace bilevel::learners;

/// tests/search_cell.hpp's search space.
std::vector<layer::spec> cell() { return test::search_cell(activation::sigmoid); }
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

TEST_CASE("DARTS: a short search lowers the validation loss and derives a plain network") {
  // Three classes set by the sign of x0·x1, which the network's linear path cannot fit; 300
  // weight and architecture steps (second order, the default) on 200 training samples.
  bilevel::data::dataset d;
  d.rows = 240;
  d.cols = 4;
  d.num_classes = 3;
  const auto x = test::random_vector(240 * 4, 11, 2.0);
  d.features.assign(x.begin(), x.end());
  for (std::size_t i = 0; i < 240; ++i) {
    const double r = x[i * 4] * x[i * 4 + 1];  // a label the linear part alone cannot fit
    d.labels.push_back(r > 0.5 ? 0 : (r < -0.5 ? 1 : 2));
    d.ids.push_back(i);
  }
  std::vector<std::size_t> tr(200), va(40);
  std::iota(tr.begin(), tr.end(), std::size_t(0));
  std::iota(va.begin(), va.end(), std::size_t(200));
  auto train = std::make_shared<const bilevel::data::dataset>(d.subset(tr));
  auto val = std::make_shared<const bilevel::data::dataset>(d.subset(va));
  const auto specs = cell();
  auto s = bilevel::methods::darts<P>({1, 1, 4}, specs, train, val, {.batch = 20, .validation_batch = 40, .lr = 0.1,
                                                                      .arch_lr = 3e-2});
  const sequential<P> net({1, 1, 4}, specs);
  std::vector<std::size_t> all_val(40);
  std::iota(all_val.begin(), all_val.end(), std::size_t(0));
  const auto val_batch = make_batch<P>(*val, all_val);
  auto val_loss = [&] {
    const P::vector* in[] = {&s.template level<1>().theta};
    return net.loss(s.template level<0>().theta, in, val_batch);
  };
  CHECK(&s.weights() == &s.template level<0>());
  CHECK(&s.architecture() == &s.template level<1>());
  const double before = val_loss();
  const auto alpha0 = test::host<P>(s.template level<1>().theta);
  CHECK(s.searched_architecture() == alpha0);
  // DARTS's cosine schedule from the config: 200 rows in batches of 20 for 2 epochs, 20 steps.
  auto cosine = bilevel::methods::darts<P>({1, 1, 4}, specs, train, val,
                                           {.batch = 20, .validation_batch = 40, .epochs = 2, .lr = 0.1,
                                            .lr_decay = bilevel::optim::cosine_decay{.lr_min = 0.001}});
  CHECK(cosine.total_iterations() == 20);
  CHECK(cosine.weights().optimizer.lr_at(0) == 0.1);
  CHECK(cosine.weights().optimizer.lr_at(10) == doctest::Approx(0.0505));
  CHECK(cosine.weights().optimizer.lr_at(20) == 0.001);
  CHECK_FALSE(cosine.architecture().optimizer.schedule);
  s.run(300);
  const double after = val_loss();
  MESSAGE("DARTS validation loss " << before << " -> " << after);
  CHECK(after < before);
  CHECK(test::relative_error(test::host<P>(s.template level<1>().theta), alpha0) > 0.0);
  const auto alpha = test::host<P>(s.template level<1>().theta);
  const auto chosen = bilevel::methods::chosen_operations(specs, alpha);
  REQUIRE(chosen.size() == 2);
  CHECK(chosen[0] != 3);  // never the zero operation
  const sequential<P> derived({1, 1, 4}, bilevel::methods::derive_architecture(specs, alpha));
  CHECK(derived.arch_size() == 0);  // no mixed operation left
  CHECK(derived.num_inputs() == 0);
}

TEST_CASE("DARTS: discretisation keeps the strongest non-zero candidate of each edge") {
  const auto specs = cell();
  // edge 1: candidates {dense+relu, dense+tanh, skip, zero}; edge 2: {dense+sigmoid, skip}
  const std::vector<double> alpha = {0.1, 0.7, 0.2, 5.0, 0.3, 0.9};
  const auto chosen = bilevel::methods::chosen_operations(specs, alpha);
  CHECK(chosen == std::vector<std::size_t>{1, 1});  // zero ignored despite the largest α; skip on edge 2
  const auto derived = bilevel::methods::derive_architecture(specs, alpha);
  // dense, tanh, [dense, tanh], [skip: nothing], dense
  CHECK(derived.size() == 5);
}
