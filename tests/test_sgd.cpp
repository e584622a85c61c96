// SPDX-License-Identifier: MIT
// optim::sgd's update map (θ, momentum buffer, g) → (θ', m'): its JVP and its VJP, each
// against central differences of step(), in every configuration (plain, momentum, Nesterov,
// weight decay, a learning-rate schedule); the two products as transposes of each other; and
// the settings validate() refuses, by name.
//
// The map is linear in (θ, m, g) (the learning rate depends on the step counter only), so a
// central difference (F(z + h·d) − F(z − h·d)) / 2h equals J·d exactly in exact arithmetic:
// there is no truncation error whatever h is, only round-off ~ ε_mach·|F(z)|/h. With h = 1 that
// is ~1e-15 relative, and the tolerances below (1e-12) say "exact up to round-off".
#include <doctest/doctest.h>

#include <bilevel/optim/sgd.hpp>
#include <bilevel/policy/eigen.hpp>

#include <cmath>
#include <limits>
#include <stdexcept>
#include <vector>

#include "support.hpp"

namespace {
using P = test::P64;
using V = P::vector;
using sgd = bilevel::optim::sgd<P>;
constexpr std::size_t n = 7;

/// Linear map, so any step is exact up to round-off (see the file comment); h = 1 makes
/// that round-off smallest.
constexpr double h = 1.0;
/// ε_mach·|F|/h ≈ 1e-15 relative, plus cancellation in the few components that are small:
/// 1e-12 still leaves three orders of margin, while any wrong coefficient (η, μ, wd) fails
/// at O(1e-3) or more.
constexpr double linear_tol = 1e-12;

/// Number of state buffers: 1 with momentum, 0 without.
std::size_t buffers(const sgd& o) { return o.init(V::Zero(n)).buffers.size(); }

/// A point of the map, read from a stacked host vector z = (θ, m (if any), g).
struct point {
  V theta, g;
  bilevel::optimizer_state<P> state;
  point(const sgd& o, const std::vector<double>& z, std::size_t step) {
    const std::size_t k = buffers(o);
    REQUIRE(z.size() == (k + 2) * n);
    theta = test::device<P>({z.begin(), z.begin() + n});
    state = o.init(theta);
    state.step = step;
    for (std::size_t b = 0; b < k; ++b)
      state.buffers[b] = test::device<P>({z.begin() + std::ptrdiff_t((b + 1) * n), z.begin() + std::ptrdiff_t((b + 2) * n)});
    g = test::device<P>({z.end() - n, z.end()});
  }
};

/// (θ, m (if any)) stacked on the host.
std::vector<double> stack(const V& theta, const bilevel::optimizer_state<P>& s) {
  auto out = test::host<P>(theta);
  for (const auto& b : s.buffers) {
    const auto hb = test::host<P>(b);
    out.insert(out.end(), hb.begin(), hb.end());
  }
  return out;
}

/// The update map on stacked host vectors: z = (θ, m, g) → (θ', m').
std::vector<double> update(const sgd& o, const std::vector<double>& z, std::size_t step) {
  point q(o, z, step);
  o.step(q.theta, q.state, q.g);
  CHECK(q.state.step == step + 1);
  return stack(q.theta, q.state);
}

/// JVP and VJP at a random point, each against central differences of step(), and against
/// each other by the transpose identity ⟨a, J t⟩ = ⟨Jᵀ a, t⟩.
void check(const sgd& o, std::size_t step) {
  const std::size_t k = buffers(o);
  const auto z = test::random_vector((k + 2) * n, 11);
  const auto t = test::random_vector((k + 2) * n, 12);    // tangent of (θ, m, g)
  const auto a = test::random_vector((k + 1) * n, 13);    // adjoint of (θ', m')
  const point p(o, z, step);

  // JVP: on entry the tangents of θ, m, g; on exit those of θ', m'.
  V t_theta = test::device<P>({t.begin(), t.begin() + n});
  auto t_state = p.state.zeros_like();
  for (std::size_t b = 0; b < k; ++b)
    t_state.buffers[b] = test::device<P>({t.begin() + std::ptrdiff_t((b + 1) * n), t.begin() + std::ptrdiff_t((b + 2) * n)});
  V t_g = test::device<P>({t.end() - n, t.end()});
  o.jvp(p.theta, p.state, p.g, t_theta, t_state, t_g);
  const auto jvp = stack(t_theta, t_state);
  const auto fd_jvp = test::central_directional([&](const auto& x) { return update(o, x, step); }, z, t, h);
  REQUIRE(jvp.size() == fd_jvp.size());
  CHECK(test::relative_error(jvp, fd_jvp) <= linear_tol);  // linear map: exact up to round-off

  // VJP: on entry the adjoints of θ', m'; on exit those of θ, m, and adj_g that of g.
  V a_theta = test::device<P>({a.begin(), a.begin() + n}), a_g;
  auto a_state = p.state.zeros_like();
  for (std::size_t b = 0; b < k; ++b)
    a_state.buffers[b] = test::device<P>({a.begin() + std::ptrdiff_t((b + 1) * n), a.begin() + std::ptrdiff_t((b + 2) * n)});
  o.vjp(p.theta, p.state, p.g, a_theta, a_state, a_g);
  auto vjp = stack(a_theta, a_state);
  const auto ag = test::host<P>(a_g);
  REQUIRE(ag.size() == n);
  vjp.insert(vjp.end(), ag.begin(), ag.end());
  // Jᵀa is the gradient of z ↦ ⟨a, F(z)⟩: central differences per coordinate, again exact up
  // to round-off because the function is linear.
  const auto fd_vjp = test::central_gradient(
      [&](const std::vector<double>& x) {
        const auto f = update(o, x, step);
        double s = 0.0;
        for (std::size_t i = 0; i < f.size(); ++i) s += a[i] * f[i];
        return s;
      },
      z, h);
  REQUIRE(vjp.size() == fd_vjp.size());
  CHECK(test::relative_error(vjp, fd_vjp) <= linear_tol);  // linear map: exact up to round-off

  // Transposes of each other: both sides are sums of ~3n products of O(1) numbers, so they
  // agree to a few ε_mach; 1e-12 relative.
  double lhs = 0.0, rhs = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i) lhs += a[i] * jvp[i];
  for (std::size_t i = 0; i < t.size(); ++i) rhs += vjp[i] * t[i];
  CHECK(rhs == doctest::Approx(lhs).epsilon(1e-12));
}
}  // namespace

