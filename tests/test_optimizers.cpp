// SPDX-License-Identifier: MIT
// Every optimizer's update map (θ, buffers, g) → (θ', buffers'): its JVP against central
// differences of the map, its VJP against the JVP by the transpose identity, in every
// configuration; schedules; and the settings each optimizer refuses.
#include <doctest/doctest.h>

#include <bilevel/optim/adam.hpp>
#include <bilevel/optim/clip.hpp>
#include <bilevel/optim/frozen.hpp>
#include <bilevel/optim/schedule.hpp>
#include <bilevel/optim/sgd.hpp>
#include <bilevel/policy/eigen.hpp>

#include "policies.hpp"
#include "support.hpp"

namespace {
constexpr std::size_t n = 6;

/// Splits a stacked host vector z = (θ, buffer_1..buffer_k, g) into a point of the map.
template <class P, class O>
struct point {
  using V = typename P::vector;
  V theta, g;
  bilevel::optimizer_state<P> state;
  point(const O& o, const std::vector<double>& z, std::size_t step) {
    theta = test::device<P>({z.begin(), z.begin() + n});
    state = o.init(theta);
    state.step = step;
    for (std::size_t b = 0; b < state.buffers.size(); ++b)
      state.buffers[b] = test::device<P>({z.begin() + std::ptrdiff_t((b + 1) * n), z.begin() + std::ptrdiff_t((b + 2) * n)});
    g = test::device<P>({z.end() - n, z.end()});
  }
};

template <class P>
std::vector<double> stack(const typename P::vector& theta, const bilevel::optimizer_state<P>& s) {
  auto out = test::host<P>(theta);
  for (const auto& b : s.buffers) {
    const auto h = test::host<P>(b);
    out.insert(out.end(), h.begin(), h.end());
  }
  return out;
}

/// `tolerance`: for linear maps (SGD) differences are exact to round-off ε|z|/h ≈ 1e-11;
/// for Adam truncation h²·|third derivative| with h = 1e-5 and v ≥ 0.2 stays below 1e-8.
template <class O>
void check(const O& o, std::size_t step, double tolerance) {
  using P = typename O::policy;
  using V = typename P::vector;
  const std::size_t k = o.init(P::zeros(n)).buffers.size();
  auto z = test::random_vector((k + 2) * n, 11);
  const auto dz = test::random_vector((k + 2) * n, 12), adj = test::random_vector((k + 1) * n, 13);
  // Adam's second moment (buffer 2) must be positive: the map has no derivative at v = 0.
  if (k >= 2)
    for (std::size_t i = 2 * n; i < 3 * n; ++i) z[i] = 0.2 + std::abs(z[i]);
  const point<P, O> p(o, z, step);
  auto map = [&](const std::vector<double>& x) {
    point<P, O> q(o, x, step);
    o.step(q.theta, q.state, q.g);
    return stack<P>(q.theta, q.state);
  };
  // JVP
  V t_theta = test::device<P>({dz.begin(), dz.begin() + n});
  auto t_state = p.state.zeros_like();
  for (std::size_t b = 0; b < k; ++b)
    t_state.buffers[b] = test::device<P>({dz.begin() + std::ptrdiff_t((b + 1) * n), dz.begin() + std::ptrdiff_t((b + 2) * n)});
  V t_g = test::device<P>({dz.end() - n, dz.end()});
  o.jvp(p.theta, p.state, p.g, t_theta, t_state, t_g);
  const auto jvp = stack<P>(t_theta, t_state);
  const auto fd = test::central_directional(map, z, dz, 1e-5);
  CHECK(test::relative_error(jvp, fd) <= tolerance);
  // VJP by the transpose identity ⟨adj, J dz⟩ = ⟨Jᵀ adj, dz⟩
  V a_theta = test::device<P>({adj.begin(), adj.begin() + n}), a_g;
  auto a_state = p.state.zeros_like();
  for (std::size_t b = 0; b < k; ++b)
    a_state.buffers[b] = test::device<P>({adj.begin() + std::ptrdiff_t((b + 1) * n), adj.begin() + std::ptrdiff_t((b + 2) * n)});
  o.vjp(p.theta, p.state, p.g, a_theta, a_state, a_g);
  double lhs = 0.0, rhs = 0.0;
  for (std::size_t i = 0; i < adj.size(); ++i) lhs += adj[i] * jvp[i];
  const auto back = stack<P>(a_theta, a_state);
  const auto ag = test::host<P>(a_g);
  for (std::size_t i = 0; i < back.size(); ++i) rhs += back[i] * dz[i];
  for (std::size_t i = 0; i < n; ++i) rhs += ag[i] * dz[dz.size() - n + i];
  CHECK(rhs == doctest::Approx(lhs).epsilon(1e-12));
}
}  // namespace

