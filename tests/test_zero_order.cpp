// SPDX-License-Identifier: MIT
// The zero-order (evolution strategies) hypergradient (bilevel/hypergrad/zero_order.hpp) on
// quadratic lower levels whose learner is a black box (loss and gradient in θ only): its
// error against the exact product and how it falls with the number of pairs, the smoothed
// gradient it targets when the response is nonlinear, the solver's hypergradient through
// it against the closed form, a level left untouched to the bit, and its options.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <span>
#include <stdexcept>
#include <vector>

#include <Eigen/Dense>
#include <bilevel/eigen.hpp>

#include "policies.hpp"
#include "support.hpp"

namespace {

namespace hg = bilevel::hypergrad;

/// Row-major host data for P::matrix_from_host.
template <class P>
typename P::matrix device_matrix(const Eigen::MatrixXd& m) {
  std::vector<typename P::scalar> host;
  for (Eigen::Index r = 0; r < m.rows(); ++r)
    for (Eigen::Index c = 0; c < m.cols(); ++c) host.push_back(typename P::scalar(m(r, c)));
  return P::matrix_from_host(std::size_t(m.rows()), std::size_t(m.cols()), host);
}

Eigen::VectorXd eig(const std::vector<double>& v) { return Eigen::Map<const Eigen::VectorXd>(v.data(), Eigen::Index(v.size())); }
std::vector<double> stdvec(const Eigen::VectorXd& v) { return {v.data(), v.data() + v.size()}; }

Eigen::MatrixXd random_matrix(Eigen::Index rows, Eigen::Index cols, unsigned seed, double scale = 1.0) {
  const auto v = test::random_vector(std::size_t(rows * cols), seed, scale);
  Eigen::MatrixXd m(rows, cols);
  for (Eigen::Index r = 0; r < rows; ++r)
    for (Eigen::Index c = 0; c < cols; ++c) m(r, c) = v[std::size_t(r * cols + c)];
  return m;
}

/// A symmetric positive definite n×n matrix with eigenvalues in about [1, 2].
Eigen::MatrixXd spd(Eigen::Index n, unsigned seed) {
  const Eigen::MatrixXd r = random_matrix(n, n, seed, 0.3);
  return Eigen::MatrixXd::Identity(n, n) + r * r.transpose();
}

/// L(θ, λ) = ½θᵀAθ − θᵀ Σ_s B_s f(λ_s), f the identity or sin: a learner that offers its loss
/// and its gradient in θ and nothing else (no input_gradient, no products).
template <class P, bool Sine = false>
class black_box {
 public:
  using policy = P;
  using batch_type = bilevel::full_batch;
  using vector = bilevel::vector_t<P>;
  using S = bilevel::scalar_t<P>;

  black_box(const Eigen::MatrixXd& a, const std::vector<Eigen::MatrixXd>& b) : n_(std::size_t(a.rows())) {
    a_ = device_matrix<P>(a);
    for (const auto& m : b) {
      b_.push_back(device_matrix<P>(m));
      sizes_.push_back(std::size_t(m.cols()));
    }
  }
  [[nodiscard]] std::size_t num_parameters() const { return n_; }
  [[nodiscard]] std::size_t num_inputs() const { return b_.size(); }
  [[nodiscard]] std::size_t input_size(std::size_t s) const { return sizes_.at(s); }

  double loss(const vector& theta, bilevel::input_list<P> in, const batch_type& b) const {
    vector g;
    return gradient(theta, in, b, g);
  }
  double gradient(const vector& theta, bilevel::input_list<P> in, const batch_type&, vector& out) const {
    const vector drive = pulled(in);
    P::gemv(S(1), a_, false, theta, S(0), out);
    const double value = 0.5 * P::dot(theta, out) - P::dot(theta, drive);
    P::axpy(S(-1), drive, out);
    return value;
  }

 private:
  vector pulled(bilevel::input_list<P> in) const {
    vector total = P::zeros(n_), part, mapped;
    for (std::size_t s = 0; s < b_.size(); ++s) {
      const vector* x = in[s];
      if constexpr (Sine) {
        auto h = P::to_host(*x);
        for (auto& e : h) e = S(std::sin(double(e)));
        mapped = P::from_host(h);
        x = &mapped;
      }
      P::gemv(S(1), b_[s], false, *x, S(0), part);
      P::axpy(S(1), part, total);
    }
    return total;
  }

