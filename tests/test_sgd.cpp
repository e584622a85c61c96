// SPDX-License-Identifier: MIT
// SGD's update map (θ, m, g) → (θ', m'): its VJP and JVP against central differences of the
// map itself, for every configuration, and the transpose identity between them.
#include <doctest/doctest.h>

#include <bilevel/optim/sgd.hpp>
#include <bilevel/policy/eigen.hpp>

#include "support.hpp"

namespace {
using P = test::P64;
using V = P::vector;
using sgd = bilevel::optim::sgd<P>;
constexpr std::size_t n = 6;

/// The map on a stacked vector z = (θ, m, g) → (θ', m'), as plain host vectors.
std::vector<double> apply(const sgd& o, const std::vector<double>& z, std::size_t step) {
  V theta = test::device<P>({z.begin(), z.begin() + n});
  bilevel::optimizer_state<P> s = o.init(theta);
  s.step = step;
  if (o.momentum > 0) s.buffers[0] = test::device<P>({z.begin() + n, z.begin() + 2 * n});
  const V g = test::device<P>({z.begin() + 2 * n, z.end()});
  o.step(theta, s, g);
  auto out = test::host<P>(theta);
  const auto m = o.momentum > 0 ? test::host<P>(s.buffers[0]) : std::vector<double>(n, 0.0);
  out.insert(out.end(), m.begin(), m.end());
  return out;
}

void check_configuration(const sgd& o, std::size_t step) {
  const auto z = test::random_vector(3 * n, 11);
  const auto dz = test::random_vector(3 * n, 12);
  const auto adj = test::random_vector(2 * n, 13);
  const V theta = test::device<P>({z.begin(), z.begin() + n});
  bilevel::optimizer_state<P> s = o.init(theta);
  s.step = step;
  if (o.momentum > 0) s.buffers[0] = test::device<P>({z.begin() + n, z.begin() + 2 * n});
  const V g = test::device<P>({z.begin() + 2 * n, z.end()});

  // JVP against central differences. The map is linear, so differences are exact up to
  // round-off ε·|z|/h ≈ 1e-11: 1e-9 cannot hide a wrong coefficient.
  V t_theta = test::device<P>({dz.begin(), dz.begin() + n});
  auto t_state = s.zeros_like();
  if (o.momentum > 0) t_state.buffers[0] = test::device<P>({dz.begin() + n, dz.begin() + 2 * n});
  V t_g = test::device<P>({dz.begin() + 2 * n, dz.end()});
  o.jvp(theta, s, g, t_theta, t_state, t_g);
  auto jvp = test::host<P>(t_theta);
  const auto tm = o.momentum > 0 ? test::host<P>(t_state.buffers[0]) : std::vector<double>(n, 0.0);
  jvp.insert(jvp.end(), tm.begin(), tm.end());
  const auto fd = test::central_directional([&](const auto& x) { return apply(o, x, step); }, z, dz, 1e-5);
  CHECK(test::relative_error(jvp, fd) <= 1e-9);

  // VJP: ⟨adj, J dz⟩ must equal ⟨Jᵀ adj, dz⟩ (the transpose identity), to round-off.
  V a_theta = test::device<P>({adj.begin(), adj.begin() + n}), a_g;
  auto a_state = s.zeros_like();
  if (o.momentum > 0) a_state.buffers[0] = test::device<P>({adj.begin() + n, adj.end()});
  o.vjp(theta, s, g, a_theta, a_state, a_g);
  double lhs = 0.0, rhs = 0.0;
  for (std::size_t i = 0; i < 2 * n; ++i) lhs += adj[i] * fd[i];
  const auto at = test::host<P>(a_theta), ag = test::host<P>(a_g);
  const auto am = o.momentum > 0 ? test::host<P>(a_state.buffers[0]) : std::vector<double>(n, 0.0);
  for (std::size_t i = 0; i < n; ++i) rhs += at[i] * dz[i] + am[i] * dz[n + i] + ag[i] * dz[2 * n + i];
  CHECK(rhs == doctest::Approx(lhs).epsilon(1e-9));
}
}  // namespace

TEST_CASE("sgd: VJP and JVP of the update against central differences, every configuration") {
  SUBCASE("plain") { check_configuration(sgd{.lr = 0.1}, 0); }
  SUBCASE("momentum") { check_configuration(sgd{.lr = 0.1, .momentum = 0.9}, 0); }
  SUBCASE("Nesterov") { check_configuration(sgd{.lr = 0.1, .momentum = 0.9, .nesterov = true}, 0); }
  SUBCASE("momentum and weight decay") { check_configuration(sgd{.lr = 0.1, .momentum = 0.9, .weight_decay = 0.01}, 0); }
  SUBCASE("schedule at step 3") {
    check_configuration(sgd{.lr = 0.1, .momentum = 0.5, .schedule = [](std::size_t t) { return 0.1 / double(1 + t); }}, 3);
  }
}

TEST_CASE("sgd: a schedule sets the step's learning rate") {
  const sgd o{.lr = 1.0, .schedule = [](std::size_t t) { return t == 0 ? 0.5 : 0.25; }};
  V theta = V::Zero(1);
  auto s = o.init(theta);
  o.step(theta, s, V::Ones(1));
  CHECK(theta[0] == -0.5);
  o.step(theta, s, V::Ones(1));
  CHECK(theta[0] == -0.75);
  CHECK(s.step == 2);
}

TEST_CASE("sgd: nonsensical settings are refused by name") {
  const V theta = V::Zero(1);
  CHECK_THROWS_WITH_AS(sgd{.lr = 0.0}.init(theta), doctest::Contains("learning rate must be > 0"), std::invalid_argument);
  CHECK_THROWS_WITH_AS((sgd{.lr = 0.1, .momentum = 1.0}.init(theta)), doctest::Contains("momentum must be in [0, 1)"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS((sgd{.lr = 0.1, .weight_decay = -1.0}.init(theta)), doctest::Contains("weight decay must be >= 0"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS((sgd{.lr = 0.1, .nesterov = true}.init(theta)), doctest::Contains("Nesterov momentum needs momentum > 0"),
                       std::invalid_argument);
}
