// SPDX-License-Identifier: MIT
// The MLP learner: gradient, HVP (R-operator) and mixed products against central
// differences for every activation, loss and weighting; the forward-pass cache never serves
// stale values; its outputs; and a hypergradient through it by the solver.
#include <doctest/doctest.h>

#include <bilevel/eigen.hpp>
#include <bilevel/learners/classification_accuracy.hpp>
#include <bilevel/learners/loss_weighting_net.hpp>
#include <bilevel/learners/mlp.hpp>
#include <bilevel/learners/softmax_class_weights.hpp>
#include <bilevel/learners/solution_loss.hpp>

#include "batches.hpp"
#include "derivative_checks.hpp"

namespace {
using P = test::P64;
using namespace bilevel::learners;

/// A random batch (tests/batches.hpp), optionally with soft targets.
classification_batch<P> random_batch(std::size_t n, std::size_t features, std::size_t classes, unsigned seed,
                                     bool soft = false) {
  auto b = test::random_batch<P>(n, features, classes, seed);
  if (soft) {  // random distributions as targets (SGL's pseudo-labels)
    const auto r = test::random_vector(n * classes, seed + 1);
    for (std::size_t i = 0; i < n; ++i) {
      double s = 0;
      for (std::size_t k = 0; k < classes; ++k) s += b.targets(long(i), long(k)) = std::exp(r[i * classes + k]);
      for (std::size_t k = 0; k < classes; ++k) b.targets(long(i), long(k)) /= s;
      b.labels[i] = -1;
    }
  }
  return b;
}

template <class W>
void check_network(activation act, loss_kind loss, W weighting, std::vector<std::vector<double>> inputs,
                   bool soft = false) {
  const mlp<P, W> net({5, 4, 3, 3}, act, loss, weighting);
  const auto batch = random_batch(6, 5, 3, 3, soft);
  const auto theta = test::host<P>(net.initial_parameters(7));
  // Central differences with h = 1e-5 on an O(1) smooth loss: ≲ 1e-9 relative; ReLU is
  // piecewise linear, and at these random points no pre-activation lies within h·‖v‖ of a
  // kink (a kink crossed would show up as an O(1) error, not a small one).
  test::check_learner_derivatives(net, theta, inputs, batch, 1e-6);
}
}  // namespace

TEST_CASE("mlp: exact products against central differences, each activation, cross-entropy") {
  for (auto act : {activation::relu, activation::tanh, activation::sigmoid, activation::identity}) {
    CAPTURE(to_string(act));
    check_network(act, loss_kind::cross_entropy, unweighted{}, {});
  }
}

TEST_CASE("mlp: squared error and soft-label cross-entropy") {
  check_network(activation::tanh, loss_kind::squared_error, unweighted{}, {});
  check_network(activation::sigmoid, loss_kind::cross_entropy, unweighted{}, {}, true);
}

TEST_CASE("mlp: per-sample weights by id and per-class weights, with every mixed product") {
  auto w = test::random_vector(6, 5, 0.5);
  for (auto& x : w) x += 1.0;
  check_network(activation::tanh, loss_kind::cross_entropy, sample_weights{6}, {w});
  check_network(activation::relu, loss_kind::cross_entropy, class_weights{3}, {{0.5, 1.5, 1.0}});
  // Learned class weights, C · softmax(φ): nonlinear in φ, so every mixed product goes through
  // its Jacobian (its own VJP and JVP), at a point where the weights differ.
  check_network(activation::tanh, loss_kind::cross_entropy, softmax_class_weights{3}, {{0.4, -0.7, 0.2}});
}

