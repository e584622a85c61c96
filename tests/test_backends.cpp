// SPDX-License-Identifier: MIT
// The central verifications, written once and run on every tensor policy found
// (tests/policies.hpp): every learner's products against central differences, the
// hypergradient strategies against the ridge closed form and the three-level quadratic, and a
// DARTS step; plus agreement between back ends on the same computation.
#include <doctest/doctest.h>

#include <bilevel/eigen.hpp>
#include <bilevel/learners/architecture_loss.hpp>
#include <bilevel/learners/mlp.hpp>
#include <bilevel/learners/sequential.hpp>
#include <bilevel/problems/quadratic.hpp>
#include <bilevel/problems/ridge.hpp>
#include <bilevel/problems/weighted_logistic.hpp>

#include "batches.hpp"
#include "derivative_checks.hpp"
#include "policies.hpp"

namespace {
namespace hg = bilevel::hypergrad;
using namespace bilevel::learners;
using namespace bilevel::problems;

}  // namespace

TEST_CASE_TEMPLATE("backends: every learner's products against central differences", P, BILEVEL_DOUBLE_POLICIES) {
  // Tolerances as in derivative_checks.hpp: h = 1e-5 central differences, ≲ 1e-9 relative.
  const auto ridge = ridge_problem<P>::synthetic(20, 10, 5, 2, 0.5, 4);
  test::check_learner_derivatives(ridge_training_loss<P>(ridge.train), test::random_vector(5, 1),
                                  {test::random_vector(5, 2)}, {});
  test::check_learner_derivatives(quadratic_objective<P>(quadratic_spec::random(4, {3, 2}, 9)), test::random_vector(4, 1),
                                  {test::random_vector(3, 2), test::random_vector(2, 3)}, {});
  const auto logistic = logistic_problem<P>::synthetic(20, 10, 4, 0.2, 6);
  auto w = test::random_vector(20, 2, 0.5);
  for (auto& x : w) x += 1.0;
  test::check_learner_derivatives(weighted_logistic_loss<P>(logistic.train, 0.05), test::random_vector(4, 1), {w}, {});
  // Softmax regression: one dense layer under cross-entropy, per-class weights.
  const mlp<P, class_weights> softmax_regression({5, 3}, activation::identity, loss_kind::cross_entropy,
                                                 class_weights{3});
  test::check_learner_derivatives(softmax_regression, test::host<P>(softmax_regression.initial_parameters(2)),
                                  {{0.5, 1.0, 2.0}}, test::random_batch<P>(6, 5, 3, 4), 1e-6);
  // Linear regression: one dense output under squared error, real-valued targets.
  const sequential<P> linear_regression({1, 1, 5}, {layer::dense{1}}, loss_kind::squared_error);
  auto regression = test::random_batch<P>(6, 5, 1, 5);
  regression.targets = P::matrix_from_host(6, 1, std::vector<typename P::scalar>{0.5, -1.0, 2.0, 0.0, 1.5, -0.5});
  test::check_learner_derivatives(linear_regression, test::random_vector(6, 3), {}, regression, 1e-6);
  for (auto act : {activation::relu, activation::tanh, activation::sigmoid}) {
    CAPTURE(to_string(act));
    const mlp<P, sample_weights> net({5, 4, 3}, act, loss_kind::cross_entropy, sample_weights{6});
    test::check_learner_derivatives(net, test::host<P>(net.initial_parameters(7)), {{1.0, 0.5, 1.5, 0.8, 1.2, 0.9}},
                                    test::random_batch<P>(6, 5, 3, 3), 1e-6);
  }
  const sequential<P> cnn({6, 6, 2}, {layer::conv{3, 3, 1, 1}, layer::act{activation::tanh}, layer::max_pool{2},
                                      layer::conv{2, 2, 1, 0}, layer::act{activation::sigmoid}, layer::avg_pool{2},
                                      layer::flatten{}, layer::dense{3}});
  test::check_learner_derivatives(cnn, test::host<P>(cnn.initial_parameters(4)), {}, test::random_batch<P>(3, 72, 3, 5), 1e-6);
  const sequential<P> darts({1, 1, 4}, {layer::dense{5}, layer::act{activation::tanh},
                                        layer::mixed{{layer::candidate{{layer::dense{5}, layer::act{activation::tanh}}},
                                                      layer::skip(), layer::zero_op()}},
                                        layer::dense{3}});
  test::check_learner_derivatives(darts, test::host<P>(darts.initial_parameters(2)), {{0.2, -0.1, 0.3}},
                                  test::random_batch<P>(5, 4, 3, 1), 1e-6);
}

