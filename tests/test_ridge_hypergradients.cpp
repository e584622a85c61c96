// SPDX-License-Identifier: MIT
// Every hypergradient strategy on ridge regression with a learned per-feature log-penalty,
// against the closed form (bilevel/problems/ridge.hpp) and against central differences of
// the outer objective the strategy claims to differentiate.
#include <doctest/doctest.h>

#include <bilevel/eigen.hpp>
#include <bilevel/problems/ridge.hpp>

#include "policies.hpp"
#include "ridge_case.hpp"
#include "support.hpp"

namespace {

using bilevel::problems::ridge_problem;
using bilevel::problems::ridge_training_loss;
using bilevel::problems::validation_least_squares;
namespace hg = bilevel::hypergrad;

using test::ridge::d;
using test::ridge::log_penalty;
using test::ridge::problem;
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

TEST_CASE_TEMPLATE("ridge: implicit CG at the exact inner solution matches the closed form to 1e-8", P, BILEVEL_SOLVER_DOUBLE_POLICIES) {
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

TEST_CASE_TEMPLATE("ridge: Neumann converges to the closed form as its iterations grow", P, BILEVEL_SOLVER_DOUBLE_POLICIES) {
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

TEST_CASE_TEMPLATE("ridge: fixed point of the optimizer's map matches the closed form, with and without momentum", P, BILEVEL_SOLVER_DOUBLE_POLICIES) {
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

TEST_CASE_TEMPLATE("ridge: unrolled through T steps matches central differences of the T-step objective", P, BILEVEL_SOLVER_DOUBLE_POLICIES) {
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

TEST_CASE_TEMPLATE("ridge: unrolled through momentum and weight decay matches central differences", P, BILEVEL_SOLVER_DOUBLE_POLICIES) {
  const std::vector<double> theta0(d, 0.0);
  const std::size_t steps = 20;
  auto s = make_solver<P>(hg::unrolled{}, steps, theta0, {.lr = eta, .momentum = 0.5, .weight_decay = 0.01});
  s.step_level(0);
  const auto r = s.hypergradient(1);
  const auto fd = test::central_gradient(
      [&](const auto& l) { return unrolled_objective<P>(l, theta0, steps, 0.5, 0.01); }, log_penalty, 1e-5);
  CHECK(test::relative_error(test::host<P>(r.gradient), fd) <= 1e-6);
}

TEST_CASE_TEMPLATE("ridge: unrolled approaches the closed form as T grows", P, BILEVEL_SOLVER_DOUBLE_POLICIES) {
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

TEST_CASE_TEMPLATE("ridge: truncated unrolling differentiates exactly the last K steps", P, BILEVEL_SOLVER_DOUBLE_POLICIES) {
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

TEST_CASE_TEMPLATE("ridge: forward mode equals reverse mode through the same steps", P, BILEVEL_SOLVER_DOUBLE_POLICIES) {
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

TEST_CASE_TEMPLATE("ridge: finite difference matches the DARTS formula computed here", P, BILEVEL_SOLVER_DOUBLE_POLICIES) {
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

TEST_CASE_TEMPLATE("ridge: look-ahead through several virtual steps matches central differences and leaves θ alone", P, BILEVEL_SOLVER_DOUBLE_POLICIES) {
  const auto theta = test::random_vector(d, 5);
  auto s = make_solver<P>(hg::lookahead{.steps = 3}, 1, theta);
  const auto r = s.hypergradient(1);
  const auto fd = test::central_gradient([&](const auto& l) { return unrolled_objective<P>(l, theta, 3); },
                                         log_penalty, 1e-5);
  CHECK(test::relative_error(test::host<P>(r.gradient), fd) <= 1e-6);
  CHECK(test::relative_error(test::host<P>(s.template level<0>().theta), theta) == 0.0);
}

TEST_CASE_TEMPLATE("ridge: first order ignores the lower level entirely", P, BILEVEL_SOLVER_DOUBLE_POLICIES) {
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

// ---- Nyström (bilevel/hypergrad/nystrom.hpp) ----

#include <limits>
#include <random>
#include <sstream>

namespace {

/// The hypergradient the paper's Woodbury form gives, x = (1/μ)[v − Y(μC + YᵀY)⁻¹Yᵀv] with
/// Y = HΩ and C = ΩᵀY, computed densely on the host from the problem's data and the
/// directions nystrom documents (drawn in order from std::mt19937_64(seed), d normals each).
/// Ĥ depends on the span of Ω alone, so the directions are used as drawn, not orthonormalised.
template <class P>
std::vector<double> nystrom_woodbury_reference(std::size_t k, double mu, std::uint64_t seed) {
  const auto& tr = problem<P>.train;
  const auto& va = problem<P>.validation;
  const auto theta = problem<P>.solution(log_penalty);
  std::vector<double> h(d * d, 0.0), v(d, 0.0), omega(d * k), y(d * k, 0.0);  // row-major; Ω and Y are d×k
  for (std::size_t r = 0; r < tr.rows; ++r)
    for (std::size_t i = 0; i < d; ++i)
      for (std::size_t j = 0; j < d; ++j) h[i * d + j] += tr.host_x[r * d + i] * tr.host_x[r * d + j] / tr.rows;
  for (std::size_t i = 0; i < d; ++i) h[i * d + i] += std::exp(log_penalty[i]);
  for (std::size_t r = 0; r < va.rows; ++r) {  // v = ∇_θ F = X_vᵀ(X_vθ − y_v)/m
    double res = -va.host_y[r];
    for (std::size_t i = 0; i < d; ++i) res += va.host_x[r * d + i] * theta[i];
    for (std::size_t i = 0; i < d; ++i) v[i] += va.host_x[r * d + i] * res / va.rows;
  }
  std::mt19937_64 gen(seed);
  std::normal_distribution<double> normal;
  for (std::size_t j = 0; j < k; ++j)
    for (std::size_t i = 0; i < d; ++i) omega[i * k + j] = normal(gen);
  for (std::size_t i = 0; i < d; ++i)
    for (std::size_t j = 0; j < k; ++j)
      for (std::size_t l = 0; l < d; ++l) y[i * k + j] += h[i * d + l] * omega[l * k + j];
  bilevel::detail::dense_matrix m{k, std::vector<double>(k * k, 0.0)};
  std::vector<double> w(k, 0.0);
  for (std::size_t a = 0; a < k; ++a) {
    for (std::size_t b = 0; b < k; ++b)
      for (std::size_t i = 0; i < d; ++i)
        m(a, b) += mu * omega[i * k + a] * y[i * k + b] + y[i * k + a] * y[i * k + b];
    for (std::size_t i = 0; i < d; ++i) w[a] += y[i * k + a] * v[i];
  }
  bilevel::detail::cholesky_solve(m, w);  // μC + YᵀY is positive definite: H is
  std::vector<double> g(d);
  for (std::size_t i = 0; i < d; ++i) {
    double x = v[i];
    for (std::size_t a = 0; a < k; ++a) x -= y[i * k + a] * w[a];
    g[i] = -std::exp(log_penalty[i]) * theta[i] * x / mu;
  }
  return g;
}

}  // namespace

TEST_CASE_TEMPLATE("ridge: Nyström with rank d matches implicit CG at the same damping", P, BILEVEL_SOLVER_DOUBLE_POLICIES) {
  const auto closed = problem<P>.hypergradient(log_penalty);
  for (double mu : {0.0, 1e-6, 1e-2}) {
    auto cg = make_solver<P>(hg::implicit_cg{.damping = mu, .tolerance = 1e-14}, 1, problem<P>.solution(log_penalty));
    auto ny = make_solver<P>(hg::nystrom{.rank = d, .damping = mu}, 1, problem<P>.solution(log_penalty));
    const auto reference = test::host<P>(cg.hypergradient(1).gradient);
    const auto r = ny.hypergradient(1);
    const double err = test::relative_error(test::host<P>(r.gradient), reference);
    MESSAGE("nystrom k=d, mu=" << mu << ": relative error vs implicit_cg " << err << "; " << r.reports.at(0));
    // With k = d the 8 orthonormal directions span R^8, so Ĥ = H and nothing outside the
    // sketch is divided by μ: what is left is round-off of two 8×8 eigen-decompositions and
    // of S = RC⁻¹Rᵀ, about κ(H)²ε ≈ 400 · 2.2e-16 ≈ 1e-13 (κ ≈ 20), plus CG's, at most
    // κ · 1e-14 for its relative residual of 1e-14. 1e-10 leaves three orders of margin.
    CHECK(err <= 1e-10);
    if (mu == 0.0) CHECK(test::relative_error(test::host<P>(r.gradient), closed) <= 1e-10);
    const auto& rep = r.reports.at(0);
    CHECK(rep.strategy == "nystrom");
    CHECK(rep.rank == d);
    CHECK(rep.hvp_evals == d + 1);  // the sketch, then the residual
    CHECK(rep.mixed_evals == 1);
    CHECK(rep.converged);
    CHECK(rep.residual <= 1e-12);  // the true residual of (H + μI)x = v: κ(H)·ε-sized
  }
}

TEST_CASE_TEMPLATE("ridge: Nyström's error against the closed form falls as its rank grows (damping 0)", P, BILEVEL_SOLVER_DOUBLE_POLICIES) {
  // Damping 0, the sketch's pseudo-inverse: the closed form is the undamped derivative, and
  // any μ > 0 both biases rank d by about μ/λ_min and multiplies the part of v outside a
  // smaller sketch by 1/μ (the next test exercises that branch).
  const auto closed = problem<P>.hypergradient(log_penalty);
  double previous = 1e300;
  for (std::size_t k : {2u, 4u, 6u, 8u}) {
    auto s = make_solver<P>(hg::nystrom{.rank = k}, 1, problem<P>.solution(log_penalty));
    const auto r = s.hypergradient(1);
    const double err = test::relative_error(test::host<P>(r.gradient), closed);
    MESSAGE("nystrom k=" << k << ", mu=0: relative error vs closed form " << err << "; " << r.reports.at(0));
    // The directions come in order from one seeded stream, so the sketches' spans are nested
    // and Ĥ approaches H; the hypergradient's error need not fall at every step, hence 5%.
    CHECK(err <= 1.05 * previous);
    CHECK(r.reports.at(0).rank == k);
    CHECK(r.reports.at(0).hvp_evals == k + 1);
    previous = err;
  }
  CHECK(previous <= 1e-10);  // k = d: exact up to round-off, as in the previous test
}

TEST_CASE_TEMPLATE("ridge: Nyström below full rank with damping equals the paper's Woodbury form", P, BILEVEL_SOLVER_DOUBLE_POLICIES) {
  // μ = 1, about the size of the eigenvalues a small sketch of this Hessian misses. The
  // library's split solve and the dense Woodbury form factor different matrices; with this μ
  // neither cancels, and μC + YᵀY for Gaussian directions has a condition well under 1e4, so
  // the two agree to ~1e-12 or better; 1e-10 leaves margin and catches any wrong term.
  const double mu = 1.0;
  const std::uint64_t seed = 42;
  double previous = 1e300;
  for (std::size_t k : {2u, 4u, 6u, 8u}) {
    auto s = make_solver<P>(hg::nystrom{.rank = k, .damping = mu, .seed = seed}, 1, problem<P>.solution(log_penalty));
    auto cg = make_solver<P>(hg::implicit_cg{.damping = mu, .tolerance = 1e-14}, 1, problem<P>.solution(log_penalty));
    const auto r = s.hypergradient(1);
    const auto g = test::host<P>(r.gradient);
    const double err_woodbury = test::relative_error(g, nystrom_woodbury_reference<P>(k, mu, seed));
    const double err_cg = test::relative_error(g, test::host<P>(cg.hypergradient(1).gradient));
    MESSAGE("nystrom k=" << k << ", mu=1: vs Woodbury " << err_woodbury << ", vs implicit_cg at mu=1 " << err_cg);
    CHECK(err_woodbury <= 1e-10);
    // Against the exact damped solve, the error falls with the rank, as above.
    CHECK(err_cg <= 1.05 * previous);
    previous = err_cg;
  }
  CHECK(previous <= 1e-10);
}

TEST_CASE_TEMPLATE("ridge: Nyström's report and options", P, BILEVEL_SOLVER_DOUBLE_POLICIES) {
  auto small = make_solver<P>(hg::nystrom{.rank = 3}, 1, problem<P>.solution(log_penalty));
  const auto rep = small.hypergradient(1).reports.at(0);
  CHECK(rep.rank == 3);
  CHECK(rep.hvp_evals == 4);
  CHECK(rep.iterations == 0);
  // A rank-3 sketch of a well-spread 8×8 Hessian is far from it, and the true residual says so.
  CHECK(std::isfinite(rep.residual));
  CHECK(rep.residual > 1e-3);
  CHECK_FALSE(rep.converged);
  std::ostringstream printed;
  printed << rep;
  CHECK(printed.str().find("rank 3") != std::string::npos);

  // More directions than parameters add nothing: d are sketched.
  auto wide = make_solver<P>(hg::nystrom{.rank = 3 * d}, 1, problem<P>.solution(log_penalty));
  const auto wide_rep = wide.hypergradient(1).reports.at(0);
  CHECK(wide_rep.rank == d);
  CHECK(wide_rep.hvp_evals == d + 1);

  // A loose tolerance counts a rough sketch as converged.
  auto loose = make_solver<P>(hg::nystrom{.rank = 3, .tolerance = 0.99}, 1, problem<P>.solution(log_penalty));
  CHECK(loose.hypergradient(1).reports.at(0).converged == (rep.residual <= 0.99));

  const auto theta = problem<P>.solution(log_penalty);
  CHECK_THROWS_WITH_AS(make_solver<P>(hg::nystrom{.rank = 0}, 1, theta), doctest::Contains("rank must be >= 1 (got 0)"),
                       std::invalid_argument);
  try {
    make_solver<P>(hg::nystrom{.rank = 0}, 1, theta);
  } catch (const std::invalid_argument& e) {
    CHECK(std::string(e.what()).find("damping") == std::string::npos);  // names only what is wrong
  }
  CHECK_THROWS_WITH_AS(make_solver<P>(hg::nystrom{.damping = -1.0}, 1, theta),
                       doctest::Contains("damping must be finite and >= 0 (got -1"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(make_solver<P>(hg::nystrom{.damping = std::numeric_limits<double>::quiet_NaN()}, 1, theta),
                       doctest::Contains("damping must be finite and >= 0 (got nan"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(make_solver<P>(hg::nystrom{.damping = std::numeric_limits<double>::infinity()}, 1, theta),
                       doctest::Contains("damping must be finite"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(make_solver<P>(hg::nystrom{.tolerance = 1.0}, 1, theta),
                       doctest::Contains("tolerance must be in [0, 1)"), std::invalid_argument);
}