  std::size_t n_;
  typename P::matrix a_;
  std::vector<typename P::matrix> b_;
  std::vector<std::size_t> sizes_;
};

/// F(λ, θ) = ½‖θ − c‖² + ½ρ‖λ‖², reading the lower level's response θ.
template <class P>
class upper_distance {
 public:
  using policy = P;
  using batch_type = bilevel::full_batch;
  using vector = bilevel::vector_t<P>;
  using S = bilevel::scalar_t<P>;

  upper_distance(std::vector<double> c, std::size_t m, double rho) : c_(test::device<P>(c)), n_(c.size()), m_(m), rho_(rho) {}
  [[nodiscard]] std::size_t num_parameters() const { return m_; }
  [[nodiscard]] std::size_t num_inputs() const { return 1; }
  [[nodiscard]] std::size_t input_size(std::size_t) const { return n_; }

  double loss(const vector& lambda, bilevel::input_list<P> in, const batch_type& b) const {
    vector g;
    return gradient(lambda, in, b, g);
  }
  double gradient(const vector& lambda, bilevel::input_list<P> in, const batch_type& b, vector& out) const {
    vector r;
    input_gradient(lambda, in, b, 0, r);
    out = lambda;
    P::scale(out, S(rho_));
    return 0.5 * P::dot(r, r) + 0.5 * rho_ * P::dot(lambda, lambda);
  }
  void input_gradient(const vector&, bilevel::input_list<P> in, const batch_type&, std::size_t, vector& out) const {
    out = *in[0];
    P::axpy(S(-1), c_, out);
  }

 private:
  vector c_;
  std::size_t n_, m_;
  double rho_;
};

static_assert(!bilevel::input_differentiable_learner<black_box<test::P64>>, "the lower learner must be a black box");
static_assert(bilevel::input_differentiable_learner<upper_distance<test::P64>>);

constexpr Eigen::Index n = 4;  // |θ|
constexpr double eta = 0.3;    // η·λ_max(A) < 1: every step a contraction

/// The engine's product for adjoint v at θ0 with inputs `lambdas`, called as the solver
/// does: response first, then vjp.
template <class P, bool Sine>
std::vector<double> zero_order_product(const black_box<P, Sine>& learner, const hg::zero_order& options,
                                       const std::vector<std::vector<double>>& lambdas, const std::vector<double>& theta0,
                                       const std::vector<double>& v, bilevel::hypergradient_report* report = nullptr) {
  auto lv = bilevel::make_level("lower", learner, bilevel::optim::sgd<P>{.lr = eta}, options, test::device<P>(theta0));
  std::vector<typename P::vector> values;
  for (const auto& l : lambdas) values.push_back(test::device<P>(l));
  std::vector<const typename P::vector*> in;
  for (const auto& x : values) in.push_back(&x);
  lv.engine.response(lv, in);
  std::vector<typename P::vector> out(in.size());
  const auto r = lv.engine.vjp(lv, in, test::device<P>(v), std::span<typename P::vector>(out));
  if (report) *report = r;
  std::vector<double> all;
  for (const auto& o : out) {
    const auto h = test::host<P>(o);
    all.insert(all.end(), h.begin(), h.end());
  }
  return all;
}

}  // namespace

