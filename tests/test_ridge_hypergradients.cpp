// SPDX-License-Identifier: MIT
// Every hypergradient strategy on ridge regression with a learned per-feature log-penalty,
// against the closed form (bilevel/problems/ridge.hpp) and against central differences of
// the outer objective the strategy claims to differentiate.
#include <doctest/doctest.h>

#include <bilevel/eigen.hpp>
#include <bilevel/problems/ridge.hpp>

#include "policies.hpp"
#include "support.hpp"

namespace {

using bilevel::problems::ridge_problem;
using bilevel::problems::ridge_training_loss;
using bilevel::problems::validation_least_squares;
namespace hg = bilevel::hypergrad;

constexpr std::size_t d = 8;
template <class P>
const auto problem = ridge_problem<P>::synthetic(60, 40, d, 3, 0.5, 7);
const std::vector<double> log_penalty = {-1.0, -0.5, -1.5, 0.0, -1.0, -2.0, -0.3, -1.2};
// Gershgorin bound on λ_max(XᵀX/n + diag e^λ) is ~6 for this data; η = 0.1 keeps every
// gradient step a contraction (η λ_max < 1).
constexpr double eta = 0.1;

template <class P, class Strategy, class Opt = bilevel::optim::sgd<P>>
auto make_solver(Strategy strategy, std::size_t steps, std::vector<double> theta0, Opt opt = {.lr = eta}) {
  auto inner = bilevel::make_level("theta", ridge_training_loss<P>(problem<P>.train), opt, strategy,
                                   test::device<P>(theta0))
                   .reading({1})
                   .steps_per_iteration(steps);
  auto outer = bilevel::make_level("log_penalty", validation_least_squares<P>(problem<P>.validation, d),
                                   bilevel::optim::sgd<P>{.lr = 0.1}, hg::first_order{},
                                   test::device<P>(log_penalty))
                   .reading({0});
  return bilevel::solver(std::move(inner), std::move(outer));
}

/// The outer objective of T plain gradient steps from theta0, computed independently of the
/// library's optimizer and strategies.
template <class P>
double unrolled_objective(const std::vector<double>& lam, std::vector<double> theta, std::size_t steps,
                          double momentum = 0.0, double wd = 0.0) {
  using S = typename P::scalar;
  const ridge_training_loss<P> inner(problem<P>.train);
  const auto lam_v = test::device<P>(lam);
  const typename P::vector* in[] = {&lam_v};
  typename P::vector th = test::device<P>(theta), g, m = P::zeros(d);
  for (std::size_t t = 0; t < steps; ++t) {
    inner.gradient(th, in, {}, g);
    P::axpy(S(wd), th, g);
    P::scale(m, S(momentum));
    P::axpy(S(1), g, m);
    P::axpy(S(-eta), m, th);
  }
  return problem<P>.validation_loss(test::host<P>(th));
}

}  // namespace

TEST_CASE_TEMPLATE("ridge: implicit CG at the exact inner solution matches the closed form to 1e-8", P, BILEVEL_DOUBLE_POLICIES) {
  auto s = make_solver<P>(hg::implicit_cg{}, 1, problem<P>.solution(log_penalty));
  const auto r = s.hypergradient(1);
  const double err = test::relative_error(test::host<P>(r.gradient), problem<P>.hypergradient(log_penalty));
  MESSAGE("implicit_cg relative error vs closed form: " << err << "; " << r.reports.at(0));
  // The solve runs to a relative residual of 1e-10 (default for double); with κ ≈ 20 the
  // solution error is at most κ·1e-10 = 2e-9, under the required 1e-8.
  CHECK(err <= 1e-8);
  CHECK(r.reports.at(0).converged);
  CHECK(r.reports.at(0).residual <= 1e-9);
  CHECK(r.reports.at(0).exact_second_order);
  CHECK(r.reports.at(0).iterations <= d);  // CG on an 8x8 SPD system: at most 8 steps in exact arithmetic (+ round-off)
}