TEST_CASE("sgd: VJP and JVP against central differences of the update map, and transposes of each other") {
  SUBCASE("plain") { check(sgd{.lr = 0.1}, 0); }
  SUBCASE("plain with weight decay 0.01") { check(sgd{.lr = 0.1, .weight_decay = 0.01}, 0); }
  SUBCASE("momentum 0.9") { check(sgd{.lr = 0.1, .momentum = 0.9}, 0); }
  SUBCASE("momentum 0.9, Nesterov") { check(sgd{.lr = 0.1, .momentum = 0.9, .nesterov = true}, 0); }
  SUBCASE("momentum 0.9 and weight decay 0.01") { check(sgd{.lr = 0.1, .momentum = 0.9, .weight_decay = 0.01}, 0); }
  SUBCASE("Nesterov and weight decay") {
    check(sgd{.lr = 0.1, .momentum = 0.9, .weight_decay = 0.01, .nesterov = true}, 0);
  }
  SUBCASE("schedule 0.1/(1+t) at step 3") {
    // lr (0.5 here) is ignored when a schedule is set; at step 3 the rate is 0.025. If either
    // product used `lr` or the wrong step, its coefficient would be off by 20x or more.
    const auto schedule = [](std::size_t t) { return 0.1 / (1.0 + double(t)); };
    check(sgd{.lr = 0.5, .schedule = schedule}, 3);
    check(sgd{.lr = 0.5, .momentum = 0.9, .schedule = schedule}, 3);
  }
}