namespace {
/// The Eigen policy without the optional fused primitives (core/tensor_policy.hpp): the
/// composed forms a policy of one's own gets.
struct composed_eigen : bilevel::policy::eigen<double> {
  template <class... A>
  static void zip_apply(A&&...) = delete;
  template <class... A>
  static void softmax_cross_entropy(A&&...) = delete;
  template <class... A>
  static void softmax_cross_entropy_tangent(A&&...) = delete;
  template <class... A>
  static void scale_rows_into(A&&...) = delete;
  template <class... A>
  static void scale_entry(A&&...) = delete;
  template <class... A>
  static void add_scaled_dot_into(A&&...) = delete;
  template <class... A>
  static void add_segment_row(A&&...) = delete;
  template <class... A>
  static void column_sums_into_segment(A&&...) = delete;
  template <class... A>
  static void add_segment_row_map(A&&...) = delete;
  template <class... A>
  static void map_column_sums_into_segment(A&&...) = delete;
};
}  // namespace

TEST_CASE("mlp: a policy without the fused primitives gets the composed forms, with the same results") {
  using C = composed_eigen;
  static_assert(!bilevel::fused_softmax_cross_entropy<C> && !bilevel::fused_scaled_copies<C> &&
                !bilevel::fused_segment_ops<C> && !bilevel::vector_dot_into<C> && !bilevel::fused_elementwise<C> &&
                !bilevel::fused_bias_maps<C> && !bilevel::fused_bias_gradients<C>);
  static_assert(bilevel::fused_bias_maps<P> && bilevel::fused_bias_gradients<P>);
  // Two hidden layers, so that a bias and activation pass follows both the data's layer and a
  // hidden one (whose tangent has both products); the ReLU's own functors and the general ones.
  const std::vector<std::size_t> widths{5, 4, 4, 3};
  for (const activation hidden : {activation::tanh, activation::relu, activation::sigmoid}) {
    CAPTURE(to_string(hidden));
    const mlp<P, sample_weights> fused(widths, hidden, loss_kind::cross_entropy, sample_weights{6});
    const mlp<C, sample_weights> composed(widths, hidden, loss_kind::cross_entropy, sample_weights{6});
    // Random parameters, biases included (initial_parameters' are zero).
    const auto theta = test::random_vector(fused.num_parameters(), 7, 0.5);
    auto w = test::random_vector(6, 5, 0.5);
    for (auto& x : w) x += 1.0;
    const auto v = test::random_vector(theta.size(), 8);
    const auto bf = test::random_batch<P>(6, 5, 3, 3);
    const auto bc = test::random_batch<C>(6, 5, 3, 3);
    const P::vector tf = test::device<P>(theta), wf = test::device<P>(w), vf = test::device<P>(v);
    const C::vector tc = test::device<C>(theta), wc = test::device<C>(w), vc = test::device<C>(v);
    const P::vector* in_f[] = {&wf};
    const C::vector* in_c[] = {&wc};
    // The same arithmetic in another order of rounding: agreement to 1e-13 relative.
    CHECK(fused.loss(tf, in_f, bf) == doctest::Approx(composed.loss(tc, in_c, bc)).epsilon(1e-13));
    P::vector gf, hf;
    C::vector gc, hc;
    fused.gradient(tf, in_f, bf, gf);
    composed.gradient(tc, in_c, bc, gc);
    CHECK(test::relative_error(test::host<P>(gf), test::host<C>(gc)) <= 1e-13);
    fused.hvp(tf, in_f, bf, vf, hf);
    composed.hvp(tc, in_c, bc, vc, hc);
    CHECK(test::relative_error(test::host<P>(hf), test::host<C>(hc)) <= 1e-13);
  }
}