TEST_CASE_TEMPLATE("zero_order: error against the exact product falls like 1/sqrt(N), as (d+1)/N predicts", P, BILEVEL_SOLVER_DOUBLE_POLICIES) {
  // One SGD step of the black box, θ₁ = θ₀ − η(Aθ₀ − B₁λ₁ − B₂λ₂), is affine in λ, so
  // φ(λ) = ⟨v, θ₁(λ)⟩ is linear: its smoothed gradient is the exact one, ηB_sᵀv per slot,
  // for any σ, and what remains is sampling error. Two slots (2 and 3 values) perturbed
  // jointly: d = 5, and E‖ĝ − g‖² = (d + 1)‖g‖²/N.
  const std::vector<Eigen::MatrixXd> b = {random_matrix(n, 2, 11), random_matrix(n, 3, 12)};
  const black_box<P> learner(spd(n, 10), b);
  const std::vector<std::vector<double>> lambdas = {{0.4, -0.7}, {1.2, 0.1, -0.5}};
  const auto theta0 = test::random_vector(n, 13), v = test::random_vector(n, 14);
  std::vector<double> exact;
  for (const auto& bs : b) {
    const auto g = stdvec(eta * bs.transpose() * eig(v));
    exact.insert(exact.end(), g.begin(), g.end());
  }
  const double d = 5.0, norm_g = test::norm(exact);
  // 100 seeds: the mean of the squared error then has a relative spread of about 0.06, its
  // root about 0.03, and a ratio of two such roots about 0.045, so [1.6, 2.5] around the
  // expected 2 is more than 4 standard deviations either way. Over 60 disjoint sets of 100
  // seeds the ratios ranged over [1.79, 2.28] and RMS/predicted over [0.90, 1.11].
  constexpr unsigned seeds = 100;
  std::vector<double> rms;
  for (std::size_t samples : {16u, 64u, 256u, 1024u}) {
    double squared = 0.0;
    for (unsigned seed = 1; seed <= seeds; ++seed) {
      bilevel::hypergradient_report r;
      const auto est = zero_order_product<P>(learner, {.samples = samples, .sigma = 0.1, .seed = seed}, lambdas,
                                             theta0, v, &r);
      const double e = test::relative_error(est, exact) * norm_g;
      squared += e * e;
      if (seed == 1) {
        CHECK(r.strategy == "zero_order");
        CHECK(r.gradient_evals == 2 * samples);
        CHECK(r.hvp_evals == 0);
        CHECK(r.mixed_evals == 0);
        CHECK_FALSE(r.exact_second_order);
      }
    }
    const double relative_rms = std::sqrt(squared / seeds) / norm_g, predicted = std::sqrt((d + 1.0) / double(samples));
    MESSAGE("N = " << samples << ": relative RMS error " << relative_rms << " (predicted " << predicted << ")");
    CHECK(relative_rms / predicted > 0.8);
    CHECK(relative_rms / predicted < 1.25);
    rms.push_back(relative_rms);
  }
  for (std::size_t k = 0; k + 1 < rms.size(); ++k) {
    const double ratio = rms[k] / rms[k + 1];
    MESSAGE("RMS error ratio for 4x the pairs: " << ratio);
    CHECK(ratio >= 1.6);
    CHECK(ratio <= 2.5);
  }
}

TEST_CASE_TEMPLATE("zero_order: estimates the gradient of the Gaussian-smoothed response", P, BILEVEL_SOLVER_DOUBLE_POLICIES) {
  // With f = sin, φ(λ) = const + η vᵀB sin λ, and E[sin(λ + σu)] = e^{−σ²/2} sin λ: the
  // smoothed gradient is e^{−σ²/2} times the exact ηcos(λ) ⊙ Bᵀv. At σ = 1 the two differ
  // by 39%; the estimate must land on the smoothed one.
  const Eigen::MatrixXd b = random_matrix(n, 3, 21);
  const black_box<P, true> learner(spd(n, 20), {b});
  const std::vector<double> lambda = {0.3, -1.1, 2.0};
  const auto theta0 = test::random_vector(n, 22), v = test::random_vector(n, 23);
  std::vector<double> exact = stdvec(eta * b.transpose() * eig(v)), smoothed(3);
  const double sigma = 1.0, shrink = std::exp(-0.5 * sigma * sigma);
  for (std::size_t k = 0; k < 3; ++k) {
    exact[k] *= std::cos(lambda[k]);
    smoothed[k] = shrink * exact[k];
  }
  // sin(σu)/σ is odd and no larger than u, so E‖ĝ − ĝ_mean‖² <= (d + 2)‖c‖²/N with c the
  // exact gradient, as in the linear case: an RMS error of at most 0.016‖c‖ = 0.026 of the
  // smoothed gradient's norm at N = 20000 and d = 3; 0.08 is three times that.
  const auto est = zero_order_product<P>(learner, {.samples = 20000, .sigma = sigma, .seed = 5}, {lambda}, theta0, v);
  const double to_smoothed = test::relative_error(est, smoothed), to_exact = test::relative_error(est, exact);
  MESSAGE("sigma = 1: error against the smoothed gradient " << to_smoothed << ", against the exact one " << to_exact);
  CHECK(to_smoothed <= 0.08);
  CHECK(to_exact >= 0.3);
  // A small σ smooths little: the same directions now track the exact gradient.
  const auto fine = zero_order_product<P>(learner, {.samples = 20000, .sigma = 1e-3, .seed = 5}, {lambda}, theta0, v);
  MESSAGE("sigma = 1e-3: error against the exact gradient " << test::relative_error(fine, exact));
  CHECK(test::relative_error(fine, exact) <= 0.06);
}

