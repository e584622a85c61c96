// SPDX-License-Identifier: MIT
// SAMA (bilevel/hypergrad/sama.hpp): against its own formula written out here (the
// optimizer's derivative computed independently of the library's optimizers), against the
// closed form of the ridge problem's mixed product, on the middle edge of the three-level
// quadratic, and for leaving every level exactly as it found it.
#include <doctest/doctest.h>

#include <Eigen/Dense>
#include <bilevel/eigen.hpp>
#include <bilevel/hypergrad/sama.hpp>
#include <bilevel/problems/quadratic.hpp>
#include <bilevel/problems/ridge.hpp>

#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

#include "policies.hpp"
#include "ridge_case.hpp"
#include "support.hpp"

namespace {

using bilevel::problems::quadratic_objective;
using bilevel::problems::quadratic_spec;
using bilevel::problems::ridge_training_loss;
using bilevel::problems::validation_least_squares;
namespace hg = bilevel::hypergrad;

using test::ridge::d;
using test::ridge::log_penalty;
using test::ridge::problem;
constexpr double eta = 0.1;  // a contraction for this data (test_ridge_hypergradients.cpp)

template <class P, class Opt>
auto make_solver(hg::sama strategy, std::vector<double> theta0, Opt opt) {
  auto inner = bilevel::make_level("theta", ridge_training_loss<P>(problem<P>.train), opt, strategy,
                                   test::device<P>(theta0))
                   .reading({1});
  auto outer = bilevel::make_level("log_penalty", validation_least_squares<P>(problem<P>.validation, d),
                                   bilevel::optim::sgd<P>{.lr = 0.1}, hg::first_order{},
                                   test::device<P>(log_penalty))
                   .reading({0});
  return bilevel::solver(std::move(inner), std::move(outer));
}

std::vector<double> times(const std::vector<double>& a, const std::vector<double>& b) {
  std::vector<double> c(a.size());
  for (std::size_t i = 0; i < a.size(); ++i) c[i] = a[i] * b.at(i);
  return c;
}
double cosine(const std::vector<double>& a, const std::vector<double>& b) {
  double ab = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i) ab += a[i] * b.at(i);
  return ab / (test::norm(a) * test::norm(b));
}

/// What SAMA's formula gives once the direction ṽ is known:
/// −[input_gradient(θ + εṽ) − input_gradient(θ − εṽ)] / 2ε with ε = s/‖ṽ‖, per slot, the
/// perturbations made here on the host.
template <class P, class Learner>
std::vector<double> naive_mixed(const Learner& l, const std::vector<double>& theta, bilevel::input_list<P> in,
                                std::size_t slot, const std::vector<double>& direction, double s) {
  const double eps = s / test::norm(direction);
  std::vector<double> up = theta, down = theta;
  for (std::size_t i = 0; i < theta.size(); ++i) up[i] += eps * direction[i], down[i] -= eps * direction[i];
  typename P::vector gu, gd;
  l.input_gradient(test::device<P>(up), in, {}, slot, gu);
  l.input_gradient(test::device<P>(down), in, {}, slot, gd);
  const auto hu = test::host<P>(gu), hd = test::host<P>(gd);
  std::vector<double> out(hu.size());
  for (std::size_t i = 0; i < out.size(); ++i) out[i] = -(hu[i] - hd[i]) / (2.0 * eps);
  return out;
}