TEST_CASE("mlp: the forward cache never serves stale values") {
  // One learner moved between points, batches and weights must agree with fresh learners.
  const mlp<P, sample_weights> net({5, 4, 3}, activation::tanh, loss_kind::cross_entropy, sample_weights{6});
  const auto b1 = random_batch(6, 5, 3, 1), b2 = random_batch(6, 5, 3, 2);
  const P::vector t1 = net.initial_parameters(1), t2 = net.initial_parameters(2);
  const P::vector w1 = P::vector::Ones(6), w2 = P::vector::LinSpaced(6, 0.5, 1.5);
  const P::vector v = test::device<P>(test::random_vector(net.num_parameters(), 9));
  auto hvp_fresh = [&](const P::vector& t, const P::vector& w, const classification_batch<P>& b) {
    const mlp<P, sample_weights> fresh({5, 4, 3}, activation::tanh, loss_kind::cross_entropy, sample_weights{6});
    const P::vector* in[] = {&w};
    P::vector out;
    fresh.hvp(t, in, b, v, out);
    return test::host<P>(out);
  };
  P::vector out, g;
  for (auto [t, w, b] : {std::tuple{&t1, &w1, &b1}, std::tuple{&t2, &w1, &b1}, std::tuple{&t2, &w2, &b1},
                         std::tuple{&t2, &w2, &b2}, std::tuple{&t1, &w1, &b1}}) {
    const P::vector* in[] = {w};
    net.gradient(*t, in, *b, g);
    net.hvp(*t, in, *b, v, out);
    CHECK(test::host<P>(out) == hvp_fresh(*t, *w, *b));
  }
}

TEST_CASE("mlp: the caches follow θ and the batch changed in place, through every product") {
  // The caches key on values, not on objects: an optimizer steps θ where it lies, and a batch
  // may be refilled in place. Every product, first or served again from the caches and
  // scratch buffers, must equal a fresh learner's, bit for bit.
  using net_t = mlp<P, sample_weights>;
  auto make = [] { return net_t({5, 4, 3}, activation::relu, loss_kind::cross_entropy, sample_weights{6}); };
  const net_t net = make();
  auto b = random_batch(6, 5, 3, 1);
  P::vector theta = net.initial_parameters(1);
  const P::vector w = P::vector::LinSpaced(6, 0.5, 1.5);
  const P::vector v = test::device<P>(test::random_vector(net.num_parameters(), 9));
  const P::vector u = test::device<P>(test::random_vector(6, 10));
  const P::vector* in[] = {&w};
  struct products {
    double loss = 0;
    P::vector g, hv, mv, mj;
  };
  auto all = [&](const net_t& n) {
    products p;
    p.loss = n.gradient(theta, in, b, p.g);
    n.hvp(theta, in, b, v, p.hv);
    n.mixed_vjp(theta, in, b, 0, v, p.mv);  // the tangent pass of the HVP, kept
    n.mixed_jvp(theta, in, b, 0, u, p.mj);
    return p;
  };
  auto check_same = [](const products& a, const products& c) {
    CHECK(a.loss == c.loss);
    CHECK(P::equal(a.g, c.g));
    CHECK(P::equal(a.hv, c.hv));
    CHECK(P::equal(a.mv, c.mv));
    CHECK(P::equal(a.mj, c.mj));
  };
  for (int round = 0; round < 4; ++round) {
    CAPTURE(round);
    const auto expected = all(make());
    check_same(all(net), expected);
    check_same(all(net), expected);  // all served from the caches
    if (round == 0) theta[3] += 0.25;  // the same object, moved in place
    if (round == 1) b.x(2, 1) += 0.5;
    if (round == 2) b.targets.row(0) = b.targets.row(1);  // a relabelled sample, same inputs
  }
}

TEST_CASE("mlp: outputs expose logits, penultimate features and per-sample losses") {
  const mlp<P> net({5, 4, 3}, activation::relu);
  const auto b = random_batch(6, 5, 3, 4);
  const auto theta = net.initial_parameters(3);
  const auto o = net.forward(theta, b);
  CHECK(o.logits.rows() == 6);
  CHECK(o.logits.cols() == 3);
  CHECK(o.features.cols() == 4);
  for (long i = 0; i < 6; ++i) {
    const double lse = std::log(o.logits.row(i).array().exp().sum());
    CHECK(o.losses[i] == doctest::Approx(lse - o.logits(i, b.labels[std::size_t(i)])));
  }
  CHECK(net.loss(theta, {}, b) == doctest::Approx(o.losses.mean()));
}