namespace {

constexpr double momentum = 0.9, rho = 0.05;
constexpr std::size_t virtual_steps = 3;
const std::vector<double> target = {1.0, -0.5, 0.25, 2.0};

template <class P>
auto black_box_solver(const Eigen::MatrixXd& a, const Eigen::MatrixXd& b, const std::vector<double>& lambda,
                      hg::zero_order options) {
  auto lower = bilevel::make_level("lower", black_box<P>(a, {b}), bilevel::optim::sgd<P>{.lr = eta, .momentum = momentum},
                                   options, test::device<P>(test::random_vector(n, 31)))
                   .reading({1});
  auto upper = bilevel::make_level("upper", upper_distance<P>(target, std::size_t(b.cols()), rho),
                                   bilevel::optim::sgd<P>{.lr = 0.1, .momentum = 0.5}, hg::first_order{},
                                   test::device<P>(lambda))
                   .reading({0});
  return bilevel::solver(std::move(lower), std::move(upper));
}

/// dF/dλ of F(λ) = ½‖θ_T(λ) − c‖² + ½ρ‖λ‖², θ_T the T momentum-SGD steps from (θ, m):
/// tangents carried through m' = μm + Aθ − Bλ, θ' = θ − ηm'.
std::vector<double> closed_form(const Eigen::MatrixXd& a, const Eigen::MatrixXd& b, const std::vector<double>& lambda,
                                const std::vector<double>& theta, const std::vector<double>& buffer) {
  Eigen::VectorXd th = eig(theta), m = eig(buffer);
  const Eigen::VectorXd lam = eig(lambda);
  Eigen::MatrixXd dth = Eigen::MatrixXd::Zero(n, b.cols()), dm = dth;
  for (std::size_t t = 0; t < virtual_steps; ++t) {
    m = momentum * m + a * th - b * lam;
    th = th - eta * m;
    dm = momentum * dm + a * dth - b;
    dth = dth - eta * dm;
  }
  return stdvec(dth.transpose() * (th - eig(target)) + rho * lam);
}


}  // namespace

TEST_CASE_TEMPLATE("zero_order: the solver's hypergradient through a black-box learner matches the closed form", P, BILEVEL_SOLVER_DOUBLE_POLICIES) {
  const Eigen::MatrixXd a = spd(n, 30), b = random_matrix(n, 3, 32);
  const std::vector<double> lambda = {0.5, -1.0, 0.8};
  constexpr std::size_t samples = 4096;
  auto s = black_box_solver<P>(a, b, lambda, {.samples = samples, .sigma = 1e-2, .steps = virtual_steps, .seed = 9});
  s.step_level(0);  // a momentum buffer that is not zero
  s.step_level(0);
  const auto& low = s.template level<0>();
  REQUIRE(low.state.buffers.size() == 1);
  REQUIRE(test::norm(test::host<P>(low.state.buffers[0])) > 0.0);
  const auto exact = closed_form(a, b, lambda, test::host<P>(low.theta), test::host<P>(low.state.buffers[0]));

  const auto r = s.hypergradient(1);
  REQUIRE(r.reports.size() == 1);
  const auto& report = r.reports[0];
  MESSAGE(report);
  CHECK(report.strategy == "zero_order");
  CHECK(report.level == 0);
  CHECK(report.gradient_evals == 2 * samples * virtual_steps);
  CHECK(report.hvp_evals == 0);
  CHECK(report.mixed_evals == 0);
  CHECK_FALSE(report.exact_second_order);

  // θ_T is affine in λ (momentum SGD on a quadratic) and F is quadratic in θ_T, so the
  // estimate is unbiased for any σ (σ = 1e-2 only sets round-off, ~1e-14 here) and its error
  // is sampling: relative RMS sqrt((d + 1)/N) = 0.031 of the indirect term for d = 3. Three
  // times that bounds it with probability about 1 − 1e-5 (‖error‖² is close to a χ² with 3
  // degrees of freedom).
  std::vector<double> indirect = exact;
  for (std::size_t k = 0; k < lambda.size(); ++k) indirect[k] -= rho * lambda[k];
  const double tolerance = 3.0 * std::sqrt(4.0 / samples) * test::norm(indirect);
  const auto got = test::host<P>(r.gradient);
  const double error = test::relative_error(got, exact) * test::norm(exact);
  MESSAGE("hypergradient error " << error << " (relative to the indirect term " << error / test::norm(indirect)
                                 << ", to the whole " << error / test::norm(exact) << "), tolerance " << tolerance);
  CHECK(error <= tolerance);
  // Dropping the indirect term (first order) would be far outside it.
  CHECK(test::norm(indirect) > 5.0 * tolerance);
}