/// ∂u/∂g of Adam's update u = η·m̂/(√v̂ + ε) per coordinate, at the state (m, v, step) before
/// a step that applied gradient g at θ, derived by hand (see sama.hpp) rather than taken from
/// optim::adam's vjp.
std::vector<double> adam_slope(const std::vector<double>& theta, const std::vector<double>& m,
                               const std::vector<double>& v, std::size_t step, const std::vector<double>& g,
                               double lr, double beta1, double beta2, double eps, double l2) {
  const double t = double(step + 1);
  const double c1 = 1.0 / (1.0 - std::pow(beta1, t)), c2 = 1.0 / (1.0 - std::pow(beta2, t));
  std::vector<double> out(g.size());
  for (std::size_t i = 0; i < g.size(); ++i) {
    const double di = g[i] + l2 * theta[i];
    const double m1 = beta1 * m[i] + (1 - beta1) * di;
    const double v1 = beta2 * v[i] + (1 - beta2) * di * di;
    const double r = std::sqrt(c2 * v1);
    const double second = r == 0.0 ? 0.0 : c1 * c2 * (1 - beta2) * m1 * di / (r * (r + eps) * (r + eps));
    out[i] = lr * (c1 * (1 - beta1) / (r + eps) - second);
  }
  return out;
}

/// ∂F/∂θ for the ridge problem's outer objective, at θ.
template <class P>
std::vector<double> outer_adjoint(const std::vector<double>& theta) {
  const validation_least_squares<P> outer(problem<P>.validation, d);
  const auto th = test::device<P>(theta);
  const typename P::vector* in[] = {&th};
  typename P::vector v;
  outer.input_gradient(P::zeros(d), in, {}, 0, v);
  return test::host<P>(v);
}

/// SAMA on the ridge problem computed here from the level's θ and the direction's factor.
template <class P>
std::vector<double> naive_ridge(const std::vector<double>& theta, const std::vector<double>& factor, double s = 1e-4) {
  const ridge_training_loss<P> inner(problem<P>.train);
  const auto lam = test::device<P>(log_penalty);
  const typename P::vector* in[] = {&lam};
  return naive_mixed<P>(inner, theta, bilevel::input_list<P>(in), 0, times(factor, outer_adjoint<P>(theta)), s);
}

template <class P>
std::vector<double> ridge_gradient(const std::vector<double>& theta) {
  const ridge_training_loss<P> inner(problem<P>.train);
  const auto lam = test::device<P>(log_penalty);
  const typename P::vector* in[] = {&lam};
  typename P::vector g;
  inner.gradient(test::device<P>(theta), in, {}, g);
  return test::host<P>(g);
}

/// An optimizer with a step but no derivative: plain gradient descent without vjp/jvp.
template <class P>
struct bare_gradient_descent {
  using policy = P;
  double lr = eta;
  [[nodiscard]] bilevel::optimizer_state<P> init(const typename P::vector&) const { return {}; }
  void step(typename P::vector& theta, bilevel::optimizer_state<P>& s, const typename P::vector& g) const {
    P::axpy(typename P::scalar(-lr), g, theta);
    ++s.step;
  }
};

}  // namespace

TEST_CASE_TEMPLATE("sama: with SGD equals its formula, the direction scaled by the step's derivative", P, BILEVEL_SOLVER_DOUBLE_POLICIES) {
  struct variant {
    bilevel::optim::sgd<P> opt;
    double slope;  // ∂u/∂g: η, or η(1 + μ) for Nesterov; weight decay does not enter
  };
  for (const variant& c : {variant{{.lr = eta}, eta}, variant{{.lr = eta, .momentum = 0.9}, eta},
                           variant{{.lr = eta, .momentum = 0.5, .weight_decay = 0.01, .nesterov = true}, eta * 1.5}}) {
    auto s = make_solver<P>(hg::sama{}, test::random_vector(d, 3), c.opt);
    for (int k = 0; k < 3; ++k) s.step_level(0);
    const auto r = s.hypergradient(1);
    const auto theta = test::host<P>(s.template level<0>().theta);
    const auto want = naive_ridge<P>(theta, std::vector<double>(d, c.slope));
    const double err = test::relative_error(test::host<P>(r.gradient), want);
    MESSAGE("sama, sgd momentum " << c.opt.momentum << (c.opt.nesterov ? " (Nesterov)" : "")
                                   << ": relative error vs its formula " << err);
    CHECK(err <= 1e-10);
    const auto& rep = r.reports.at(0);
    CHECK(rep.strategy == "sama");
    CHECK_FALSE(rep.exact_second_order);
    CHECK(rep.gradient_evals == 0);  // the last real step's derivative: no gradient taken
    CHECK(rep.hvp_evals == 0);
    CHECK(rep.mixed_evals == 1);
  }
}

