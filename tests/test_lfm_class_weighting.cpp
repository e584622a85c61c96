// SPDX-License-Identifier: MIT
// LFM-CW: the PCA-Gaussian generator (class-conditional, seeded), the class weights' exact
// products in W1 and ω against central differences, the three-level hypergradient against
// central differences of the method's look-ahead objective, and a short run.
#include <doctest/doctest.h>

#include <memory>
#include <numeric>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <bilevel/eigen.hpp>
#include <bilevel/data/generator.hpp>
#include <bilevel/methods/lfm_class_weighting.hpp>

#include "support.hpp"
#include "toy_data.hpp"
#include "weighting_checks.hpp"

namespace {

using P = test::P64;
using bilevel::learners::make_batch;
using bilevel::learners::mlp;
using bilevel::learners::sequential;
const std::vector<std::size_t> widths = {8, 6, 3};

/// The method on the toy data with a 4-component generator, W1 and W2 of `network` (none: the
/// MLP of `widths`).
auto small_method(const test::toy_set& train, const test::toy_set& val,
               std::optional<bilevel::learners::network_design> network = {}) {
  auto gen = std::make_shared<const bilevel::data::pca_gaussian_generator>(*train.data, 4, 1);
  return bilevel::methods::lfm_class_weighting<P>(
      train.data, val.data, gen,
      {.widths = widths, .network = std::move(network), .batch = 10, .synthetic_per_batch = 6, .validation_batch = 15,
       .references_per_class = 3, .seed = 4});
}

/// ω's hypergradient against central differences of the method's own look-ahead objective,
/// F(ω) = L_val(W2'(W1, ω)): W2's optimizer step from its current state on the batch it takes
/// next (real and generated samples), then the validation loss of W2' by `net` (the method's
/// network, built afresh).
template <class Solver>
void check_omega_hypergradient(Solver& s, const sequential<P>& net, const std::string& what) {
  auto& w2 = s.template level<1>();
  auto val_sampler = s.template level<2>().sampler;  // a copy: the batch the solver will draw
  const auto vb = val_sampler();
  const auto b2 = w2.peek_batch();
  const auto hg = s.hypergradient(2);
  const auto exact = test::host<P>(hg.gradient);
  const auto w1 = s.template level<0>().theta;
  auto objective = [&](const std::vector<double>& omega_host) {
    const P::vector omega = test::device<P>(omega_host);
    const P::vector* in[] = {&w1, &omega};
    P::vector theta = w2.theta, g;
    auto st = w2.state;
    w2.learner.gradient(theta, in, b2, g);
    w2.optimizer.step(theta, st, g);
    return net.loss(theta, {}, vb);
  };
  const auto omega0 = test::host<P>(s.template level<2>().theta);
  const auto fd = test::central_gradient(objective, omega0, 1e-5);
  MESSAGE("LFM-CW hypergradient (" << what << ") vs central differences: " << test::relative_error(exact, fd));
  CHECK(test::relative_error(exact, fd) <= 1e-6);  // h = 1e-5 in double, as for the other methods
}

}  // namespace

TEST_CASE("PCA-Gaussian generator: class means are reproduced, draws are seeded") {
  const auto train = test::toy_classes(600, 3);
  const bilevel::data::pca_gaussian_generator g(*train.data, 8, 1);  // full rank: exact per-class Gaussians
  std::mt19937_64 a(5), b(5);
  CHECK(g.sample(1, 4, a) == g.sample(1, 4, b));
  // The mean of many draws of class k approaches the class mean of the data (clipping aside:
  // the toy features are Gaussian with range ±4σ, so clipping is rare).
  for (std::size_t k = 0; k < 3; ++k) {
    std::vector<double> data_mean(8, 0.0), draw_mean(8, 0.0);
    std::size_t n = 0;
    for (std::size_t r = 0; r < train.data->rows; ++r)
      if (std::size_t(train.data->labels[r]) == k) {
        ++n;
        for (std::size_t c = 0; c < 8; ++c) data_mean[c] += train.data->features[r * 8 + c];
      }
    const auto draws = g.sample(k, 4000, a);
    for (std::size_t s = 0; s < 4000; ++s)
      for (std::size_t c = 0; c < 8; ++c) draw_mean[c] += draws[s * 8 + c] / 4000.0;
    for (auto& m : data_mean) m /= double(n);
    // Standard error of a mean of 4000 unit-variance draws is 0.016; 0.1 is over 6σ.
    for (std::size_t c = 0; c < 8; ++c) CHECK(std::abs(draw_mean[c] - data_mean[c]) < 0.1);
  }
  CHECK_THROWS_WITH_AS(g.sample(3, 1, a), doctest::Contains("class 3 of 3"), std::out_of_range);
}