TEST_CASE_TEMPLATE("sgd: JVP against central differences and VJP by transposition, every configuration", P,
                   BILEVEL_SOLVER_DOUBLE_POLICIES) {
  using sgd = bilevel::optim::sgd<P>;
  SUBCASE("plain") { check(sgd{.lr = 0.1}, 0, 1e-9); }
  SUBCASE("momentum") { check(sgd{.lr = 0.1, .momentum = 0.9}, 0, 1e-9); }
  SUBCASE("Nesterov") { check(sgd{.lr = 0.1, .momentum = 0.9, .nesterov = true}, 0, 1e-9); }
  SUBCASE("momentum and weight decay") { check(sgd{.lr = 0.1, .momentum = 0.9, .weight_decay = 0.01}, 0, 1e-9); }
  SUBCASE("cosine schedule at step 3") {
    check(sgd{.lr = 0.1, .momentum = 0.5, .schedule = bilevel::optim::cosine_schedule{0.1, 0.001, 10}}, 3, 1e-9);
  }
}

TEST_CASE_TEMPLATE("adam: JVP against central differences and VJP by transposition", P, BILEVEL_SOLVER_DOUBLE_POLICIES) {
  using adam = bilevel::optim::adam<P>;
  SUBCASE("plain, step 0") { check(adam{.lr = 0.01}, 0, 1e-7); }
  SUBCASE("L2 weight decay, step 5") { check(adam{.lr = 0.01, .weight_decay = 0.1}, 5, 1e-7); }
  SUBCASE("AdamW, betas (0.5, 0.999) as DARTS") {
    check(adam{.lr = 3e-4, .beta1 = 0.5, .weight_decay = 1e-3, .decoupled = true}, 2, 1e-7);
  }
}