TEST_CASE_TEMPLATE("sama: with Adam equals its formula, the direction scaled by Adam's ∂u/∂g at the last step", P, BILEVEL_SOLVER_DOUBLE_POLICIES) {
  for (const double l2 : {0.0, 0.05}) {
    const bilevel::optim::adam<P> opt{.lr = 0.05, .weight_decay = l2};
    auto s = make_solver<P>(hg::sama{}, test::random_vector(d, 4), opt);
    auto& lv = s.template level<0>();
    for (int k = 0; k < 4; ++k) s.step_level(0);
    // The state the last step starts from, and the gradient it applies (full batch).
    const auto theta_before = test::host<P>(lv.theta);
    const auto m = test::host<P>(lv.state.buffers.at(0)), v = test::host<P>(lv.state.buffers.at(1));
    const std::size_t step = lv.state.step;
    const auto g = ridge_gradient<P>(theta_before);
    s.step_level(0);

    const auto r = s.hypergradient(1);
    const auto slope = adam_slope(theta_before, m, v, step, g, opt.lr, opt.beta1, opt.beta2, opt.eps, l2);
    const auto want = naive_ridge<P>(test::host<P>(lv.theta), slope);
    const double err = test::relative_error(test::host<P>(r.gradient), want);
    MESSAGE("sama, adam (L2 " << l2 << ") after 5 steps: relative error vs its formula " << err);
    // Same arithmetic in a different order; the slope's two terms do not cancel here (the
    // moments are far from a first step's), so round-off stays near 1e-15.
    CHECK(err <= 1e-10);
    CHECK(r.reports.at(0).strategy == "sama");
    CHECK(r.reports.at(0).gradient_evals == 0);
  }
}

TEST_CASE_TEMPLATE("sama: without a record of the last step, the next step's derivative from the current state", P, BILEVEL_SOLVER_DOUBLE_POLICIES) {
  // A restored state (as from a checkpoint): the recorded step no longer produced it.
  const bilevel::optim::adam<P> opt{.lr = 0.05};
  auto s = make_solver<P>(hg::sama{}, test::random_vector(d, 5), opt);
  auto& lv = s.template level<0>();
  for (int k = 0; k < 3; ++k) s.step_level(0);
  const auto theta = lv.theta;
  const auto state = lv.state;
  s.step_level(0);
  s.step_level(0);
  lv.theta = theta;
  lv.state = state;

  const auto r = s.hypergradient(1);
  const auto th = test::host<P>(theta);
  const auto slope = adam_slope(th, test::host<P>(state.buffers.at(0)), test::host<P>(state.buffers.at(1)), state.step,
                                ridge_gradient<P>(th), opt.lr, opt.beta1, opt.beta2, opt.eps, 0.0);
  CHECK(test::relative_error(test::host<P>(r.gradient), naive_ridge<P>(th, slope)) <= 1e-10);
  CHECK(r.reports.at(0).gradient_evals == 1);  // the gradient at θ the next step would apply
}