TEST_CASE("sgd: step follows the PyTorch update, including the scheduled rate at the state's step") {
  const auto schedule = [](std::size_t t) { return 0.1 / (1.0 + double(t)); };
  const sgd o{.lr = 0.5, .momentum = 0.9, .weight_decay = 0.01, .nesterov = true, .schedule = schedule};
  V theta(2), m(2), g(2);
  theta << 1.0, -2.0;
  m << 0.5, 0.25;
  g << 0.3, -0.7;
  auto s = o.init(theta);
  REQUIRE(s.buffers.size() == 1);
  s.buffers[0] = m;
  s.step = 3;
  const V d = g + 0.01 * theta;
  const V m1 = 0.9 * m + d;
  const V expected = theta - 0.025 * (d + 0.9 * m1);
  o.step(theta, s, g);
  // A handful of operations on O(1) numbers: equal to ~1e-16; 1e-14 relative.
  CHECK(test::relative_error(test::host<P>(theta), test::host<P>(expected)) <= 1e-14);
  CHECK(test::relative_error(test::host<P>(s.buffers[0]), test::host<P>(m1)) <= 1e-14);
  CHECK(s.step == 4);
  CHECK(o.lr_at(3) == doctest::Approx(0.025));
  CHECK(sgd{.lr = 0.5}.lr_at(3) == 0.5);
}

TEST_CASE("sgd: validate() refuses nonsensical settings, naming the setting") {
  const V theta = V::Zero(1);
  const double nan = std::numeric_limits<double>::quiet_NaN();
  SUBCASE("learning rate <= 0 (or NaN) without a schedule") {
    for (double lr : {0.0, -0.1, nan}) {
      CAPTURE(lr);
      CHECK_THROWS_WITH_AS(sgd{.lr = lr}.validate(), doctest::Contains("learning rate must be > 0"), std::invalid_argument);
    }
    CHECK_THROWS_WITH_AS(sgd{.lr = -0.1}.validate(), doctest::Contains("got -0.1"), std::invalid_argument);
    // init() validates too, so a solver cannot start with a bad optimizer.
    CHECK_THROWS_WITH_AS(sgd{.lr = 0.0}.init(theta), doctest::Contains("learning rate"), std::invalid_argument);
    // With a schedule, `lr` is not used and need not be positive.
    CHECK_NOTHROW(sgd{.lr = 0.0, .schedule = [](std::size_t) { return 0.1; }}.validate());
  }
  SUBCASE("momentum outside [0, 1)") {
    for (double mu : {1.0, 1.5, -0.1, nan}) {
      CAPTURE(mu);
      CHECK_THROWS_WITH_AS((sgd{.lr = 0.1, .momentum = mu}.validate()), doctest::Contains("momentum must be in [0, 1)"),
                           std::invalid_argument);
    }
    CHECK_NOTHROW((sgd{.lr = 0.1, .momentum = 0.0}.validate()));
    CHECK_NOTHROW((sgd{.lr = 0.1, .momentum = 0.99}.validate()));
  }
  SUBCASE("negative weight decay") {
    CHECK_THROWS_WITH_AS((sgd{.lr = 0.1, .weight_decay = -0.01}.validate()), doctest::Contains("weight decay must be >= 0"),
                         std::invalid_argument);
    CHECK_THROWS_WITH_AS((sgd{.lr = 0.1, .weight_decay = nan}.validate()), doctest::Contains("weight decay"),
                         std::invalid_argument);
    CHECK_NOTHROW((sgd{.lr = 0.1, .weight_decay = 0.0}.validate()));
  }
  SUBCASE("Nesterov without momentum") {
    CHECK_THROWS_WITH_AS((sgd{.lr = 0.1, .nesterov = true}.validate()),
                         doctest::Contains("Nesterov momentum needs momentum > 0"), std::invalid_argument);
    CHECK_NOTHROW((sgd{.lr = 0.1, .momentum = 0.5, .nesterov = true}.validate()));
  }
}