namespace {
/// The Eigen policy without zip_apply: the optimizers' composed form (BLAS-1 calls), which
/// policies without the fused primitive run.
struct composed_eigen : bilevel::policy::eigen<double> {
  template <class F, class... V>
  static void zip_apply(F, V&...) = delete;
};
static_assert(bilevel::fused_elementwise<bilevel::policy::eigen<double>> && !bilevel::fused_elementwise<composed_eigen>);

/// Step, VJP and JVP of `fused` (on the Eigen policy, one zip_apply each) and of `composed`
/// (the same settings on composed_eigen) from the same random point: the same arithmetic,
/// so equal but for rounding (a few ulps of each entry's terms; 1e-14 relative to the largest).
template <class Fused, class Composed>
void same_as_composed(const Fused& fused, const Composed& composed, std::size_t step) {
  using PF = typename Fused::policy;
  const std::size_t k = fused.init(PF::zeros(n)).buffers.size();
  auto z = test::random_vector((k + 2) * n, 21);
  if (k >= 2)
    for (std::size_t i = 2 * n; i < 3 * n; ++i) z[i] = 0.2 + std::abs(z[i]);
  const auto dz = test::random_vector((k + 2) * n, 22);
  auto close = [](const std::vector<double>& a, const std::vector<double>& b) {
    REQUIRE(a.size() == b.size());
    double scale = 0.0;
    for (double x : b) scale = std::max(scale, std::abs(x));
    for (std::size_t i = 0; i < a.size(); ++i) CHECK(std::abs(a[i] - b[i]) <= 1e-14 * scale);
  };
  auto run = [&](const auto& o) {
    using P = typename std::decay_t<decltype(o)>::policy;
    std::vector<double> out;
    auto append = [&](const std::vector<double>& h) { out.insert(out.end(), h.begin(), h.end()); };
    {  // step
      point<P, std::decay_t<decltype(o)>> q(o, z, step);
      o.step(q.theta, q.state, q.g);
      append(stack<P>(q.theta, q.state));
    }
    const point<P, std::decay_t<decltype(o)>> p(o, z, step);
    point<P, std::decay_t<decltype(o)>> d(o, dz, step);
    {  // JVP along dz
      auto t_theta = d.theta;
      auto t_state = d.state;
      o.jvp(p.theta, p.state, p.g, t_theta, t_state, d.g);
      append(stack<P>(t_theta, t_state));
    }
    {  // VJP of dz's (θ, buffers) part
      auto a_theta = d.theta;
      auto a_state = d.state;
      typename P::vector a_g;
      o.vjp(p.theta, p.state, p.g, a_theta, a_state, a_g);
      append(stack<P>(a_theta, a_state));
      append(test::host<P>(a_g));
    }
    return out;
  };
  close(run(fused), run(composed));
}
}  // namespace

TEST_CASE("sgd and adam: the fused element-wise pass equals the composed BLAS-1 form, which stays exact") {
  using P = bilevel::policy::eigen<double>;
  using C = composed_eigen;
  SUBCASE("sgd") {
    same_as_composed(bilevel::optim::sgd<P>{.lr = 0.1}, bilevel::optim::sgd<C>{.lr = 0.1}, 0);
    same_as_composed(bilevel::optim::sgd<P>{.lr = 0.1, .weight_decay = 0.01},
                     bilevel::optim::sgd<C>{.lr = 0.1, .weight_decay = 0.01}, 0);
    same_as_composed(bilevel::optim::sgd<P>{.lr = 0.1, .momentum = 0.9, .weight_decay = 0.01},
                     bilevel::optim::sgd<C>{.lr = 0.1, .momentum = 0.9, .weight_decay = 0.01}, 0);
    same_as_composed(bilevel::optim::sgd<P>{.lr = 0.1, .momentum = 0.9, .weight_decay = 0.01, .nesterov = true},
                     bilevel::optim::sgd<C>{.lr = 0.1, .momentum = 0.9, .weight_decay = 0.01, .nesterov = true}, 0);
    check(bilevel::optim::sgd<C>{.lr = 0.1, .momentum = 0.9, .weight_decay = 0.01, .nesterov = true}, 0, 1e-9);
  }
  SUBCASE("adam") {
    same_as_composed(bilevel::optim::adam<P>{.lr = 0.01}, bilevel::optim::adam<C>{.lr = 0.01}, 0);
    same_as_composed(bilevel::optim::adam<P>{.lr = 0.01, .weight_decay = 0.1},
                     bilevel::optim::adam<C>{.lr = 0.01, .weight_decay = 0.1}, 5);
    same_as_composed(bilevel::optim::adam<P>{.lr = 3e-4, .beta1 = 0.5, .weight_decay = 1e-3, .decoupled = true},
                     bilevel::optim::adam<C>{.lr = 3e-4, .beta1 = 0.5, .weight_decay = 1e-3, .decoupled = true}, 2);
    check(bilevel::optim::adam<C>{.lr = 0.01, .weight_decay = 0.1}, 5, 1e-7);
    check(bilevel::optim::adam<C>{.lr = 3e-4, .beta1 = 0.5, .weight_decay = 1e-3, .decoupled = true}, 2, 1e-7);
  }
}