TEST_CASE_TEMPLATE("sama: with SGD it is −η times the ridge problem's closed-form mixed product", P, BILEVEL_SOLVER_DOUBLE_POLICIES) {
  const auto theta0 = test::random_vector(d, 6);
  auto s = make_solver<P>(hg::sama{}, theta0, bilevel::optim::sgd<P>{.lr = eta});
  s.step_level(0);
  const auto r = s.hypergradient(1);
  const auto theta = test::host<P>(s.template level<0>().theta);
  // ∂²L/∂λ_i∂θ_j = δ_ij e^{λ_i} θ_i, so the hypergradient is −η e^λ ⊙ θ ⊙ ∂F/∂θ.
  const auto v = outer_adjoint<P>(theta);
  std::vector<double> want(d);
  for (std::size_t i = 0; i < d; ++i) want[i] = -eta * std::exp(log_penalty[i]) * theta[i] * v[i];
  const double err = test::relative_error(test::host<P>(r.gradient), want);
  MESSAGE("sama vs −η·(∂²L/∂λ∂θ)·∂F/∂θ in closed form: relative error " << err);
  // The central difference's truncation is (ε²/6)·∂³(∂L/∂λ)/∂θ³[ṽ,ṽ,ṽ], and ∂L/∂λ = ½e^λθ² is
  // quadratic in θ: the truncation is exactly zero. What is left is round-off, about
  // u·|∂L/∂λ|/(ε·|mixed|) ≈ u·|θ|/s ≈ 1e-16/1e-4 = 1e-12 relative; 1e-9 leaves three orders.
  CHECK(err <= 1e-9);
}

TEST_CASE_TEMPLATE("sama: points the same way as the exact hypergradient on the ridge problem", P, BILEVEL_SOLVER_DOUBLE_POLICIES) {
  // SAMA replaces H⁻¹ by the optimizer's ∂u/∂g: an approximation, so only the direction is
  // compared, at the exact inner solution where the implicit function theorem holds.
  const auto exact = problem<P>.hypergradient(log_penalty);
  const auto theta_star = problem<P>.solution(log_penalty);
  auto sgd = make_solver<P>(hg::sama{}, theta_star, bilevel::optim::sgd<P>{.lr = eta});
  const double cos_sgd = cosine(test::host<P>(sgd.hypergradient(1).gradient), exact);
  auto identity = make_solver<P>(hg::sama{.adapt_to_optimizer = false}, theta_star, bilevel::optim::sgd<P>{.lr = eta});
  const auto id = identity.hypergradient(1);
  const double cos_identity = cosine(test::host<P>(id.gradient), exact);
  CHECK(id.reports.at(0).strategy == "sama_identity");
  // Adam a few small steps from near θ* (at θ* itself the gradient is round-off, and so
  // would be Adam's per-coordinate scaling).
  auto near = theta_star;
  const auto offset = test::random_vector(d, 11, 1e-2);
  for (std::size_t i = 0; i < d; ++i) near[i] += offset[i];
  auto adam = make_solver<P>(hg::sama{}, near, bilevel::optim::adam<P>{.lr = 1e-3});
  for (int k = 0; k < 5; ++k) adam.step_level(0);
  const double cos_adam = cosine(test::host<P>(adam.hypergradient(1).gradient), exact);
  MESSAGE("cosine(sama, exact): at θ*, sgd " << cos_sgd << " and identity " << cos_identity
                                            << "; adam, 5 steps from near θ*, " << cos_adam);
  CHECK(cos_sgd > 0.0);
  CHECK(cos_adam > 0.0);
  // Scaling the direction by a positive constant changes no cosine: SGD's η is such a scale.
  CHECK(std::abs(cos_sgd - cos_identity) <= 1e-12);
}