TEST_CASE_TEMPLATE("zero_order: leaves every level's parameters and optimizer state exactly as they were", P, BILEVEL_SOLVER_DOUBLE_POLICIES) {
  const Eigen::MatrixXd a = spd(n, 40), b = random_matrix(n, 3, 42);
  auto s = black_box_solver<P>(a, b, {0.2, 0.7, -0.4}, {.samples = 8, .steps = 4, .seed = 3});
  s.run(3);  // momentum buffers on both levels, filled
  const auto before = test::state_bits(s);
  REQUIRE(s.template level<0>().state.buffers.size() == 1);
  REQUIRE(s.template level<1>().state.buffers.size() == 1);
  REQUIRE(test::norm(test::host<P>(s.template level<0>().state.buffers[0])) > 0.0);
  const auto first = s.hypergradient(1);
  CHECK(test::state_bits(s) == before);
  const auto second = s.hypergradient(1);
  CHECK(test::state_bits(s) == before);
  CHECK(test::norm(test::host<P>(first.gradient)) > 0.0);
  // Fresh directions at each call, so the two estimates differ.
  CHECK(test::host<P>(first.gradient) != test::host<P>(second.gradient));
}

TEST_CASE("zero_order: bad options are refused, naming the option") {
  using P = test::P64;
  const black_box<P> learner(spd(n, 50), {random_matrix(n, 2, 51)});
  auto with = [&](hg::zero_order options) {
    (void)bilevel::make_level("lower", learner, bilevel::optim::sgd<P>{}, options, P::zeros(n));
  };
  CHECK_NOTHROW(with({}));
  CHECK_THROWS_WITH_AS(with({.samples = 0}), doctest::Contains("samples must be >= 1"), std::invalid_argument);
  for (double sigma : {0.0, -1.0, std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity()})
    CHECK_THROWS_WITH_AS(with({.sigma = sigma}), doctest::Contains("sigma must be finite and > 0"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(with({.steps = 0}), doctest::Contains("steps must be >= 1"), std::invalid_argument);
}

TEST_CASE("zero_order: a hypergradient through a black box is refused for a strategy that needs input_gradient") {
  using P = test::P64;
  const Eigen::MatrixXd a = spd(n, 60), b = random_matrix(n, 2, 61);
  auto lower = bilevel::make_level("lower", black_box<P>(a, {b}), bilevel::optim::sgd<P>{.lr = eta}, hg::first_order{},
                                   P::zeros(n))
                   .reading({1});
  auto upper = bilevel::make_level("upper", upper_distance<P>(target, 2, rho), bilevel::optim::sgd<P>{}, hg::first_order{},
                                   P::zeros(2))
                   .reading({0});
  bilevel::solver s(std::move(lower), std::move(upper));
  CHECK_THROWS_WITH_AS(s.hypergradient(1), doctest::Contains("has no input_gradient()"), std::invalid_argument);
}