TEST_CASE("classification_accuracy: plain and class-balanced accuracy, by hand, in any chunking") {
  // One dense layer with W = I and b = 0: the logits are the inputs, so the predicted class
  // is the position of each row's largest feature.
  const mlp<P> net({3, 3});
  const auto theta = test::device<P>({1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0});
  bilevel::data::dataset d;
  d.rows = 7;
  d.cols = 3;
  d.num_classes = 3;
  const int predicted[] = {0, 1, 1, 2, 2, 2, 2};
  d.labels = {0, 0, 1, 1, 2, 2, 2};  // class 0: 1 of 2 right, class 1: 1 of 2, class 2: 3 of 3
  for (std::size_t r = 0; r < d.rows; ++r) {
    for (int c = 0; c < 3; ++c) d.features.push_back(c == predicted[r] ? 2.0f : float(r) * 0.1f);
    d.ids.push_back(r);
  }
  for (std::size_t chunk : {1000u, 2u, 1u}) {
    const auto a = classification_accuracy(net, theta, d, {}, chunk);
    CHECK(a.plain == doctest::Approx(100.0 * 5.0 / 7.0));
    CHECK(a.balanced == doctest::Approx(100.0 * (0.5 + 0.5 + 1.0) / 3.0));
  }
  // A class without rows is left out of the balanced mean, not counted as 0.
  d.labels = {0, 0, 0, 0, 2, 2, 2};  // class 0: 1 of 4, class 2: 3 of 3
  const auto a = classification_accuracy(net, theta, d);
  CHECK(a.plain == doctest::Approx(100.0 * 4.0 / 7.0));
  CHECK(a.balanced == doctest::Approx(100.0 * (0.25 + 1.0) / 2.0));
  d.num_classes = 4;
  CHECK_THROWS_WITH(classification_accuracy(net, theta, d), doctest::Contains("targets are 7x4, expected 7x3"));
}

