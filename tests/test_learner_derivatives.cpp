// SPDX-License-Identifier: MIT
// Every built-in problem learner's derivatives against central differences, in double, at
// random points (random θ and random inputs): gradient against the loss, each input gradient
// against the loss in that input, the HVP against the gradient, each mixed VJP against the
// input gradient, each mixed JVP against the gradient. Then the automatic fallbacks of
// bilevel/core/second_order.hpp: a learner whose exact second-order members are hidden must
// get central-difference products that say they are not exact and agree with the exact ones.
//
// Error budget of a central difference with step h (used throughout): truncation
// h²/6 · |f'''| and round-off ~ ε_mach · |f| / h. With h = 1e-5 in double that is ~1e-11 and
// ~2e-11 for these O(1)-scaled problems, i.e. ~1e-10 relative at worst. A wrong factor or a
// missing term shows up at O(1e-2) or more, so the tolerances below (1e-8) sit far from both.
#include <doctest/doctest.h>

#include <bilevel/bilevel.hpp>
#include <bilevel/problems/quadratic.hpp>
#include <bilevel/problems/ridge.hpp>
#include <bilevel/problems/weighted_logistic.hpp>

#include <cmath>
#include <vector>

#include "support.hpp"

namespace {

using namespace bilevel::problems;

/// Central-difference step: h = 1e-5 balances truncation (h² ≈ 1e-10) against round-off
/// (ε/h ≈ 2e-11) in double.
constexpr double h = 1e-5;

/// Relative tolerance for first derivatives (gradient, input gradient) against central
/// differences of the loss: the budget above is ~1e-10 relative (measured: at most 1.5e-10
/// over every learner and seed here), so 1e-8 leaves ~two orders of margin while an error in
/// any term (O(1e-2) or more) fails.
constexpr double first_order_tol = 1e-8;

/// Relative tolerance for second-order products against central differences of a gradient:
/// the same budget (the gradients are O(1) smooth functions too; measured at most 5e-11),
/// so 1e-8 for the same reason.
constexpr double second_order_tol = 1e-8;

/// A learner at a point: θ and its inputs on the host (double) and on the back end.
template <class L>
struct at_point {
  using P = typename L::policy;
  using V = bilevel::vector_t<P>;
  const L& l;
  std::vector<double> theta_h;
  std::vector<std::vector<double>> inputs_h;

  V theta() const { return test::device<P>(theta_h); }

  /// Calls f(θ, input_list) with θ and input `slot` replaced (slot == npos: no input replaced).
  template <class F>
  auto with(const std::vector<double>& th, std::size_t slot, const std::vector<double>& x, F f) const {
    std::vector<V> in;
    for (std::size_t s = 0; s < inputs_h.size(); ++s) in.push_back(test::device<P>(s == slot ? x : inputs_h[s]));
    std::vector<const V*> ptrs;
    for (const auto& v : in) ptrs.push_back(&v);
    return f(test::device<P>(th), bilevel::input_list<P>(ptrs));
  }
  template <class F>
  auto with(F f) const {
    return with(theta_h, std::size_t(-1), {}, f);
  }