TEST_CASE_TEMPLATE("sama: the identity option and an optimizer without vjp both use ṽ = v", P, BILEVEL_SOLVER_DOUBLE_POLICIES) {
  using bare_sgd = bare_gradient_descent<P>;
  static_assert(!bilevel::differentiable_optimizer<bare_sgd>);
  const auto theta0 = test::random_vector(d, 7);
  auto off = make_solver<P>(hg::sama{.adapt_to_optimizer = false}, theta0, bilevel::optim::adam<P>{.lr = 0.05});
  auto bare = make_solver<P>(hg::sama{}, theta0, bare_sgd{});
  for (int k = 0; k < 2; ++k) off.step_level(0), bare.step_level(0);
  const auto ro = off.hypergradient(1);
  const auto rb = bare.hypergradient(1);
  const std::vector<double> ones(d, 1.0);
  CHECK(test::relative_error(test::host<P>(ro.gradient), naive_ridge<P>(test::host<P>(off.template level<0>().theta), ones)) <= 1e-10);
  CHECK(test::relative_error(test::host<P>(rb.gradient), naive_ridge<P>(test::host<P>(bare.template level<0>().theta), ones)) <= 1e-10);
  CHECK(ro.reports.at(0).strategy == "sama_identity");
  CHECK(rb.reports.at(0).strategy == "sama_identity");
  CHECK(rb.reports.at(0).gradient_evals == 0);
}

TEST_CASE_TEMPLATE("sama: the scale option sets the perturbation's length", P, BILEVEL_SOLVER_DOUBLE_POLICIES) {
  const auto theta0 = test::random_vector(d, 8);
  auto s = make_solver<P>(hg::sama{.scale = 1e-3}, theta0, bilevel::optim::sgd<P>{.lr = eta});
  s.step_level(0);
  const auto theta = test::host<P>(s.template level<0>().theta);
  const auto got = test::host<P>(s.hypergradient(1).gradient);
  CHECK(test::relative_error(got, naive_ridge<P>(theta, std::vector<double>(d, eta), 1e-3)) <= 1e-10);
}

// ---- the three-level quadratic (as tests/test_three_levels.cpp builds it) ----

namespace {

using Mat = Eigen::MatrixXd;
using Vec = Eigen::VectorXd;
constexpr std::size_t n0 = 5, n1 = 4, n2 = 3;
const quadratic_spec q0 = quadratic_spec::random(n0, {n2}, 11);      // x reads z
const quadratic_spec q1 = quadratic_spec::random(n1, {n0, n2}, 12);  // y reads x*, z
const quadratic_spec q2 = quadratic_spec::random(n2, {n1, n0}, 13);  // z reads y*, x*
const std::vector<double> z0 = {0.3, -0.7, 0.5};

Mat mat(std::size_t r, std::size_t c, const std::vector<double>& v) {
  return Eigen::Map<const Eigen::Matrix<double, -1, -1, Eigen::RowMajor>>(v.data(), long(r), long(c));
}
Vec vec(const std::vector<double>& v) { return Eigen::Map<const Vec>(v.data(), long(v.size())); }
std::vector<double> stdvec(const Vec& v) { return {v.data(), v.data() + v.size()}; }
double step_size(const quadratic_spec& q) {
  return 1.0 / Eigen::SelfAdjointEigenSolver<Mat>(mat(q.n, q.n, q.a_mat)).eigenvalues().maxCoeff();
}
std::vector<double> optimum(const quadratic_spec& q, const std::vector<const std::vector<double>*>& inputs) {
  Vec rhs = vec(q.a_vec);
  for (std::size_t s = 0; s < inputs.size(); ++s) rhs += mat(q.n, q.inputs[s].m, q.inputs[s].b) * vec(*inputs[s]);
  return stdvec(-mat(q.n, q.n, q.a_mat).ldlt().solve(rhs));
}

template <class P, class S0, class O0, class S1, class O1>
auto three_levels(S0 s0, O0 o0, S1 s1, O1 o1) {
  auto l0 = bilevel::make_level("x", quadratic_objective<P>(q0), o0, s0, test::device<P>(optimum(q0, {&z0})))
                .reading({2});
  auto l1 = bilevel::make_level("y", quadratic_objective<P>(q1), o1, s1, P::zeros(n1)).reading({0, 2});
  auto l2 = bilevel::make_level("z", quadratic_objective<P>(q2), bilevel::optim::sgd<P>{.lr = 0.1}, hg::first_order{},
                                test::device<P>(z0))
                .reading({1, 0});
  return bilevel::solver(std::move(l0), std::move(l1), std::move(l2));
}

}  // namespace