TEST_CASE_TEMPLATE("ridge: Neumann converges to the closed form as its iterations grow", P, BILEVEL_DOUBLE_POLICIES) {
  const auto closed = problem<P>.hypergradient(log_penalty);
  double previous = 1e300;
  for (std::size_t k : {2u, 4u, 8u, 16u, 32u, 64u}) {
    auto s = make_solver<P>(hg::neumann{.iterations = k}, 1, problem<P>.solution(log_penalty));
    const auto r = s.hypergradient(1);
    const double err = test::relative_error(test::host<P>(r.gradient), closed);
    MESSAGE("neumann K=" << k << " relative error " << err << ", residual " << r.reports[0].residual);
    // Strictly falls with K until it reaches round-off (~1e-15 here), where it may level off.
    if (previous > 1e-13) CHECK(err < previous);
    previous = err;
  }
  // The error contracts by about (1 − λ_min/λ_max) per term; 64 terms reach round-off.
  CHECK(previous <= 1e-8);
}

TEST_CASE_TEMPLATE("ridge: fixed point of the optimizer's map matches the closed form, with and without momentum", P, BILEVEL_DOUBLE_POLICIES) {
  const auto closed = problem<P>.hypergradient(log_penalty);
  for (double momentum : {0.0, 0.9}) {
    bilevel::optim::sgd<P> opt{.lr = eta, .momentum = momentum};
    auto s = make_solver<P>(hg::fixed_point{.max_iterations = 5000}, 1, problem<P>.solution(log_penalty), opt);
    const auto r = s.hypergradient(1);
    const double err = test::relative_error(test::host<P>(r.gradient), closed);
    MESSAGE("fixed_point momentum=" << momentum << " error " << err << ", " << r.reports[0]);
    CHECK(r.reports[0].converged);
    // Stops when successive iterates differ by 1e-10 relative; the remaining error is that
    // divided by (1 − contraction) ≈ 1/0.04: ~3e-9.
    CHECK(err <= 1e-8);
  }
}

TEST_CASE_TEMPLATE("ridge: unrolled through T steps matches central differences of the T-step objective", P, BILEVEL_DOUBLE_POLICIES) {
  const std::vector<double> theta0(d, 0.0);
  for (std::size_t steps : {1u, 5u, 30u}) {
    auto s = make_solver<P>(hg::unrolled{}, steps, theta0);
    s.step_level(0);
    const auto r = s.hypergradient(1);
    const auto fd = test::central_gradient([&](const auto& l) { return unrolled_objective<P>(l, theta0, steps); },
                                           log_penalty, 1e-5);
    const double err = test::relative_error(test::host<P>(r.gradient), fd);
    MESSAGE("unrolled T=" << steps << " vs central differences: " << err);
    // h = 1e-5: truncation h²·|G'''| ~ 1e-10 and round-off ε|G|/h ~ 1e-11, so 1e-6 leaves
    // four orders of margin while still catching any missing term.
    CHECK(err <= 1e-6);
    CHECK(r.reports[0].steps_kept == steps);
  }
}

TEST_CASE_TEMPLATE("ridge: unrolled through momentum and weight decay matches central differences", P, BILEVEL_DOUBLE_POLICIES) {
  const std::vector<double> theta0(d, 0.0);
  const std::size_t steps = 20;
  auto s = make_solver<P>(hg::unrolled{}, steps, theta0, {.lr = eta, .momentum = 0.5, .weight_decay = 0.01});
  s.step_level(0);
  const auto r = s.hypergradient(1);
  const auto fd = test::central_gradient(
      [&](const auto& l) { return unrolled_objective<P>(l, theta0, steps, 0.5, 0.01); }, log_penalty, 1e-5);
  CHECK(test::relative_error(test::host<P>(r.gradient), fd) <= 1e-6);
}

