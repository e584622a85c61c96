// SPDX-License-Identifier: MIT
// A three-level problem with a closed-form total derivative: nested quadratics in the shape
// of LFM (the middle level reads the lowest level's solution, both read the top variable,
// the top reads both solutions). Every strategy is put on every edge, the middle level
// included, and the top-level hypergradient is compared with the closed form of what that
// strategy promises: the exact total derivative for exact strategies, and for truncated,
// look-ahead and finite-difference strategies the derivative of the K steps they keep.
#include <doctest/doctest.h>

#include <Eigen/Dense>
#include <bilevel/eigen.hpp>
#include <bilevel/problems/quadratic.hpp>

#include "policies.hpp"
#include "support.hpp"

namespace {

namespace hg = bilevel::hypergrad;
using bilevel::problems::quadratic_objective;
using bilevel::problems::quadratic_spec;
using Mat = Eigen::MatrixXd;
using Vec = Eigen::VectorXd;

constexpr std::size_t n0 = 5, n1 = 4, n2 = 3;
const quadratic_spec q0 = quadratic_spec::random(n0, {n2}, 11);       // x reads z
const quadratic_spec q1 = quadratic_spec::random(n1, {n0, n2}, 12);   // y reads x*, z
const quadratic_spec q2 = quadratic_spec::random(n2, {n1, n0}, 13);   // z reads y*, x*
const std::vector<double> z0 = {0.3, -0.7, 0.5};

Mat mat(std::size_t r, std::size_t c, const std::vector<double>& v) {
  return Eigen::Map<const Eigen::Matrix<double, -1, -1, Eigen::RowMajor>>(v.data(), long(r), long(c));
}
Vec vec(const std::vector<double>& v) { return Eigen::Map<const Vec>(v.data(), long(v.size())); }
std::vector<double> stdvec(const Vec& v) { return {v.data(), v.data() + v.size()}; }

double step_size(const quadratic_spec& q) {
  // η = 1/λ_max: the gradient step is then a contraction with rate 1 − λ_min/λ_max.
  return 1.0 / Eigen::SelfAdjointEigenSolver<Mat>(mat(q.n, q.n, q.a_mat)).eigenvalues().maxCoeff();
}

/// What a strategy's derivative of a best response is, in closed form, for a quadratic level
/// with Hessian A and gradient step η: the exact Jacobian J* = −A⁻¹B times a factor
///   exact: I;   the last K gradient steps from the optimum: I − (I − ηA)^K;   first order: 0.
struct promise {
  enum kind_t { exact, last_k_steps, none } kind = exact;
  std::size_t k = 0;
  bool steps_from_zero = false;  // recorded strategies differentiate a block run from 0
  Mat factor(const Mat& a, double eta) const {
    const Mat id = Mat::Identity(a.rows(), a.cols());
    if (kind == none) return Mat::Zero(a.rows(), a.cols());
    if (kind == exact) return id;
    Mat m = id;
    for (std::size_t i = 0; i < k; ++i) m = m * (id - eta * a);
    return id - m;
  }
};

constexpr std::size_t block_steps = 300;  // contraction ≤ 0.9 per step: 0.9^300 ≈ 2e-14

/// dF/dz in closed form given each lower level's promise.
std::vector<double> expected(const promise& p0, const promise& p1) {
  const Mat a0 = mat(n0, n0, q0.a_mat), b0 = mat(n0, n2, q0.inputs[0].b);
  const Mat a1 = mat(n1, n1, q1.a_mat), b1x = mat(n1, n0, q1.inputs[0].b), b1z = mat(n1, n2, q1.inputs[1].b);
  const Mat a2 = mat(n2, n2, q2.a_mat), b2y = mat(n2, n1, q2.inputs[0].b), b2x = mat(n2, n0, q2.inputs[1].b);
  const Vec z = vec(z0);
  const Vec x = -a0.ldlt().solve(vec(q0.a_vec) + b0 * z);
  const Vec y = -a1.ldlt().solve(vec(q1.a_vec) + b1x * x + b1z * z);
  const Mat jx = p0.factor(a0, step_size(q0)) * (-a0.ldlt().solve(b0));
  const Mat f1 = p1.factor(a1, step_size(q1));
  const Mat jy = f1 * (-a1.ldlt().solve(b1x)) * jx + f1 * (-a1.ldlt().solve(b1z));
  const Vec direct = a2 * z + vec(q2.a_vec) + b2y * y + b2x * x;
  const Vec dy = b2y.transpose() * z + mat(n1, n1, q2.inputs[0].c_mat) * y + vec(q2.inputs[0].c_vec);
  const Vec dx = b2x.transpose() * z + mat(n0, n0, q2.inputs[1].c_mat) * x + vec(q2.inputs[1].c_vec);
  return stdvec(direct + jy.transpose() * dy + jx.transpose() * dx);
}

/// The optimum of a quadratic level given its inputs, for strategies that assume one.
std::vector<double> optimum(const quadratic_spec& q, const std::vector<const std::vector<double>*>& inputs) {
  Vec rhs = vec(q.a_vec);
  for (std::size_t s = 0; s < inputs.size(); ++s) rhs += mat(q.n, q.inputs[s].m, q.inputs[s].b) * vec(*inputs[s]);
  return stdvec(-mat(q.n, q.n, q.a_mat).ldlt().solve(rhs));
}

template <class P, class S0, class S1>
std::vector<double> solver_hypergradient(S0 s0, const promise& p0, S1 s1, const promise& p1) {
  using sgd = bilevel::optim::sgd<P>;
  const std::vector<double> zeros0(n0, 0.0), zeros1(n1, 0.0);
  // Level 0 first: at its optimum for z, or run from zero for recorded strategies.
  const auto x_init = p0.steps_from_zero ? zeros0 : optimum(q0, {&z0});
  auto l0 = bilevel::make_level("x", quadratic_objective<P>(q0), sgd{.lr = step_size(q0)}, s0, test::device<P>(x_init))
                .reading({2})
                .steps_per_iteration(block_steps);
  auto l1 = bilevel::make_level("y", quadratic_objective<P>(q1), sgd{.lr = step_size(q1)}, s1, P::zeros(n1))
                .reading({0, 2})
                .steps_per_iteration(block_steps);
  auto l2 = bilevel::make_level("z", quadratic_objective<P>(q2), sgd{.lr = 0.1}, hg::first_order{}, test::device<P>(z0))
                .reading({1, 0});
  bilevel::solver s(std::move(l0), std::move(l1), std::move(l2));
  if (p0.steps_from_zero) s.step_level(0);
  const auto x_now = test::host<P>(s.template level<0>().theta);
  s.template level<1>().theta = test::device<P>(p1.steps_from_zero ? zeros1 : optimum(q1, {&x_now, &z0}));
  if (p1.steps_from_zero) s.step_level(1);
  const auto r = s.hypergradient(2);
  CHECK_FALSE(r.approximated);
  return test::host<P>(r.gradient);
}

// Each strategy and what it promises on a quadratic level.
template <class F>
void for_each_strategy(F f) {
  f("implicit_cg", hg::implicit_cg{}, promise{promise::exact});
  f("neumann", hg::neumann{.iterations = 400}, promise{promise::exact});
  // Rank above a level's size is clamped to it: the sketch then spans the space, and the solve is exact.
  f("nystrom", hg::nystrom{.rank = 1000}, promise{promise::exact});
  f("fixed_point", hg::fixed_point{.max_iterations = 2000}, promise{promise::exact});
  f("unrolled", hg::unrolled{}, promise{promise::exact, 0, true});
  f("forward_mode", hg::forward_mode{}, promise{promise::exact, 0, true});
  f("unrolled_truncated", hg::unrolled{.keep_last = 3}, promise{promise::last_k_steps, 3, true});
  f("lookahead", hg::lookahead{.steps = 2}, promise{promise::last_k_steps, 2, false});
  f("finite_difference", hg::finite_difference{}, promise{promise::last_k_steps, 1, false});
  f("first_order", hg::first_order{}, promise{promise::none});
}

}  // namespace