TEST_CASE_TEMPLATE("backends: ridge hypergradients against the closed form and the unrolled objective", P,
                   BILEVEL_DOUBLE_POLICIES) {
  const auto prob = ridge_problem<P>::synthetic(60, 40, 8, 3, 0.5, 7);
  const std::vector<double> lam = {-1.0, -0.5, -1.5, 0.0, -1.0, -2.0, -0.3, -1.2};
  auto hypergradient = [&](auto strategy, std::vector<double> theta0, std::size_t steps) {
    auto inner = bilevel::make_level("theta", ridge_training_loss<P>(prob.train), bilevel::optim::sgd<P>{.lr = 0.1},
                                     strategy, test::device<P>(theta0))
                     .reading({1})
                     .steps_per_iteration(steps);
    auto outer = bilevel::make_level("lambda", validation_least_squares<P>(prob.validation, 8),
                                     bilevel::optim::sgd<P>{.lr = 0.1}, hg::first_order{}, test::device<P>(lam))
                     .reading({0});
    bilevel::solver s(std::move(inner), std::move(outer));
    if (steps > 1) s.step_level(0);
    return test::host<P>(s.hypergradient(1).gradient);
  };
  const auto closed = prob.hypergradient(lam);
  // Same bounds and reasons as test_ridge_hypergradients.cpp.
  CHECK(test::relative_error(hypergradient(hg::implicit_cg{}, prob.solution(lam), 1), closed) <= 1e-8);
  CHECK(test::relative_error(hypergradient(hg::neumann{.iterations = 64}, prob.solution(lam), 1), closed) <= 1e-8);
  CHECK(test::relative_error(hypergradient(hg::fixed_point{}, prob.solution(lam), 1), closed) <= 1e-8);
  CHECK(test::relative_error(hypergradient(hg::unrolled{}, std::vector<double>(8, 0.0), 640), closed) <= 1e-8);
  CHECK(test::relative_error(hypergradient(hg::forward_mode{}, std::vector<double>(8, 0.0), 640), closed) <= 1e-8);
}

TEST_CASE("backends agree: the same network, data and direction give the same products") {
#ifdef BILEVEL_TEST_XTENSOR
  using E = bilevel::policy::eigen<double>;
  using X = bilevel::policy::xtensor<double>;
  const std::vector<layer::spec> specs = {layer::conv{3, 3, 2, 1}, layer::act{activation::relu}, layer::flatten{},
                                          layer::dense{4}, layer::act{activation::tanh}, layer::dense{3}};
  const sequential<E> ne({7, 7, 1}, specs);
  const sequential<X> nx({7, 7, 1}, specs);
  const auto theta = test::host<E>(ne.initial_parameters(3));
  CHECK(theta == test::host<X>(nx.initial_parameters(3)));  // seeded initialisation is back-end independent
  const auto v = test::random_vector(theta.size(), 4);
  E::vector ge, he;
  X::vector gx, hx;
  ne.gradient(test::device<E>(theta), {}, test::random_batch<E>(4, 49, 3, 2), ge);
  nx.gradient(test::device<X>(theta), {}, test::random_batch<X>(4, 49, 3, 2), gx);
  ne.hvp(test::device<E>(theta), {}, test::random_batch<E>(4, 49, 3, 2), test::device<E>(v), he);
  nx.hvp(test::device<X>(theta), {}, test::random_batch<X>(4, 49, 3, 2), test::device<X>(v), hx);
  // Different GEMM kernels sum in different orders: agreement to round-off, ~1e-15 relative.
  CHECK(test::relative_error(test::host<X>(gx), test::host<E>(ge)) <= 1e-12);
  CHECK(test::relative_error(test::host<X>(hx), test::host<E>(he)) <= 1e-12);
#else
  MESSAGE("SKIPPED: only the Eigen policy is built (install libxtensor-dev and libopenblas-dev)");
#endif
}