TEST_CASE("LFM-CW class weights: VJP and JVP in W1 and ω are exact") {
  const auto train = test::toy_classes(30, 3), refs = test::toy_classes(30, 4, 0.0, 500);
  auto gen = std::make_shared<const bilevel::data::pca_gaussian_generator>(*train.data, 4, 1);
  bilevel::learners::with_synthetic_batches<P, bilevel::data::pca_gaussian_generator> batches(train.data, gen, 6, 6, 2);
  const auto b = batches();
  REQUIRE(b.size() == 12);
  const bilevel::learners::class_mistake_weighting<P> cw(widths, *refs.data, 0.7);
  std::vector<std::vector<double>> point = {test::host<P>(mlp<P>(widths).initial_parameters(5)), {0.8, 1.5, -0.4}};
  const P::vector dummy = P::zeros(12);
  const bilevel::learners::sample_signals<P> s{dummy};
  const test::weighting_at<P, bilevel::learners::class_mistake_weighting<P>> at(cw, point);
  const auto w = test::host<P>(cw.gather(at.in(), b, s));
  for (std::size_t i = 0; i < 6; ++i) CHECK(w[i] == 1.0);  // real rows
  for (std::size_t slot = 0; slot < 2; ++slot)
    test::check_weighting_products(cw, b, s, point, slot, test::random_vector(point[slot].size(), 8 + unsigned(slot), 1.0),
                                   7);
}

TEST_CASE("LFM-CW: ω's hypergradient against central differences, and a short run") {
  const auto train = test::toy_classes(60, 3), val = test::toy_classes(30, 4, 0.0, 1000);
  auto s = small_method(train, val);
  s.run(3);
  check_omega_hypergradient(s, mlp<P>(widths), "MLP");
  auto& w2 = s.level<1>();
  const auto w1 = s.level<0>().theta;
  // The named levels are these levels; class_weights() is W2's weighting at (W1, ω).
  CHECK(&s.learner() == &s.level<0>());
  CHECK(&s.relearner() == &w2);
  CHECK(&s.top() == &s.level<2>());
  CHECK(s.class_weights() == w2.learner.weighting().class_weights(w1, s.level<2>().theta));

  const auto big = test::toy_classes(300, 7), bigval = test::toy_classes(60, 8, 0.0, 1000);
  auto big_gen = std::make_shared<const bilevel::data::pca_gaussian_generator>(*big.data, 6, 1);
  auto run = bilevel::methods::lfm_class_weighting<P>(
      big.data, bigval.data, big_gen, {.widths = {8, 16, 3}, .batch = 20, .synthetic_per_batch = 10,
                                       .validation_batch = 30, .seed = 2});
  const auto vball = test::whole<P>(*bigval.data);
  const mlp<P> net({8, 16, 3});
  const double before = net.loss(run.level<1>().theta, {}, vball);
  run.run(300);
  const double after = net.loss(run.level<1>().theta, {}, vball);
  MESSAGE("LFM-CW W2 validation loss " << before << " -> " << after);
  CHECK(after < 0.7 * before);
  CHECK(P::all_finite(run.level<2>().theta));
}

TEST_CASE("LFM-CW on a ResNet: ω's hypergradient against central differences") {
  // W1, W2 and the validation loss are a CIFAR ResNet of one block per stage on the toy data's
  // 8 features as 2x4 images, with batch norms in training mode: smooth, and a ReLU kink
  // within a difference step is as unlikely as in the MLP, so the MLP's tolerance holds.
  const bilevel::learners::network_design resnet =
      bilevel::learners::resnet_options{.input = {2, 4, 1}, .classes = 3, .depth = 8, .width = 2};
  const auto train = test::toy_classes(60, 3), val = test::toy_classes(30, 4, 0.0, 1000);
  auto s = small_method(train, val, resnet);
  s.run(3);
  check_omega_hypergradient(s, bilevel::learners::build_network<P>(resnet), "ResNet");
  // The generator's samples must fit the network: 8 features against a 2x2 ResNet's 4.
  CHECK_THROWS_WITH_AS(
      small_method(train, val, bilevel::learners::resnet_options{.input = {2, 2, 1}, .classes = 3, .depth = 8, .width = 2}),
      doctest::Contains("lfm_class_weighting: the generator makes samples of 8 features, the network takes 4 (2x2x1)"),
      std::invalid_argument);
}