TEST_CASE_TEMPLATE("frozen: θ never moves, and its VJP/JVP are those of the identity map", P, BILEVEL_SOLVER_DOUBLE_POLICIES) {
  const bilevel::optim::frozen<P> o;
  check(o, 0, 1e-9);  // JVP against differences of the map, VJP by transposition (adj_g must be 0)
  const auto theta0 = test::device<P>({1.0, -2.0, 3.0});
  auto theta = theta0;
  auto state = o.init(theta);
  CHECK(state.buffers.empty());
  for (int i = 0; i < 3; ++i) o.step(theta, state, test::device<P>({10.0, 20.0, 30.0}));
  CHECK(test::host<P>(theta) == test::host<P>(theta0));
  CHECK(state.step == 3);
  static_assert(bilevel::differentiable_optimizer<bilevel::optim::frozen<P>>);
}

TEST_CASE_TEMPLATE("clip_grad_norm: differentiable through the clip, on both sides of the threshold", P,
                   BILEVEL_SOLVER_DOUBLE_POLICIES) {
  using sgd = bilevel::optim::sgd<P>;
  using adam = bilevel::optim::adam<P>;
  // random g has norm ~1.4 in 6 dimensions: max_norm 0.5 clips, 10 does not.
  SUBCASE("clipping") { check(bilevel::optim::clip_grad_norm<sgd>{sgd{.lr = 0.1, .momentum = 0.9}, 0.5}, 0, 1e-8); }
  SUBCASE("not clipping") { check(bilevel::optim::clip_grad_norm<sgd>{sgd{.lr = 0.1}, 10.0}, 0, 1e-9); }
  SUBCASE("around Adam") { check(bilevel::optim::clip_grad_norm<adam>{adam{.lr = 0.01}, 0.5}, 1, 1e-7); }
  const bilevel::optim::clip_grad_norm<sgd> c{sgd{.lr = 1.0}, 2.0};
  CHECK(P::norm(c.clipped(test::device<P>({3.0, 4.0}))) == doctest::Approx(2.0));
}

TEST_CASE("adam: the first step moves each coordinate by lr (bias correction)") {
  using P = test::P64;
  using V = P::vector;
  using adam = bilevel::optim::adam<P>;
  const adam o{.lr = 0.01};
  V theta = V::Zero(3), g(3);
  g << 1.0, -2.0, 0.5;
  auto s = o.init(theta);
  o.step(theta, s, g);
  // m̂ = g, v̂ = g², u = g/(|g| + ε) ≈ sign(g)
  CHECK(theta[0] == doctest::Approx(-0.01));
  CHECK(theta[1] == doctest::Approx(0.01));
}

TEST_CASE("schedules: step and cosine") {
  using P = test::P64;
  using V = P::vector;
  using sgd = bilevel::optim::sgd<P>;
  const bilevel::optim::step_schedule st{1.0, 0.1, 10};
  CHECK(st(9) == 1.0);
  CHECK(st(10) == doctest::Approx(0.1));
  const bilevel::optim::cosine_schedule cs{0.1, 0.001, 100};
  CHECK(cs(0) == doctest::Approx(0.1));
  CHECK(cs(50) == doctest::Approx(0.0505));
  CHECK(cs(100) == doctest::Approx(0.001));
  const sgd o{.lr = 1.0, .schedule = [](std::size_t t) { return t == 0 ? 0.5 : 0.25; }};
  V theta = V::Zero(1);
  auto s = o.init(theta);
  o.step(theta, s, V::Ones(1));
  o.step(theta, s, V::Ones(1));
  CHECK(theta[0] == -0.75);
  CHECK(s.step == 2);
}