TEST_CASE_TEMPLATE("sama: on the middle edge of three levels, the closed form of its approximation", P, BILEVEL_SOLVER_DOUBLE_POLICIES) {
  // Level 0 by CG at its optimum, level 1 by SAMA with SGD at its optimum for x*: SAMA
  // replaces the middle Jacobian −A1⁻¹B1 by −η1·B1, so dF/dz = direct + J_yᵀ ∂F/∂y + J_xᵀ ∂F/∂x
  // with J_x = −A0⁻¹B0z and J_y = −η1(B1x J_x + B1z).
  const double eta1 = step_size(q1);
  auto s = three_levels<P>(hg::implicit_cg{}, bilevel::optim::sgd<P>{.lr = step_size(q0)}, hg::sama{},
                           bilevel::optim::sgd<P>{.lr = eta1});
  const auto x = test::host<P>(s.template level<0>().theta);
  s.template level<1>().theta = test::device<P>(optimum(q1, {&x, &z0}));
  const auto r = s.hypergradient(2);
  CHECK_FALSE(r.approximated);

  const Mat a0 = mat(n0, n0, q0.a_mat), b0 = mat(n0, n2, q0.inputs[0].b);
  const Mat b1x = mat(n1, n0, q1.inputs[0].b), b1z = mat(n1, n2, q1.inputs[1].b);
  const Mat a2 = mat(n2, n2, q2.a_mat), b2y = mat(n2, n1, q2.inputs[0].b), b2x = mat(n2, n0, q2.inputs[1].b);
  const Vec z = vec(z0), xv = vec(x), y = vec(optimum(q1, {&x, &z0}));
  const Mat jx = -a0.ldlt().solve(b0);
  const Mat jy = -eta1 * (b1x * jx + b1z);
  const Vec direct = a2 * z + vec(q2.a_vec) + b2y * y + b2x * xv;
  const Vec dy = b2y.transpose() * z + mat(n1, n1, q2.inputs[0].c_mat) * y + vec(q2.inputs[0].c_vec);
  const Vec dx = b2x.transpose() * z + mat(n0, n0, q2.inputs[1].c_mat) * xv + vec(q2.inputs[1].c_vec);
  const auto want = stdvec(direct + jy.transpose() * dy + jx.transpose() * dx);
  const double err = test::relative_error(test::host<P>(r.gradient), want);
  MESSAGE("sama on level 1 of three: relative error vs the closed form of its approximation " << err);
  // CG solves to 1e-10; SAMA's central difference of a linear map is exact up to round-off.
  CHECK(err <= 1e-8);
}

TEST_CASE_TEMPLATE("sama: on the middle edge of three levels with Adam, its formula for both slots", P, BILEVEL_SOLVER_DOUBLE_POLICIES) {
  const bilevel::optim::adam<P> adam{.lr = 0.05};
  auto s = three_levels<P>(hg::implicit_cg{}, bilevel::optim::sgd<P>{.lr = step_size(q0)}, hg::sama{}, adam);
  auto& l1 = s.template level<1>();
  for (int k = 0; k < 3; ++k) s.step_level(1);
  const auto theta_before = test::host<P>(l1.theta);
  const auto m = test::host<P>(l1.state.buffers.at(0)), v = test::host<P>(l1.state.buffers.at(1));
  const std::size_t step = l1.state.step;
  const auto g = test::host<P>(s.hypergradient(1).gradient);  // what the next step applies
  s.step_level(1);
  const auto r = s.hypergradient(2);
  REQUIRE(P::size(r.gradient) == n2);
  CHECK(P::all_finite(r.gradient));

  // The middle level's vjp directly, for an adjoint of y chosen here.
  const auto adjoint = test::random_vector(n1, 9);
  const auto& x = s.template level<0>().theta;
  const auto& z = s.template level<2>().theta;
  const typename P::vector* in[] = {&x, &z};
  std::vector<typename P::vector> out(2);
  const auto rep = l1.engine.vjp(l1, bilevel::input_list<P>(in), test::device<P>(adjoint), std::span<typename P::vector>(out));
  CHECK(rep.strategy == "sama");
  CHECK(rep.mixed_evals == 2);
  const auto slope = adam_slope(theta_before, m, v, step, g, adam.lr, adam.beta1, adam.beta2, adam.eps, 0.0);
  const quadratic_objective<P> middle(q1);
  for (std::size_t slot = 0; slot < 2; ++slot) {
    CAPTURE(slot);
    const auto want = naive_mixed<P>(middle, test::host<P>(l1.theta), bilevel::input_list<P>(in), slot,
                                     times(slope, adjoint), 1e-4);
    REQUIRE(P::size(out[slot]) == (slot == 0 ? n0 : n2));
    CHECK(test::relative_error(test::host<P>(out[slot]), want) <= 1e-10);
  }
}