  double loss(const std::vector<double>& th) const {
    return with(th, std::size_t(-1), {}, [&](const V& t, auto in) { return l.loss(t, in, {}); });
  }
  double loss_in(std::size_t slot, const std::vector<double>& x) const {
    return with(theta_h, slot, x, [&](const V& t, auto in) { return l.loss(t, in, {}); });
  }
  std::vector<double> gradient(const std::vector<double>& th) const {
    return with(th, std::size_t(-1), {}, [&](const V& t, auto in) {
      V g;
      l.gradient(t, in, {}, g);
      return test::host<P>(g);
    });
  }
  std::vector<double> gradient_in(std::size_t slot, const std::vector<double>& x) const {
    return with(theta_h, slot, x, [&](const V& t, auto in) {
      V g;
      l.gradient(t, in, {}, g);
      return test::host<P>(g);
    });
  }
  std::vector<double> input_gradient(const std::vector<double>& th, std::size_t slot) const {
    return with(th, std::size_t(-1), {}, [&](const V& t, auto in) {
      V g;
      l.input_gradient(t, in, {}, slot, g);
      return test::host<P>(g);
    });
  }
};

/// Every derivative the learner has, against central differences at the point.
template <class L>
void check_derivatives(const at_point<L>& p) {
  using P = typename L::policy;
  using V = bilevel::vector_t<P>;
  const auto& l = p.l;
  REQUIRE(l.num_parameters() == p.theta_h.size());

  // gradient() writes ∂L/∂θ and returns the loss: the same arithmetic as loss(), so they agree
  // to the last few ulps (1e-14 relative).
  p.with([&](const V& t, auto in) {
    V g;
    const double reported = l.gradient(t, in, {}, g);
    CHECK(reported == doctest::Approx(l.loss(t, in, {})).epsilon(1e-14));
    CHECK(P::size(g) == p.theta_h.size());
    return 0;
  });

  // gradient vs central differences of the loss in θ (first_order_tol: see its comment).
  const auto fd_grad = test::central_gradient([&](const auto& t) { return p.loss(t); }, p.theta_h, h);
  CHECK(test::relative_error(p.gradient(p.theta_h), fd_grad) <= first_order_tol);

  const auto v_h = test::random_vector(p.theta_h.size(), 501);  // θ-space direction

  if constexpr (bilevel::has_exact_hvp<L>) {
    // hvp vs central differences of the gradient along v (second_order_tol).
    const auto hv = p.with([&](const V& t, auto in) {
      V out;
      l.hvp(t, in, {}, test::device<P>(v_h), out);
      return test::host<P>(out);
    });
    const auto fd = test::central_directional([&](const auto& t) { return p.gradient(t); }, p.theta_h, v_h, h);
    CHECK(test::relative_error(hv, fd) <= second_order_tol);
  }

  for (std::size_t s = 0; s < p.inputs_h.size(); ++s) {
    CAPTURE(s);
    const auto& x_h = p.inputs_h[s];
    // input_gradient vs central differences of the loss in input s (first_order_tol).
    const auto gi = p.input_gradient(p.theta_h, s);
    REQUIRE(gi.size() == x_h.size());
    const auto fd_in = test::central_gradient([&](const auto& x) { return p.loss_in(s, x); }, x_h, h);
    CHECK(test::relative_error(gi, fd_in) <= first_order_tol);

    if constexpr (bilevel::has_exact_mixed_vjp<L>) {
      // (∂²L/∂in_s ∂θ) v vs central differences of the input gradient along θ-direction v
      // (second_order_tol).
      const auto mv = p.with([&](const V& t, auto in) {
        V out;
        l.mixed_vjp(t, in, {}, s, test::device<P>(v_h), out);
        return test::host<P>(out);
      });
      const auto fd = test::central_directional([&](const auto& t) { return p.input_gradient(t, s); }, p.theta_h, v_h, h);
      CHECK(test::relative_error(mv, fd) <= second_order_tol);
    }
    if constexpr (bilevel::has_exact_mixed_jvp<L>) {
      // (∂²L/∂θ ∂in_s) u vs central differences of the θ-gradient along input-direction u
      // (second_order_tol).
      const auto u_h = test::random_vector(x_h.size(), 601 + unsigned(s));
      const auto mu = p.with([&](const V& t, auto in) {
        V out;
        l.mixed_jvp(t, in, {}, s, test::device<P>(u_h), out);
        return test::host<P>(out);
      });
      const auto fd = test::central_directional([&](const auto& x) { return p.gradient_in(s, x); }, x_h, u_h, h);
      CHECK(test::relative_error(mu, fd) <= second_order_tol);
    }
  }
}

/// Positive per-sample weights in [0.5, 1.5] (any real weight is differentiable, but these
/// are the weights a reweighting problem meets).
std::vector<double> random_weights(std::size_t n, unsigned seed) {
  auto w = test::random_vector(n, seed, 0.5);
  for (auto& x : w) x += 1.0;
  return w;
}

}  // namespace