TEST_CASE("schedules: multistep, and the relative decays resolved against a rate and a length") {
  namespace optim = bilevel::optim;
  // MultiStepLR: lr · gamma^(milestones reached); unsorted and repeated milestones count as in PyTorch.
  const optim::multistep_schedule ms{.lr = 0.1, .gamma = 0.1, .milestones = {80, 100}};
  CHECK(ms(0) == 0.1);
  CHECK(ms(79) == 0.1);
  CHECK(ms(80) == doctest::Approx(0.01));
  CHECK(ms(99) == doctest::Approx(0.01));
  CHECK(ms(100) == doctest::Approx(0.001));
  CHECK(ms(100000) == doctest::Approx(0.001));
  CHECK(optim::multistep_schedule{.lr = 1.0, .gamma = 0.5, .milestones = {5, 2, 5}}(5) == 0.125);
  CHECK(optim::multistep_schedule{.lr = 0.3, .gamma = 0.1, .milestones = {}}(7) == 0.3);
  // Relative forms: fractions of 120 steps, the base rate given once.
  const auto multistep = optim::resolve_schedule(optim::multistep_decay{.at = {80.0 / 120, 100.0 / 120}}, 0.1, 120);
  CHECK(multistep(79) == 0.1);
  CHECK(multistep(80) == doctest::Approx(0.01));
  CHECK(multistep(100) == doctest::Approx(0.001));
  const auto cosine = optim::resolve_schedule(optim::cosine_decay{.lr_min = 0.001}, 0.1, 100);
  CHECK(cosine(0) == 0.1);
  CHECK(cosine(50) == doctest::Approx(0.0505));
  CHECK(cosine(100) == 0.001);
  CHECK_FALSE(optim::resolve_schedule(optim::constant_decay{}, 0.1, 0));
  CHECK_THROWS_WITH_AS(optim::resolve_schedule(optim::cosine_decay{}, 0.1, 0, "where"),
                       doctest::Contains("where: the learning-rate decay is stated in fractions of training, but the "
                                         "length of training is 0 steps"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(optim::resolve_schedule(optim::multistep_decay{.at = {0.0}}, 0.1, 10),
                       doctest::Contains("milestones are fractions of training in (0, 1], got 0"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(optim::resolve_schedule(optim::multistep_decay{.at = {0.5}, .gamma = 0.0}, 0.1, 10),
                       doctest::Contains("gamma must be > 0"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(optim::resolve_schedule(optim::cosine_decay{.lr_min = 0.2}, 0.1, 10),
                       doctest::Contains("lr_min must be in [0, lr] = [0, 0.100000], got 0.200000"),
                       std::invalid_argument);
}

TEST_CASE("optimizers refuse nonsensical settings by name") {
  using P = test::P64;
  using V = P::vector;
  using sgd = bilevel::optim::sgd<P>;
  using adam = bilevel::optim::adam<P>;
  const V theta = V::Zero(1);
  CHECK_THROWS_WITH_AS(sgd{.lr = 0.0}.init(theta), doctest::Contains("learning rate must be finite and > 0"), std::invalid_argument);
  CHECK_THROWS_WITH_AS((sgd{.lr = 0.1, .momentum = 1.0}.init(theta)), doctest::Contains("momentum must be in [0, 1)"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS((sgd{.lr = 0.1, .weight_decay = -1.0}.init(theta)), doctest::Contains("weight decay must be >= 0"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS((sgd{.lr = 0.1, .nesterov = true}.init(theta)),
                       doctest::Contains("Nesterov momentum needs momentum > 0"), std::invalid_argument);
  CHECK_THROWS_WITH_AS((adam{.beta2 = 1.0}.init(theta)), doctest::Contains("beta2 must be in [0, 1)"), std::invalid_argument);
  CHECK_THROWS_WITH_AS((adam{.eps = 0.0}.init(theta)), doctest::Contains("eps must be > 0"), std::invalid_argument);
  CHECK_THROWS_WITH_AS((bilevel::optim::clip_grad_norm<sgd>{sgd{}, 0.0}.init(theta)),
                       doctest::Contains("max_norm must be > 0"), std::invalid_argument);
}