TEST_CASE_TEMPLATE("three levels: every strategy on the lowest edge (middle level by CG)", P, BILEVEL_SOLVER_DOUBLE_POLICIES) {
  for_each_strategy([](const char* name, auto strategy, promise p) {
    CAPTURE(name);
    const auto got = solver_hypergradient<P>(strategy, p, hg::implicit_cg{}, promise{});
    const auto want = expected(p, promise{});
    const double err = test::relative_error(got, want);
    MESSAGE(std::string(name) << " on level 0: relative error " << err << " vs its closed form; vs the exact total "
                 << test::relative_error(got, expected(promise{}, promise{})));
    // Exact strategies converge to round-off here (solves to 1e-10, 300 contracting steps to
    // 1e-14, Neumann 400 terms); approximate ones are compared with the closed form of their
    // own approximation, where central differences of a linear map are exact to round-off.
    CHECK(err <= 1e-8);
  });
}

TEST_CASE_TEMPLATE("three levels: every strategy on the middle edge (lowest level by CG)", P, BILEVEL_SOLVER_DOUBLE_POLICIES) {
  for_each_strategy([](const char* name, auto strategy, promise p) {
    CAPTURE(name);
    const auto got = solver_hypergradient<P>(hg::implicit_cg{}, promise{}, strategy, p);
    const auto want = expected(promise{}, p);
    const double err = test::relative_error(got, want);
    MESSAGE(std::string(name) << " on level 1: relative error " << err);
    CHECK(err <= 1e-8);
  });
}

