// SPDX-License-Identifier: MIT
// SOBA (bilevel/hypergrad/soba.hpp) on ridge regression with learned per-feature
// log-penalties: its warm-started linear-system estimate against the recurrence it promises
// and the closed form (bilevel/problems/ridge.hpp), the single loop against exact
// hypergradient descent, and its options.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include <Eigen/Dense>
#include <bilevel/eigen.hpp>
#include <bilevel/problems/quadratic.hpp>
#include <bilevel/problems/ridge.hpp>

#include "policies.hpp"
#include "ridge_case.hpp"
#include "support.hpp"

namespace {

using bilevel::problems::ridge_training_loss;
using bilevel::problems::validation_least_squares;
namespace hg = bilevel::hypergrad;

using test::ridge::d;
using test::ridge::log_penalty;
using test::ridge::problem;

/// H = XᵀX/n + diag(e^λ), the inner Hessian, densely on the host.
template <class P>
Eigen::MatrixXd inner_hessian(const std::vector<double>& lam) {
  const auto& tr = problem<P>.train;
  Eigen::MatrixXd h = Eigen::MatrixXd::Zero(d, d);
  for (std::size_t r = 0; r < tr.rows; ++r)
    for (std::size_t i = 0; i < d; ++i)
      for (std::size_t j = 0; j < d; ++j) h(long(i), long(j)) += tr.host_x[r * d + i] * tr.host_x[r * d + j] / tr.rows;
  for (std::size_t i = 0; i < d; ++i) h(long(i), long(i)) += std::exp(lam[i]);
  return h;
}

/// ∇_θF = X_vᵀ(X_vθ − y_v)/m, the adjoint the outer level hands the inner one.
template <class P>
Eigen::VectorXd outer_gradient(const std::vector<double>& theta) {
  const auto& va = problem<P>.validation;
  Eigen::VectorXd v = Eigen::VectorXd::Zero(d);
  for (std::size_t r = 0; r < va.rows; ++r) {
    double res = -va.host_y[r];
    for (std::size_t i = 0; i < d; ++i) res += va.host_x[r * d + i] * theta[i];
    for (std::size_t i = 0; i < d; ++i) v(long(i)) += va.host_x[r * d + i] * res / va.rows;
  }
  return v;
}

std::vector<double> stdvec(const Eigen::VectorXd& v) { return {v.data(), v.data() + v.size()}; }

template <class P>
auto make_solver(hg::soba strategy, std::vector<double> theta0, double inner_lr, double outer_lr,
                 double outer_weight_decay = 0.0) {
  auto inner = bilevel::make_level("theta", ridge_training_loss<P>(problem<P>.train),
                                   bilevel::optim::sgd<P>{.lr = inner_lr}, strategy, test::device<P>(theta0))
                   .reading({1})
                   .steps_per_iteration(1);
  auto outer = bilevel::make_level("log_penalty", validation_least_squares<P>(problem<P>.validation, d),
                                   bilevel::optim::sgd<P>{.lr = outer_lr, .weight_decay = outer_weight_decay},
                                   hg::first_order{}, test::device<P>(log_penalty))
                   .reading({0});
  return bilevel::solver(std::move(inner), std::move(outer));
}

/// The message of the std::invalid_argument that building a soba engine throws ("" if none).
template <class P>
std::string refusal(const hg::soba& options) {
  try {
    hg::soba::engine<ridge_training_loss<P>, bilevel::optim::sgd<P>> e(options);
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE_TEMPLATE("soba: at the exact inner solution, repeated calls follow z ← z − ρ(Hz − v) and reach the closed form geometrically", P, BILEVEL_SOLVER_DOUBLE_POLICIES) {
  const auto theta = problem<P>.solution(log_penalty);
  const auto closed = problem<P>.hypergradient(log_penalty);
  const Eigen::MatrixXd h = inner_hessian<P>(log_penalty);
  const Eigen::VectorXd v = outer_gradient<P>(theta), x = h.ldlt().solve(v);
  const auto eig = Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd>(h).eigenvalues();
  const double lmin = eig.minCoeff(), lmax = eig.maxCoeff();  // 0.915 and 2.18 here
  const double rho = 0.5;                                     // < 2/λ_max ≈ 0.92
  // The error of z is (I − ρH)^k x after k updates from 0: contraction q = 0.54 here.
  const double q = std::max(std::abs(1.0 - rho * lmin), std::abs(1.0 - rho * lmax));
  // The hypergradient is −diag(e^λ ⊙ θ*) z, so its relative error is at most
  // c = ‖diag(e^λ ⊙ θ*)‖ ‖x‖ / ‖diag(e^λ ⊙ θ*) x‖ times that of z.
  Eigen::VectorXd m(d);
  for (std::size_t i = 0; i < d; ++i) m(long(i)) = std::exp(log_penalty[i]) * theta[i];
  const double c = m.cwiseAbs().maxCoeff() * x.norm() / m.cwiseProduct(x).norm();
  MESSAGE("H's eigenvalues in [" << lmin << ", " << lmax << "], step " << rho << ", contraction " << q
                                 << ", error constant " << c);
  CHECK(q < 1.0);

  auto s = make_solver<P>(hg::soba{.step = rho}, theta, 0.1, 0.1);
  const auto& engine = s.template level<0>().engine;
  Eigen::VectorXd z = Eigen::VectorXd::Zero(d);  // the recurrence, on the host
  const std::size_t calls = 40;
  double err = 0.0;
  for (std::size_t k = 1; k <= calls; ++k) {
    const auto r = s.hypergradient(1);
    const auto& rep = r.reports.at(0);
    const auto g = test::host<P>(r.gradient);
    // This call used z_{k−1}, reported its residual, then moved z once.
    const double residual = (h * z - v).norm() / v.norm();
    z -= rho * (h * z - v);
    err = test::relative_error(g, closed);
    if (k == 1) CHECK(test::norm(g) == 0.0);  // z starts at 0: no indirect term yet
    CHECK(rep.strategy == "soba");
    CHECK(rep.iterations == k);
    CHECK(rep.hvp_evals == 1);
    CHECK(rep.mixed_evals == 1);
    CHECK(rep.converged);
    CHECK(rep.exact_second_order);
    // The engine runs the recurrence above, with the products in another order: round-off
    // only (the iterates are O(1) and every step a contraction, so ~1e-15).
    CHECK(std::abs(rep.residual - residual) <= 1e-12 * std::max(1.0, residual));
    CHECK(test::relative_error(test::host<P>(engine.estimate()), stdvec(z)) <= 1e-12);
    // Geometric convergence: z within q^k of x, the hypergradient within c·q^(k−1).
    CHECK(test::relative_error(test::host<P>(engine.estimate()), stdvec(x)) <= std::pow(q, double(k)) + 1e-13);
    CHECK(err <= c * std::pow(q, double(k - 1)) + 1e-13);
    if (k % 10 == 0) MESSAGE("after " << k << " calls: relative error vs closed form " << err << "; " << rep);
  }
  // c·q^39 ≈ 1.9 · 4.4e-11 ≈ 8e-11 bounds it (measured: 8e-12), so 1e-8 holds with margin
  // after 40 calls; 1e-8 itself is passed after about 30 (measured: 3.7e-9).
  CHECK(err <= 1e-8);
  CHECK(engine.updates() == calls);

  // reset() starts z again from 0.
  s.template level<0>().engine.reset();
  const auto r = s.hypergradient(1);
  CHECK(r.reports.at(0).iterations == 1);
  CHECK(test::norm(test::host<P>(r.gradient)) == 0.0);
}

TEST_CASE_TEMPLATE("soba: a decaying step follows ρ_t = step·(1 + t)^(−decay)", P, BILEVEL_SOLVER_DOUBLE_POLICIES) {
  const auto theta = problem<P>.solution(log_penalty);
  const Eigen::MatrixXd h = inner_hessian<P>(log_penalty);
  const Eigen::VectorXd v = outer_gradient<P>(theta);
  const double step = 0.8, decay = 0.4;
  auto s = make_solver<P>(hg::soba{.step = step, .decay = decay}, theta, 0.1, 0.1);
  Eigen::VectorXd z = Eigen::VectorXd::Zero(d);
  for (std::size_t t = 0; t < 20; ++t) {
    (void)s.hypergradient(1);
    z -= step * std::pow(1.0 + double(t), -decay) * (h * z - v);
    CHECK(test::relative_error(test::host<P>(s.template level<0>().engine.estimate()), stdvec(z)) <= 1e-12);
  }
}

TEST_CASE_TEMPLATE("soba: past 2/λ_max z grows by |1 − ρλ_max| per call, and restarts from 0 once it overflows", P, BILEVEL_SOLVER_DOUBLE_POLICIES) {
  const auto theta = problem<P>.solution(log_penalty);
  const auto eig = Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd>(inner_hessian<P>(log_penalty)).eigenvalues();
  const double rho = 10.0;  // 2/λ_max ≈ 0.92
  const double growth = std::abs(1.0 - rho * eig.maxCoeff());  // 20.8 here
  auto s = make_solver<P>(hg::soba{.step = rho}, theta, 0.1, 0.1);
  double previous = 0.0, ratio = 0.0;
  std::size_t calls = 0;
  bilevel::hypergradient_report rep;
  for (; calls < 1000; ++calls) {
    rep = s.hypergradient(1).reports.at(0);
    if (!std::isfinite(rep.residual)) break;
    if (calls >= 1 && previous > 0.0) ratio = rep.residual / previous;
    previous = rep.residual;
  }
  MESSAGE("step " << rho << ": residual grew by " << ratio << " per call (|1 − ρλ_max| = " << growth
                  << "), non-finite after " << calls << " calls");
  // The residual's growth tends to the dominant factor |1 − ρλ_max| (the next one, from H's
  // second largest eigenvalue 1.86, is 17.6: by then (17.6/20.8)^117 ≈ 3e-9 of the total).
  CHECK(ratio == doctest::Approx(growth).epsilon(1e-6));
  CHECK(calls < 1000);  // the norm's square overflows once z passes ~1e154: 118 calls here
  const auto r = s.hypergradient(1);
  CHECK(r.reports.at(0).iterations == 1);
  CHECK(test::norm(test::host<P>(r.gradient)) == 0.0);
  CHECK(std::isfinite(r.reports.at(0).residual));
}

TEST_CASE_TEMPLATE("soba: the single loop (one step each of θ, z and λ per iteration) reaches λ*", P, BILEVEL_SOLVER_DOUBLE_POLICIES) {
  // The unregularised outer problem drives some log-penalties to ±∞ (uninformative features
  // want an infinite penalty); the outer SGD's weight decay β adds β/2‖λ‖², a Gaussian prior
  // on the log-penalties, which makes λ* finite.
  const double beta = 0.1;
  auto total_gradient = [&](const std::vector<double>& lam) {
    auto g = problem<P>.hypergradient(lam);
    for (std::size_t i = 0; i < d; ++i) g[i] += beta * lam[i];
    return g;
  };
  // λ* by exact hypergradient descent (closed form) from the same start; F + β/2‖λ‖² has
  // curvature 0.0999 to 0.216 at λ* (central differences of the closed form), so a step of 1
  // contracts by 0.9 per step: 294 steps to a gradient under 1e-14.
  std::vector<double> lam_star = log_penalty;
  std::size_t exact_steps = 0;
  for (; exact_steps < 2000 && test::norm(total_gradient(lam_star)) > 1e-14; ++exact_steps) {
    const auto g = total_gradient(lam_star);
    for (std::size_t i = 0; i < d; ++i) lam_star[i] -= g[i];
  }
  const double star_gradient = test::norm(total_gradient(lam_star));
  CHECK(star_gradient <= 1e-13);

  // Inner step 0.5 for θ and z alike (as the paper), from θ = 0; outer step 1, as above.
  const double rho = 0.5, gamma = 1.0;
  auto s = make_solver<P>(hg::soba{.step = rho}, std::vector<double>(d, 0.0), rho, gamma, beta);
  const double start = test::relative_error(log_penalty, lam_star);
  std::vector<double> distance;
  for (std::size_t n : {100u, 200u, 300u}) {
    s.run(n - s.iteration());
    distance.push_back(test::relative_error(test::host<P>(s.template level<1>().theta), lam_star));
  }
  const double contraction = std::pow(distance[2] / distance[1], 1.0 / 100.0);
  MESSAGE("λ* after " << exact_steps << " exact hypergradient steps, ‖∇(F + β/2‖λ‖²)(λ*)‖ = " << star_gradient
                      << "; single loop: relative distance to λ* " << start << " at start, " << distance[0]
                      << " after 100, " << distance[1] << " after 200, " << distance[2]
                      << " after 300 iterations (contraction " << contraction << " per iteration)");
  // The single loop contracts at the exact outer rate, 0.9 per iteration (measured: 0.8997;
  // θ and z contract faster, by 0.43 at λ*, where H's eigenvalues are 1.13 to 2.47), so
  // after 300 iterations it is about 1.8 · 0.9^300 ≈ 3e-14 away (measured: 3.2e-14), at the
  // accuracy of λ* itself (its gradient, 1e-14, over the curvature 0.1: 1e-13). 1e-10 leaves
  // margin and fails on any bias in the hypergradient (a missing or doubled term moves the
  // fixed point by O(1)).
  CHECK(distance[0] < start);
  CHECK(distance[1] < distance[0]);
  CHECK(distance[2] <= 1e-10);
  // θ and z are at their own fixed points there too.
  CHECK(test::relative_error(test::host<P>(s.template level<0>().theta), problem<P>.solution(lam_star)) <= 1e-10);
}

namespace {

// Three nested quadratics in the shape of LFM (tests/test_three_levels.cpp): x reads z, y
// reads x* and z, z reads y* and x*. Every best response is affine, so the implicit
// derivative is exact at the optimum, which is set here on the host.
using bilevel::problems::quadratic_objective;
using bilevel::problems::quadratic_spec;
constexpr std::size_t n0 = 5, n1 = 4, n2 = 3;
const quadratic_spec q0 = quadratic_spec::random(n0, {n2}, 11);
const quadratic_spec q1 = quadratic_spec::random(n1, {n0, n2}, 12);
const quadratic_spec q2 = quadratic_spec::random(n2, {n1, n0}, 13);
const std::vector<double> z0 = {0.3, -0.7, 0.5};

Eigen::MatrixXd mat(std::size_t r, std::size_t c, const std::vector<double>& v) {
  return Eigen::Map<const Eigen::Matrix<double, -1, -1, Eigen::RowMajor>>(v.data(), long(r), long(c));
}
Eigen::VectorXd vec(const std::vector<double>& v) { return Eigen::Map<const Eigen::VectorXd>(v.data(), long(v.size())); }

/// λ_min and λ_max of a quadratic level's Hessian A.
std::pair<double, double> extreme_eigenvalues(const quadratic_spec& q) {
  const auto e = Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd>(mat(q.n, q.n, q.a_mat)).eigenvalues();
  return {e.minCoeff(), e.maxCoeff()};
}

template <class P, class S0, class S1>
auto three_levels(S0 s0, S1 s1) {
  using sgd = bilevel::optim::sgd<P>;
  const Eigen::VectorXd z = vec(z0);
  const Eigen::VectorXd x = -mat(n0, n0, q0.a_mat).ldlt().solve(vec(q0.a_vec) + mat(n0, n2, q0.inputs[0].b) * z);
  const Eigen::VectorXd y = -mat(n1, n1, q1.a_mat).ldlt().solve(vec(q1.a_vec) + mat(n1, n0, q1.inputs[0].b) * x +
                                                                 mat(n1, n2, q1.inputs[1].b) * z);
  auto l0 = bilevel::make_level("x", quadratic_objective<P>(q0), sgd{.lr = 0.1}, s0, test::device<P>(stdvec(x)))
                .reading({2});
  auto l1 = bilevel::make_level("y", quadratic_objective<P>(q1), sgd{.lr = 0.1}, s1, test::device<P>(stdvec(y)))
                .reading({0, 2});
  auto l2 = bilevel::make_level("z", quadratic_objective<P>(q2), sgd{.lr = 0.1}, hg::first_order{}, test::device<P>(z0))
                .reading({1, 0});
  return bilevel::solver(std::move(l0), std::move(l1), std::move(l2));
}

}  // namespace

TEST_CASE_TEMPLATE("soba: on both edges of three levels, repeated calls reach implicit CG's total derivative", P, BILEVEL_SOLVER_DOUBLE_POLICIES) {
  // Step 1/λ_max on each level: z contracts by 1 − λ_min/λ_max per call there.
  const auto [min0, max0] = extreme_eigenvalues(q0);
  const auto [min1, max1] = extreme_eigenvalues(q1);
  const double rate = std::max(1.0 - min0 / max0, 1.0 - min1 / max1);
  auto exact = three_levels<P>(hg::implicit_cg{}, hg::implicit_cg{});
  auto soba = three_levels<P>(hg::soba{.step = 1.0 / max0}, hg::soba{.step = 1.0 / max1});
  const auto want = test::host<P>(exact.hypergradient(2).gradient);
  // Only the top level's hypergradient is asked for, so each level's z tracks one system:
  // level 1's (the adjoint of y*) and level 0's (that of x*, through y* and directly).
  const std::size_t calls = 200;
  double err = 0.0;
  for (std::size_t k = 0; k < calls; ++k) {
    const auto r = soba.hypergradient(2);
    CHECK(r.reports.size() == 2);
    err = test::relative_error(test::host<P>(r.gradient), want);
  }
  MESSAGE("slowest contraction " << rate << "; relative error vs implicit_cg after " << calls << " calls: " << err);
  // rate = 0.73 here, rate^200 ≈ 6e-28: what is left is round-off and CG's own error (its
  // 1e-10 tolerance at most; on 5×5 and 4×4 systems it ends at round-off), measured 4e-16.
  CHECK(std::pow(rate, double(calls)) <= 1e-12);
  CHECK(err <= 1e-8);

  // The shape's limitation (soba.hpp): when the middle level's hypergradient is asked for
  // too, the lowest level's one z is pulled toward two systems in turn and tracks neither.
  double residual = 0.0;
  for (std::size_t k = 0; k < calls; ++k) {
    (void)soba.hypergradient(1);
    const auto r = soba.hypergradient(2);
    for (const auto& rep : r.reports)
      if (rep.level == 0) residual = rep.residual;
  }
  MESSAGE("lowest level's residual with both levels' hypergradients interleaved: " << residual);
  CHECK(residual > 1e-3);  // measured: 0.995
}

TEST_CASE_TEMPLATE("soba: bad options are refused, naming the option", P, BILEVEL_SOLVER_DOUBLE_POLICIES) {
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  CHECK(refusal<P>(hg::soba{}) == "");
  CHECK(refusal<P>(hg::soba{.step = 2.0, .decay = 1.0, .damping = 1e-3}) == "");
  for (double step : {0.0, -0.1, nan, inf}) {
    const auto what = refusal<P>(hg::soba{.step = step});
    CHECK_MESSAGE(what.find("step must be") != std::string::npos, what);
    CHECK(what.find("decay") == std::string::npos);
  }
  for (double decay : {-0.1, 1.5, nan}) {
    const auto what = refusal<P>(hg::soba{.decay = decay});
    CHECK_MESSAGE(what.find("decay must be") != std::string::npos, what);
    CHECK(what.find("step") == std::string::npos);
  }
  for (double damping : {-1.0, nan, inf}) {
    const auto what = refusal<P>(hg::soba{.damping = damping});
    CHECK_MESSAGE(what.find("damping must be") != std::string::npos, what);
  }
  // Several at once: each is named.
  const auto what = refusal<P>(hg::soba{.step = -1.0, .damping = -1.0});
  CHECK(what.find("step must be") != std::string::npos);
  CHECK(what.find("damping must be") != std::string::npos);
  // Through make_level too.
  CHECK_THROWS_AS(make_solver<P>(hg::soba{.step = nan}, std::vector<double>(d, 0.0), 0.1, 0.1), std::invalid_argument);
}