TEST_CASE("mlp: bad shapes and ids are named") {
  const mlp<P, sample_weights> net({5, 4, 3}, activation::relu, loss_kind::cross_entropy, sample_weights{3});
  const auto theta = net.initial_parameters(1);
  const P::vector w = P::vector::Ones(3);
  const P::vector* in[] = {&w};
  CHECK_THROWS_WITH_AS(net.loss(theta, in, random_batch(6, 5, 3, 1)),
                       doctest::Contains("sample id 3 has no entry in a weight table of 3"), std::out_of_range);
  const mlp<P> plain({5, 4, 3});
  CHECK_THROWS_WITH_AS(plain.loss(plain.initial_parameters(1), {}, random_batch(6, 7, 3, 1)),
                       doctest::Contains("batch has 7 features, the network takes 5"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(mlp<P>({5}), doctest::Contains("need at least input and output widths"), std::invalid_argument);
}

TEST_CASE("mlp: the solver's unrolled hypergradient for per-sample weights matches central differences") {
  // Data reweighting in miniature: an MLP on 6 weighted samples, validation loss on 6 others.
  using inner_net = mlp<P, sample_weights>;
  const inner_net net({5, 4, 3}, activation::tanh, loss_kind::cross_entropy, sample_weights{6});
  const auto train = random_batch(6, 5, 3, 1), val = random_batch(6, 5, 3, 2);
  const auto theta0 = net.initial_parameters(5);
  const std::size_t steps = 4;
  const double lr = 0.5;
  const std::vector<double> w0 = {1.0, 0.8, 1.2, 0.9, 1.1, 1.0};
  auto lower = bilevel::make_level("weights", net, bilevel::optim::sgd<P>{.lr = lr, .momentum = 0.5},
                                   bilevel::hypergrad::unrolled{}, theta0, [&] { return train; })
                   .reading({1})
                   .steps_per_iteration(steps);
  auto upper = bilevel::make_level("sample_weights", solution_loss<mlp<P>>(mlp<P>({5, 4, 3}, activation::tanh), 6),
                                   bilevel::optim::sgd<P>{.lr = 0.1}, bilevel::hypergrad::first_order{},
                                   test::device<P>(w0), [&] { return val; })
                   .reading({0});
  bilevel::solver s(std::move(lower), std::move(upper));
  s.step_level(0);
  const auto hg = test::host<P>(s.hypergradient(1).gradient);
  // The same 4 momentum-SGD steps, written out, as a function of the weights.
  const mlp<P> val_net({5, 4, 3}, activation::tanh);
  auto objective = [&](const std::vector<double>& w) {
    const P::vector wv = test::device<P>(w);
    const P::vector* in[] = {&wv};
    P::vector t = theta0, m = P::zeros(net.num_parameters()), g;
    for (std::size_t k = 0; k < steps; ++k) {
      net.gradient(t, in, train, g);
      m = 0.5 * m + g;
      t -= lr * m;
    }
    return val_net.loss(t, {}, val);
  };
  // h = 1e-5: truncation and round-off both ≲ 1e-9 relative here (see derivative_checks.hpp).
  CHECK(test::relative_error(hg, test::central_gradient(objective, w0, 1e-5)) <= 1e-6);
}

TEST_CASE("mlp with Meta-Weight-Net's weighting: products with respect to the weighting net") {
  // c_i = V(ℓ_i; Θ) reads the *detached* losses (as Meta-Weight-Net does), so the classifier's
  // gradient treats c as constant: derivatives in θ are not those of the composed loss, and
  // the θ-side checks of check_learner_derivatives do not apply. Everything with respect to Θ
  // is exact: input_gradient and mixed_jvp against central differences in Θ (h = 1e-6,
  // ≲ 1e-9 relative), and mixed_vjp as the transpose of mixed_jvp.
  const loss_weighting_net v{8};
  const mlp<P, loss_weighting_net> net({5, 4, 3}, activation::tanh, loss_kind::cross_entropy, v);
  const auto b = random_batch(6, 5, 3, 3);
  const P::vector theta = net.initial_parameters(2), big = v.initial_parameters<P>(5);
  const P::vector* in[] = {&big};
  // input gradient: ∂L/∂Θ against central differences of L(Θ) (θ fixed, losses fixed)
  P::vector gi;
  net.input_gradient(theta, in, b, 0, gi);
  const auto loss_in = [&](const std::vector<double>& x) {
    const P::vector t = test::device<P>(x);
    const P::vector* i2[] = {&t};
    return net.loss(theta, i2, b);
  };
  CHECK(test::relative_error(test::host<P>(gi), test::central_gradient(loss_in, test::host<P>(big), 1e-6)) <= 1e-6);
  // mixed_jvp: the θ-gradient's derivative along a Θ-direction u
  const auto u = test::random_vector(big.size(), 4);
  P::vector mu;
  net.mixed_jvp(theta, in, b, 0, test::device<P>(u), mu);
  const auto grad_in = [&](const std::vector<double>& x) {
    const P::vector t = test::device<P>(x);
    const P::vector* i2[] = {&t};
    P::vector g;
    net.gradient(theta, i2, b, g);
    return test::host<P>(g);
  };
  CHECK(test::relative_error(test::host<P>(mu), test::central_directional(grad_in, test::host<P>(big), u, 1e-6)) <= 1e-6);
  // mixed_vjp against ⟨u, mixed_vjp(v)⟩ = ⟨mixed_jvp(u), v⟩: the two mixed products are
  // transposes of each other (the same second derivative read both ways).
  const auto vdir = test::device<P>(test::random_vector(net.num_parameters(), 6));
  P::vector mv;
  net.mixed_vjp(theta, in, b, 0, vdir, mv);
  double lhs = 0;
  for (std::size_t i = 0; i < u.size(); ++i) lhs += u[i] * mv[long(i)];
  CHECK(lhs == doctest::Approx(mu.dot(vdir)).epsilon(1e-10));
}