TEST_CASE_TEMPLATE("sama: every level's parameters and optimizer state are bit-for-bit unchanged", P, BILEVEL_SOLVER_DOUBLE_POLICIES) {
  using adam = bilevel::optim::adam<P>;
  auto s = three_levels<P>(hg::sama{}, adam{.lr = 0.05}, hg::sama{}, adam{.lr = 0.05, .weight_decay = 0.01});
  for (int k = 0; k < 3; ++k) s.step_level(0), s.step_level(1), s.step_level(2);
  auto snapshot = [&] {
    std::vector<std::vector<double>> all;
    auto add = [&](const auto& lv) {
      all.push_back(test::host<P>(lv.theta));
      for (const auto& b : lv.state.buffers) all.push_back(test::host<P>(b));
      all.push_back({double(lv.state.step)});
    };
    add(s.template level<0>());
    add(s.template level<1>());
    add(s.template level<2>());
    return all;
  };
  const auto before = snapshot();
  const auto r2 = s.hypergradient(2);
  const auto r1 = s.hypergradient(1);
  CHECK(P::all_finite(r2.gradient));
  CHECK(P::all_finite(r1.gradient));
  CHECK(r2.reports.size() == 2);
  CHECK(snapshot() == before);  // exact equality, not a tolerance

  // The same for the two-level problem, with Adam.
  auto ridge = make_solver<P>(hg::sama{}, test::random_vector(d, 10), adam{.lr = 0.05});
  for (int k = 0; k < 3; ++k) ridge.step_level(0);
  const auto theta = test::host<P>(ridge.template level<0>().theta);
  const auto m = test::host<P>(ridge.template level<0>().state.buffers.at(0));
  const auto v = test::host<P>(ridge.template level<0>().state.buffers.at(1));
  (void)ridge.hypergradient(1);
  CHECK(test::host<P>(ridge.template level<0>().theta) == theta);
  CHECK(test::host<P>(ridge.template level<0>().state.buffers.at(0)) == m);
  CHECK(test::host<P>(ridge.template level<0>().state.buffers.at(1)) == v);
}

TEST_CASE("sama: bad options are refused, naming the option") {
  using P = test::P64;
  for (const double bad : {0.0, -1e-4, std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity()}) {
    CAPTURE(bad);
    try {
      (void)make_solver<P>(hg::sama{.scale = bad}, std::vector<double>(d, 0.0), bilevel::optim::sgd<P>{.lr = eta});
      FAIL("accepted scale " << bad);
    } catch (const std::invalid_argument& e) {
      CHECK(std::string(e.what()).find("sama: scale") != std::string::npos);
    }
  }
  CHECK_NOTHROW((void)make_solver<P>(hg::sama{.scale = 1e-3}, std::vector<double>(d, 0.0), bilevel::optim::sgd<P>{.lr = eta}));
}