TEST_CASE("learner derivatives: ridge_training_loss, every product, at random θ and λ") {
  using P = test::P64;
  const auto prob = ridge_problem<P>::synthetic(30, 10, 6, 2, 0.5, 4);
  const ridge_training_loss<P> l(prob.train);
  static_assert(bilevel::twice_differentiable_learner<ridge_training_loss<P>>);
  for (unsigned seed : {1u, 2u, 3u}) {
    CAPTURE(seed);
    check_derivatives(at_point<ridge_training_loss<P>>{l, test::random_vector(6, 10 * seed, 1.5),
                                                       {test::random_vector(6, 10 * seed + 1)}});
  }
}

TEST_CASE("learner derivatives: validation_least_squares, loss, gradient and input gradient") {
  using P = test::P64;
  const auto prob = ridge_problem<P>::synthetic(30, 10, 6, 2, 0.5, 4);
  const validation_least_squares<P> l(prob.validation, 3);
  static_assert(bilevel::input_differentiable_learner<validation_least_squares<P>>);
  static_assert(!bilevel::has_exact_hvp<validation_least_squares<P>>);
  for (unsigned seed : {1u, 2u}) {
    CAPTURE(seed);
    // Its own variables do not enter the loss: the gradient must be exactly zero, and so is
    // its central difference (relative_error then measures the absolute error).
    check_derivatives(at_point<validation_least_squares<P>>{l, test::random_vector(3, 20 * seed),
                                                            {test::random_vector(6, 20 * seed + 1, 2.0)}});
  }
}

TEST_CASE("learner derivatives: quadratic_objective with two inputs, every product in both slots") {
  using P = test::P64;
  const auto q = quadratic_spec::random(5, {3, 2}, 9);
  const quadratic_objective<P> l(q);
  static_assert(bilevel::twice_differentiable_learner<quadratic_objective<P>>);
  REQUIRE(l.num_inputs() == 2);
  for (unsigned seed : {1u, 2u}) {
    CAPTURE(seed);
    check_derivatives(at_point<quadratic_objective<P>>{
        l, test::random_vector(5, 30 * seed, 2.0), {test::random_vector(3, 30 * seed + 1), test::random_vector(2, 30 * seed + 2)}});
  }
}

TEST_CASE("learner derivatives: weighted_logistic_loss, every product, at random θ and weights") {
  using P = test::P64;
  const auto prob = logistic_problem<P>::synthetic(25, 10, 4, 0.2, 6);
  const weighted_logistic_loss<P> l(prob.train, 0.05);
  static_assert(bilevel::twice_differentiable_learner<weighted_logistic_loss<P>>);
  for (unsigned seed : {1u, 2u, 3u}) {
    CAPTURE(seed);
    check_derivatives(at_point<weighted_logistic_loss<P>>{l, test::random_vector(4, 40 * seed, 1.5),
                                                          {random_weights(25, 40 * seed + 1)}});
  }
}

TEST_CASE("learner derivatives: validation_logistic_loss, loss, gradient and input gradient") {
  using P = test::P64;
  const auto prob = logistic_problem<P>::synthetic(25, 10, 4, 0.2, 6);
  const validation_logistic_loss<P> l(prob.validation, 25);
  static_assert(bilevel::input_differentiable_learner<validation_logistic_loss<P>>);
  for (unsigned seed : {1u, 2u}) {
    CAPTURE(seed);
    check_derivatives(at_point<validation_logistic_loss<P>>{l, random_weights(25, 50 * seed),
                                                            {test::random_vector(4, 50 * seed + 1, 1.5)}});
  }
}

// ---- automatic fallbacks (bilevel/core/second_order.hpp) ----

