// SPDX-License-Identifier: MIT
// Logistic regression with a learned weight per training sample: implicit and unrolled
// hypergradients against central differences of the outer objective, with the inner
// problem solved to tolerance. No closed form here: the reference is the outer objective
// itself, re-solved at perturbed weights.
#include <doctest/doctest.h>

#include <Eigen/Dense>
#include <bilevel/eigen.hpp>
#include <bilevel/problems/weighted_logistic.hpp>

#include "policies.hpp"
#include "support.hpp"

namespace {

using P = test::P64;
namespace hg = bilevel::hypergrad;
using bilevel::problems::logistic_problem;
using bilevel::problems::validation_logistic_loss;
using bilevel::problems::weighted_logistic_loss;

constexpr std::size_t n = 40, features = 5;
constexpr double l2 = 0.1;
const auto problem = logistic_problem<P>::synthetic(n, 30, features, 0.2, 3);
const auto weights = [] {
  auto w = test::random_vector(n, 9, 0.5);
  for (auto& x : w) x += 1.0;  // weights in [0.5, 1.5]
  return w;
}();

/// θ*(w) by Newton's method to machine precision: the reference must be more accurate than
/// anything it checks. The loss is strictly convex (l2 > 0), so Newton converges quadratically.
std::vector<double> solve_inner(const std::vector<double>& w) {
  const weighted_logistic_loss<P> loss(problem.train, l2);
  const auto wv = test::device<P>(w);
  const P::vector* in[] = {&wv};
  P::vector theta = P::zeros(features), g, col;
  for (int it = 0; it < 30; ++it) {
    loss.gradient(theta, in, {}, g);
    if (g.norm() < 1e-15) break;
    Eigen::MatrixXd h(features, features);
    for (std::size_t c = 0; c < features; ++c) {
      loss.hvp(theta, in, {}, P::vector::Unit(features, long(c)), col);
      h.col(long(c)) = col;
    }
    theta -= h.ldlt().solve(g);
  }
  return test::host<P>(theta);
}

double outer_objective(const std::vector<double>& w) {
  const validation_logistic_loss<P> val(problem.validation, n);
  const auto theta = test::device<P>(solve_inner(w));
  const P::vector* in[] = {&theta};
  return val.loss(P::zeros(n), in, {});
}

/// The solver on any policy (the same data: generated in double from the same seed).
template <class Q, class Strategy>
auto make_solver(Strategy strategy, std::vector<double> theta0, std::size_t steps) {
  using P = Q;
  const auto problem = logistic_problem<P>::synthetic(n, 30, features, 0.2, 3);
  auto inner = bilevel::make_level("theta", weighted_logistic_loss<P>(problem.train, l2),
                                   bilevel::optim::sgd<P>{.lr = 1.0}, strategy, test::device<P>(theta0))
                   .reading({1})
                   .steps_per_iteration(steps);
  auto outer = bilevel::make_level("weights", validation_logistic_loss<P>(problem.validation, n),
                                   bilevel::optim::sgd<P>{.lr = 0.1}, hg::first_order{}, test::device<P>(weights))
                   .reading({0});
  return bilevel::solver(std::move(inner), std::move(outer));
}

// h = 1e-4 on weights of size ~1: the outer objective is smooth (analytic in w), truncation
// h²|F'''| ~ 1e-9 relative, round-off 1e-16/1e-4 = 1e-12.
const auto reference = test::central_gradient(outer_objective, weights, 1e-4);

}  // namespace

TEST_CASE_TEMPLATE("logistic reweighting: implicit CG matches central differences of the solved outer objective", Q, BILEVEL_SOLVER_DOUBLE_POLICIES) {
  auto s = make_solver<Q>(hg::implicit_cg{}, solve_inner(weights), 1);
  const auto r = s.hypergradient(1);
  const double err = test::relative_error(test::host<Q>(r.gradient), reference);
  MESSAGE("implicit_cg vs central differences: " << err);
  // The inner solution is exact to ~1e-15 and the solve to 1e-10; the reference carries
  // ~1e-9 of truncation: 1e-7 separates those from any real error (a wrong term is O(1)).
  CHECK(err <= 1e-7);
}

TEST_CASE_TEMPLATE("logistic reweighting: Neumann and fixed point match central differences", Q, BILEVEL_SOLVER_DOUBLE_POLICIES) {
  auto a = make_solver<Q>(hg::neumann{.iterations = 300}, solve_inner(weights), 1);
  auto b = make_solver<Q>(hg::fixed_point{}, solve_inner(weights), 1);
  const double ea = test::relative_error(test::host<Q>(a.hypergradient(1).gradient), reference);
  const double eb = test::relative_error(test::host<Q>(b.hypergradient(1).gradient), reference);
  MESSAGE("neumann: " << ea << ", fixed point: " << eb);
  CHECK(ea <= 1e-7);
  CHECK(eb <= 1e-7);
}

TEST_CASE_TEMPLATE("logistic reweighting: unrolled through a converged run matches central differences", Q, BILEVEL_SOLVER_DOUBLE_POLICIES) {
  // 600 gradient steps with η = 1 from zero: the loss is l2-strongly convex with curvature
  // in [0.1, ~0.5], so the iterate and its derivative contract by ≤ 0.9 per step: 0.9^600 ≈ 1e-27.
  auto s = make_solver<Q>(hg::unrolled{}, std::vector<double>(features, 0.0), 600);
  s.step_level(0);
  const double err = test::relative_error(test::host<Q>(s.hypergradient(1).gradient), reference);
  MESSAGE("unrolled (600 steps) vs central differences: " << err);
  CHECK(err <= 1e-7);
}

TEST_CASE("logistic reweighting: the learned weights turn down flipped labels") {
  // Not a derivative check: the sign of the hypergradient should say that raising the weight
  // of a flipped sample hurts validation, on average.
  auto s = make_solver<P>(hg::implicit_cg{}, solve_inner(weights), 1);
  const auto g = test::host<P>(s.hypergradient(1).gradient);
  double flipped = 0.0, clean = 0.0;
  std::size_t nf = 0, nc = 0;
  for (std::size_t i = 0; i < n; ++i) {
    if (problem.flipped[i]) flipped += g[i], ++nf;
    else clean += g[i], ++nc;
  }
  REQUIRE(nf > 0);
  CHECK(flipped / nf > clean / nc);
}