TEST_CASE_TEMPLATE("ridge: unrolled approaches the closed form as T grows", P, BILEVEL_DOUBLE_POLICIES) {
  const auto closed = problem<P>.hypergradient(log_penalty);
  double previous = 1e300;
  for (std::size_t steps : {10u, 40u, 160u, 640u}) {
    auto s = make_solver<P>(hg::unrolled{}, steps, std::vector<double>(d, 0.0));
    s.step_level(0);
    const double err = test::relative_error(test::host<P>(s.hypergradient(1).gradient), closed);
    MESSAGE("unrolled T=" << steps << " vs closed form: " << err);
    CHECK(err < previous);
    previous = err;
  }
  // contraction 1 − ηλ_min ≈ 0.96 per step: 0.96^640 ≈ 5e-12
  CHECK(previous <= 1e-8);
}

TEST_CASE_TEMPLATE("ridge: truncated unrolling differentiates exactly the last K steps", P, BILEVEL_DOUBLE_POLICIES) {
  const std::vector<double> theta0(d, 0.0);
  const std::size_t steps = 40, keep = 10;
  auto s = make_solver<P>(hg::unrolled{.keep_last = keep}, steps, theta0);
  s.step_level(0);
  const auto r = s.hypergradient(1);
  CHECK(r.reports[0].steps_kept == keep);
  // Independently: freeze θ after T−K steps at the nominal λ, differentiate the last K.
  const ridge_training_loss<P> inner(problem<P>.train);
  const auto lam_v = test::device<P>(log_penalty);
  const typename P::vector* in[] = {&lam_v};
  typename P::vector th = P::zeros(d), g;
  for (std::size_t t = 0; t < steps - keep; ++t) {
    inner.gradient(th, in, {}, g);
    P::axpy(typename P::scalar(-eta), g, th);
  }
  const auto frozen = test::host<P>(th);
  const auto fd = test::central_gradient([&](const auto& l) { return unrolled_objective<P>(l, frozen, keep); },
                                         log_penalty, 1e-5);
  CHECK(test::relative_error(test::host<P>(r.gradient), fd) <= 1e-6);
}

TEST_CASE_TEMPLATE("ridge: forward mode equals reverse mode through the same steps", P, BILEVEL_DOUBLE_POLICIES) {
  const std::vector<double> theta0(d, 0.0);
  bilevel::optim::sgd<P> opt{.lr = eta, .momentum = 0.7, .weight_decay = 0.02, .nesterov = true};
  auto rev = make_solver<P>(hg::unrolled{}, 25, theta0, opt);
  auto fwd = make_solver<P>(hg::forward_mode{}, 25, theta0, opt);
  rev.step_level(0);
  fwd.step_level(0);
  const auto a = test::host<P>(rev.hypergradient(1).gradient);
  const auto r = fwd.hypergradient(1);
  // Same derivative, different association of the same products: round-off only.
  CHECK(test::relative_error(test::host<P>(r.gradient), a) <= 1e-12);
  CHECK(r.reports[0].steps_kept == 25);
}