namespace {

/// Forwards only policy, batch_type, num_parameters, loss, gradient and input_gradient of a
/// real learner, hiding its exact hvp/mixed_vjp/mixed_jvp, so that bilevel::hvp and friends
/// must take central differences of gradients.
template <class L>
struct first_order_only {
  using policy = typename L::policy;
  using batch_type = typename L::batch_type;
  using V = bilevel::vector_t<policy>;
  const L* l;
  std::size_t num_parameters() const { return l->num_parameters(); }
  double loss(const V& t, bilevel::input_list<policy> in, const batch_type& b) const { return l->loss(t, in, b); }
  double gradient(const V& t, bilevel::input_list<policy> in, const batch_type& b, V& out) const {
    return l->gradient(t, in, b, out);
  }
  void input_gradient(const V& t, bilevel::input_list<policy> in, const batch_type& b, std::size_t s, V& out) const {
    l->input_gradient(t, in, b, s, out);
  }
};

/// For a learner with exact products at a point: the hidden-members wrapper and the forced
/// option both fall back (return false) and agree with the exact members to `tol` relative.
template <class L>
void check_fallbacks(const L& l, const std::vector<double>& theta_h, const std::vector<std::vector<double>>& inputs_h,
                     double tol) {
  using P = typename L::policy;
  using V = bilevel::vector_t<P>;
  using W = first_order_only<L>;
  static_assert(bilevel::twice_differentiable_learner<L>);
  static_assert(bilevel::input_differentiable_learner<W>);
  static_assert(!bilevel::has_exact_hvp<W>);
  static_assert(!bilevel::has_exact_mixed_vjp<W>);
  static_assert(!bilevel::has_exact_mixed_jvp<W>);
  const W w{&l};

  const V theta = test::device<P>(theta_h);
  std::vector<V> inputs;
  for (const auto& x : inputs_h) inputs.push_back(test::device<P>(x));
  std::vector<const V*> ptrs;
  for (const auto& x : inputs) ptrs.push_back(&x);
  const bilevel::input_list<P> in(ptrs);
  const V v = test::device<P>(test::random_vector(theta_h.size(), 701));

  // The default scale for the scalar type: 1e-4 in double, 1e-2 in float.
  const bilevel::second_order_options opt{.fd_scale = bilevel::default_fd_scale<bilevel::scalar_t<P>>()};
  const bilevel::second_order_options forced{.fd_scale = opt.fd_scale, .force_finite_differences = true};
  V exact, fallback, via_forced;

  // hvp
  l.hvp(theta, in, {}, v, exact);
  CHECK(bilevel::hvp(l, theta, in, {}, v, fallback, opt));  // exact member used: returns true
  CHECK(test::relative_error(test::host<P>(fallback), test::host<P>(exact)) == 0.0);  // the very same call
  CHECK_FALSE(bilevel::hvp(w, theta, in, {}, v, fallback, opt));
  CHECK(test::relative_error(test::host<P>(fallback), test::host<P>(exact)) <= tol);
  CHECK_FALSE(bilevel::hvp(l, theta, in, {}, v, via_forced, forced));
  CHECK(test::relative_error(test::host<P>(via_forced), test::host<P>(exact)) <= tol);

  for (std::size_t s = 0; s < inputs.size(); ++s) {
    CAPTURE(s);
    const V u = test::device<P>(test::random_vector(inputs_h[s].size(), 801 + unsigned(s)));
    // mixed_vjp: θ-space v → input space
    l.mixed_vjp(theta, in, {}, s, v, exact);
    CHECK(bilevel::mixed_vjp(l, theta, in, {}, s, v, fallback, opt));
    CHECK_FALSE(bilevel::mixed_vjp(w, theta, in, {}, s, v, fallback, opt));
    CHECK(P::size(fallback) == inputs_h[s].size());
    CHECK(test::relative_error(test::host<P>(fallback), test::host<P>(exact)) <= tol);
    CHECK_FALSE(bilevel::mixed_vjp(l, theta, in, {}, s, v, via_forced, forced));
    CHECK(test::relative_error(test::host<P>(via_forced), test::host<P>(exact)) <= tol);
    // mixed_jvp: input space u → θ-space
    l.mixed_jvp(theta, in, {}, s, u, exact);
    CHECK(bilevel::mixed_jvp(l, theta, in, {}, s, u, fallback, opt));
    CHECK_FALSE(bilevel::mixed_jvp(w, theta, in, {}, s, u, fallback, opt));
    CHECK(P::size(fallback) == theta_h.size());
    CHECK(test::relative_error(test::host<P>(fallback), test::host<P>(exact)) <= tol);
    CHECK_FALSE(bilevel::mixed_jvp(l, theta, in, {}, s, u, via_forced, forced));
    CHECK(test::relative_error(test::host<P>(via_forced), test::host<P>(exact)) <= tol);

    // A zero direction gives a zero product of the right size (not 0/0 = NaN from ε = s/0).
    const V zero_in = P::zeros(inputs_h[s].size());
    fallback = P::zeros(1);
    CHECK_FALSE(bilevel::mixed_jvp(w, theta, in, {}, s, zero_in, fallback, opt));
    CHECK(P::size(fallback) == theta_h.size());
    CHECK(P::all_finite(fallback));
    CHECK(P::norm(fallback) == 0.0);
    fallback = P::zeros(1);
    CHECK_FALSE(bilevel::mixed_vjp(w, theta, in, {}, s, P::zeros(theta_h.size()), fallback, opt));
    CHECK(P::size(fallback) == inputs_h[s].size());
    CHECK(P::all_finite(fallback));
    CHECK(P::norm(fallback) == 0.0);
  }
  fallback = P::zeros(1);
  CHECK_FALSE(bilevel::hvp(w, theta, in, {}, P::zeros(theta_h.size()), fallback, opt));
  CHECK(P::size(fallback) == theta_h.size());
  CHECK(P::all_finite(fallback));
  CHECK(P::norm(fallback) == 0.0);
  fallback = P::zeros(1);
  CHECK_FALSE(bilevel::hvp(l, theta, in, {}, P::zeros(theta_h.size()), fallback, forced));
  CHECK(P::norm(fallback) == 0.0);
}

/// The three learners with exact products, at random points, in policy P.
template <class P>
void check_all_fallbacks(double tol) {
  const auto ridge = ridge_problem<P>::synthetic(30, 10, 6, 2, 0.5, 4);
  {
    INFO("ridge_training_loss");
    check_fallbacks(ridge_training_loss<P>(ridge.train), test::random_vector(6, 61, 1.5), {test::random_vector(6, 62)},
                    tol);
  }
  {
    INFO("quadratic_objective, two inputs");
    check_fallbacks(quadratic_objective<P>(quadratic_spec::random(5, {3, 2}, 9)), test::random_vector(5, 63, 2.0),
                    {test::random_vector(3, 64), test::random_vector(2, 65)}, tol);
  }
  {
    INFO("weighted_logistic_loss");
    const auto logistic = logistic_problem<P>::synthetic(25, 10, 4, 0.2, 6);
    check_fallbacks(weighted_logistic_loss<P>(logistic.train, 0.05), test::random_vector(4, 66, 1.5),
                    {random_weights(25, 67)}, tol);
  }
}

}  // namespace

TEST_CASE("second-order fallbacks: double, default scale 1e-4, agree with exact products to 1e-8") {
  static_assert(bilevel::default_fd_scale<double>() == 1e-4);
  // ε = s/‖v‖ moves the point by exactly s = 1e-4: truncation s²/6 · |third derivative| ≈ 2e-9
  // relative for the logistic loss (zero for the two quadratics, whose gradients are affine
  // in θ, and ~1e-9 for ridge's e^λ in the mixed JVP); round-off ε_mach·|g|/s ≈ 1e-12.
  // Measured: at most 2e-9. So 1e-8; a wrong sign or a wrong 1/2ε would give O(1).
  check_all_fallbacks<test::P64>(1e-8);
}

TEST_CASE("second-order fallbacks: float, default scale 1e-2, agree with exact products to 1e-3") {
  static_assert(bilevel::default_fd_scale<float>() == 1e-2);
  // In float, round-off ε_float·|g|/s = 6e-8/1e-2 ≈ 6e-6 (times the ratio |g|/|Hv|, up to ~10
  // here) and truncation s²/6 ≈ 2e-5 for the logistic loss: ~1e-4 at worst (measured:
  // at most 2.5e-5), so 1e-3.
  check_all_fallbacks<test::P32>(1e-3);
}