TEST_CASE_TEMPLATE("three levels: the same strategy on both edges", P, BILEVEL_SOLVER_DOUBLE_POLICIES) {
  for_each_strategy([](const char* name, auto strategy, promise p) {
    CAPTURE(name);
    const auto got = solver_hypergradient<P>(strategy, p, strategy, p);
    CHECK(test::relative_error(got, expected(p, p)) <= 1e-8);
  });
}

TEST_CASE("three levels: approximate strategies are measurably different from the exact total") {
  // Guards the comparison above: if the closed form of an approximation coincided with the
  // exact total derivative, the previous tests could not tell a wrong strategy from a right one.
  const auto exact = expected(promise{}, promise{});
  CHECK(test::relative_error(expected(promise{promise::last_k_steps, 1}, promise{}), exact) > 1e-3);
  CHECK(test::relative_error(expected(promise{}, promise{promise::last_k_steps, 3}), exact) > 1e-3);
  CHECK(test::relative_error(expected(promise{promise::none}, promise{}), exact) > 1e-3);
}

TEST_CASE_TEMPLATE("three levels: a cycle below the top is cut and reported", P, BILEVEL_SOLVER_DOUBLE_POLICIES) {
  // Classic trilevel nesting: x reads y's variable and y reads x's solution. The solver
  // processes y first and drops x's adjoint on y, and must say so.
  using sgd = bilevel::optim::sgd<P>;
  const auto c0 = quadratic_spec::random(n0, {n1, n2}, 21);
  auto l0 = bilevel::make_level("x", quadratic_objective<P>(c0), sgd{.lr = 0.5}, hg::implicit_cg{}, P::zeros(n0))
                .reading({1, 2});
  auto l1 = bilevel::make_level("y", quadratic_objective<P>(q1), sgd{.lr = 0.5}, hg::implicit_cg{}, P::zeros(n1))
                .reading({0, 2});
  auto l2 = bilevel::make_level("z", quadratic_objective<P>(q2), sgd{.lr = 0.1}, hg::first_order{}, test::device<P>(z0))
                .reading({1, 0});
  bilevel::solver s(std::move(l0), std::move(l1), std::move(l2));
  CHECK(s.hypergradient(2).approximated);
  // Level 1's own hypergradient has no cycle below it: exact, not flagged.
  CHECK_FALSE(s.hypergradient(1).approximated);
}