TEST_CASE_TEMPLATE("ridge: finite difference matches the DARTS formula computed here", P, BILEVEL_DOUBLE_POLICIES) {
  // Start away from the optimum so the one-step response is not trivial.
  const auto theta = test::random_vector(d, 3);
  auto s = make_solver<P>(hg::finite_difference{}, 1, theta);
  const auto r = s.hypergradient(1);
  CHECK_FALSE(r.reports[0].exact_second_order);

  // DARTS, written out: w' = w − η∇_w L(w, λ); v = ∇_{w'} F(w');
  // g = −η [∇_λ L(w + εv, λ) − ∇_λ L(w − εv, λ)] / 2ε with ε = 1e-4/‖v‖ (double default).
  const ridge_training_loss<P> inner(problem<P>.train);
  const validation_least_squares<P> outer(problem<P>.validation, d);
  const auto lam_v = test::device<P>(log_penalty);
  const typename P::vector* in[] = {&lam_v};
  const auto w = theta;
  typename P::vector g, v, gp, gm;
  inner.gradient(test::device<P>(w), in, {}, g);
  std::vector<double> w1 = w, wp = w, wm = w;
  const auto gh = test::host<P>(g);
  for (std::size_t i = 0; i < d; ++i) w1[i] -= eta * gh[i];
  const typename P::vector w1v = test::device<P>(w1);
  const typename P::vector* in_outer[] = {&w1v};
  outer.input_gradient(P::zeros(d), in_outer, {}, 0, v);
  const double eps = 1e-4 / P::norm(v);
  const auto vh = test::host<P>(v);
  for (std::size_t i = 0; i < d; ++i) wp[i] += eps * vh[i], wm[i] -= eps * vh[i];
  inner.input_gradient(test::device<P>(wp), in, {}, 0, gp);
  inner.input_gradient(test::device<P>(wm), in, {}, 0, gm);
  const auto gph = test::host<P>(gp), gmh = test::host<P>(gm);
  std::vector<double> darts(d);
  for (std::size_t i = 0; i < d; ++i) darts[i] = -eta * (gph[i] - gmh[i]) / (2 * eps);
  CHECK(test::relative_error(test::host<P>(r.gradient), darts) <= 1e-12);

  // And it approximates the exact one-step (look-ahead) hypergradient: the mixed product is
  // linear in w here, so central differences are exact up to round-off ε|∇_λL|/ε_fd ~ 1e-10.
  auto exact = make_solver<P>(hg::lookahead{.steps = 1}, 1, theta);
  CHECK(test::relative_error(test::host<P>(r.gradient), test::host<P>(exact.hypergradient(1).gradient)) <= 1e-8);
}

TEST_CASE_TEMPLATE("ridge: look-ahead through several virtual steps matches central differences and leaves θ alone", P, BILEVEL_DOUBLE_POLICIES) {
  const auto theta = test::random_vector(d, 5);
  auto s = make_solver<P>(hg::lookahead{.steps = 3}, 1, theta);
  const auto r = s.hypergradient(1);
  const auto fd = test::central_gradient([&](const auto& l) { return unrolled_objective<P>(l, theta, 3); },
                                         log_penalty, 1e-5);
  CHECK(test::relative_error(test::host<P>(r.gradient), fd) <= 1e-6);
  CHECK(test::relative_error(test::host<P>(s.template level<0>().theta), theta) == 0.0);
}

TEST_CASE_TEMPLATE("ridge: first order ignores the lower level entirely", P, BILEVEL_DOUBLE_POLICIES) {
  auto s = make_solver<P>(hg::first_order{}, 1, problem<P>.solution(log_penalty));
  const auto r = s.hypergradient(1);
  // F reads λ only through θ*, so the direct term is zero.
  CHECK(test::norm(test::host<P>(r.gradient)) == 0.0);
  CHECK(r.reports.at(0).hvp_evals == 0);
}

TEST_CASE("ridge: float CG with exact products reaches float accuracy") {
  using F = test::P32;
  const auto prob32 = ridge_problem<F>::synthetic(60, 40, d, 3, 0.5, 7);
  auto inner = bilevel::make_level("theta", ridge_training_loss<F>(prob32.train), bilevel::optim::sgd<F>{.lr = eta},
                                   hg::implicit_cg{}, test::device<F>(prob32.solution(log_penalty)))
                   .reading({1});
  auto outer = bilevel::make_level("lambda", validation_least_squares<F>(prob32.validation, d),
                                   bilevel::optim::sgd<F>{.lr = 0.1}, hg::first_order{}, test::device<F>(log_penalty))
                   .reading({0});
  bilevel::solver s(std::move(inner), std::move(outer));
  const auto r = s.hypergradient(1);
  const double err = test::relative_error(test::host<F>(r.gradient), prob32.hypergradient(log_penalty));
  MESSAGE("float implicit_cg error: " << err);
  // Inputs rounded to float (ε = 6e-8) and a system with κ ≈ 20: κ·ε ≈ 1.2e-6, and the
  // products accumulate a few ε more; 1e-5 allows that and nothing like a missing term.
  CHECK(err <= 1e-5);
}
