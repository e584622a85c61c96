// SPDX-License-Identifier: MIT
// Learning from Mistakes, data-reweighting form: the mistake-driven weights' exact products
// in both inputs (W1 and [B | V | r]) against central differences, the three-level
// hypergradient against central differences of the method's own look-ahead objective, and a
// short run that lowers the validation loss.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <bilevel/eigen.hpp>
#include <bilevel/methods/learning_from_mistakes.hpp>

#include "support.hpp"
#include "toy_data.hpp"
#include "weighting_checks.hpp"

namespace {

using P = test::P64;
using bilevel::learners::make_batch;
using bilevel::learners::mlp;
using bilevel::learners::sequential;

const std::vector<std::size_t> widths = {8, 6, 3};
/// The method's settings for the hypergradient checks, on W1 and W2 of `network` (none: the MLP of `widths`).
bilevel::methods::lfm_reweighting_config small_config(std::optional<bilevel::learners::network_design> network = {}) {
  return {.widths = widths, .network = std::move(network), .batch = 10, .validation_batch = 15, .encoder_dim = 3,
          .references_per_class = 3, .seed = 4};
}

/// The top level's hypergradient against central differences of the method's own look-ahead
/// objective, F(top) = L_val(W2'(W1'(top), top)): W1's and W2's optimizer steps from their
/// current states on the batches they take next, then the validation loss of W2' by `net`
/// (the method's network, built afresh), on B of the batch, some of V and all of r.
template <class Solver>
void check_top_hypergradient(Solver& s, const sequential<P>& net, const std::string& what) {
  auto& w1 = s.template level<0>();
  auto& w2 = s.template level<1>();
  auto val_sampler = s.template level<2>().sampler;  // a copy: the batch the solver will draw
  const auto vb = val_sampler();
  const auto b1 = w1.peek_batch(), b2 = w2.peek_batch();
  CHECK(b1.ids == b2.ids);  // W1 and W2 see the same training batches
  const auto hg = s.hypergradient(2);
  CHECK_FALSE(hg.approximated);
  const auto exact = test::host<P>(hg.gradient);
  auto objective = [&](const std::vector<double>& top_host) {
    const P::vector top = test::device<P>(top_host);
    const P::vector* in1[] = {&top};
    P::vector theta1 = w1.theta, g;
    auto st1 = w1.state;
    w1.learner.gradient(theta1, in1, b1, g);
    w1.optimizer.step(theta1, st1, g);
    const P::vector* in2[] = {&theta1, &top};
    P::vector theta2 = w2.theta;
    auto st2 = w2.state;
    w2.learner.gradient(theta2, in2, b2, g);
    w2.optimizer.step(theta2, st2, g);
    return net.loss(theta2, {}, vb);
  };
  const auto top0 = test::host<P>(s.template level<2>().theta);
  const auto& mw = w2.learner.weighting();
  std::vector<std::size_t> which(b1.ids.begin(), b1.ids.end());  // B of this batch
  for (std::size_t k = 0; k < 6; ++k) which.push_back(mw.encoder_offset() + 5 * k);  // some of V
  for (std::size_t j = 0; j < mw.references(); ++j) which.push_back(mw.r_offset() + j);  // all of r
  std::vector<double> fd, picked;
  for (std::size_t k : which) {
    auto u = top0;
    u[k] = top0[k] + 1e-5;
    const double fp = objective(u);
    u[k] = top0[k] - 1e-5;
    fd.push_back((fp - objective(u)) / 2e-5);
    picked.push_back(exact[k]);
  }
  // As for the two-level methods: h = 1e-5 in double, O(h²) + O(ε/h) ≈ 1e-10 relative.
  MESSAGE("LFM hypergradient (" << what << ") vs central differences: " << test::relative_error(picked, fd));
  CHECK(test::relative_error(picked, fd) <= 1e-6);
}

}  // namespace

TEST_CASE("LFM mistake weights: VJP and JVP in both inputs are exact (adjoint identity, central differences)") {
  const auto train = test::toy_classes(12, 3, 0.3), refs = test::toy_classes(9, 4, 0.0, 500);
  const bilevel::learners::mistake_weighting<P> mw(widths, *refs.data, 20, 4);
  const auto b = test::whole<P>(*train.data);
  const mlp<P> w1net(widths);
  std::vector<std::vector<double>> point = {test::host<P>(w1net.initial_parameters(5)),
                                            test::host<P>(mw.initial_top(6))};
  // r away from 1 and B irrelevant; perturb r so every term matters.
  for (std::size_t j = 0; j < 9; ++j) point[1][mw.r_offset() + j] = 0.5 + 0.3 * double(j);
  const P::vector dummy_losses = P::zeros(12);
  const bilevel::learners::sample_signals<P> s{dummy_losses};
  test::check_weighting_products(mw, b, s, point, 0, test::random_vector(point[0].size(), 8, 1.0), 7);
  auto t = test::random_vector(point[1].size(), 9, 1.0);
  for (std::size_t k = 0; k < 20; ++k) t[k] = 0.0;  // B does not enter a
  test::check_weighting_products(mw, b, s, point, 1, t, 7);
  // ... and its part of the VJP is zero.
  const test::weighting_at<P, bilevel::learners::mistake_weighting<P>> at(mw, point);
  const auto vjp = test::host<P>(mw.scatter(at.in(), b, s, test::device<P>(test::random_vector(12, 7, 1.0)), 1));
  for (std::size_t k = 0; k < 20; ++k) CHECK(vjp[k] == 0.0);
}

TEST_CASE("LFM mistake weights: similarity_scale multiplies the starting similarities, and sharpens the weights") {
  const auto train = test::toy_classes(12, 3, 0.3), refs = test::toy_classes(9, 4, 0.0, 500);
  const bilevel::learners::mistake_weighting<P> mw(widths, *refs.data, 20, 4);
  const auto base = test::host<P>(mw.initial_top(6)), sharp = test::host<P>(mw.initial_top(6, 25.0));
  REQUIRE(base.size() == sharp.size());
  // B and r start at 1 whatever the scale; V's entries grow as √scale (the same draws), so
  // every similarity f_V(x)·f_V(x̃) = xᵀVᵀVx̃ grows as the scale.
  for (std::size_t k = 0; k < base.size(); ++k) {
    if (k >= mw.encoder_offset() && k < mw.r_offset())
      CHECK(sharp[k] == doctest::Approx(5.0 * base[k]).epsilon(1e-6));
    else
      CHECK(sharp[k] == base[k]);
  }
  // A sharper softmax moves the weights: they are not all the same as at scale 1.
  const auto b = test::whole<P>(*train.data);
  const mlp<P> w1net(widths);
  const P::vector dummy_losses = P::zeros(12);
  const bilevel::learners::sample_signals<P> s{dummy_losses};
  const auto w1 = w1net.initial_parameters(5);
  const P::vector t1 = mw.initial_top(6), t25 = mw.initial_top(6, 25.0);
  const P::vector* in1[] = {&w1, &t1};
  const P::vector* in25[] = {&w1, &t25};
  const auto a1 = test::host<P>(mw.gather(in1, b, s)), a25 = test::host<P>(mw.gather(in25, b, s));
  double moved = 0;
  for (std::size_t i = 0; i < a1.size(); ++i) moved = std::max(moved, std::abs(a25[i] - a1[i]));
  CHECK(moved > 1e-3);
  for (double bad : {0.0, -1.0, std::nan("")})
    CHECK_THROWS_WITH_AS(mw.initial_top(6, bad), doctest::Contains("similarity_scale must be finite and > 0"),
                         std::invalid_argument);
}

TEST_CASE("LFM: the top level's hypergradient through W2 and W1 against central differences") {
  const auto train = test::toy_classes(40, 3, 0.3), val = test::toy_classes(30, 4, 0.0, 1000);
  auto s = bilevel::methods::learning_from_mistakes_reweighting<P>(train.data, val.data, small_config());
  s.run(2);
  check_top_hypergradient(s, mlp<P>(widths), "MLP");
  auto& w1 = s.level<0>();
  auto& w2 = s.level<1>();
  const auto& mw = w2.learner.weighting();

  // The named levels are these levels, and sample_weights is W2's weighting on its inputs (W1, top).
  CHECK(&s.learner() == &w1);
  CHECK(&s.relearner() == &w2);
  CHECK(&s.model() == &w2);
  CHECK(&s.top() == &s.level<2>());
  const auto whole = test::whole<P>(*train.data);
  const auto out = w2.learner.forward(w2.theta, whole);
  const bilevel::learners::sample_signals<P> signals{out.losses, &out.logits, &out.features};
  const P::vector* in[] = {&w1.theta, &s.level<2>().theta};
  CHECK(s.sample_weights(*train.data) == test::host<P>(mw.gather(bilevel::input_list<P>(in), whole, signals)));
}

TEST_CASE("LFM on a ResNet: the top level's hypergradient against central differences") {
  // W1, W2 and the validation loss are the design's network: a CIFAR ResNet of one block per
  // stage on the toy data's 8 features as 2x4 images. Its batch norms run in training mode
  // (batch statistics, differentiated through): still smooth, and its few hundred ReLU inputs
  // meet a kink within a difference step with probability ~0, so the MLP's tolerance holds.
  const bilevel::learners::network_design resnet =
      bilevel::learners::resnet_options{.input = {2, 4, 1}, .classes = 3, .depth = 8, .width = 2};
  const auto train = test::toy_classes(40, 3, 0.3), val = test::toy_classes(30, 4, 0.0, 1000);
  auto s = bilevel::methods::learning_from_mistakes_reweighting<P>(train.data, val.data, small_config(resnet));
  s.run(2);
  check_top_hypergradient(s, bilevel::learners::build_network<P>(resnet), "ResNet");
}

TEST_CASE("LFM refuses a network with mixed operations, naming the architecture-search form") {
  using namespace bilevel::learners;
  const auto train = test::toy_classes(40, 3, 0.3), val = test::toy_classes(30, 4, 0.0, 1000);
  // One mixed operation over {tanh, skip}: two architecture entries.
  const network_design searched = layer_specs{
      {1, 1, 8},
      {layer::dense{6}, layer::mixed{{layer::candidate{{layer::act{activation::tanh}}}, layer::skip()}}, layer::dense{3}}};
  CHECK_THROWS_WITH_AS(bilevel::methods::learning_from_mistakes_reweighting<P>(train.data, val.data, small_config(searched)),
                       doctest::Contains("learning_from_mistakes_reweighting: the network has mixed operations (2 "
                                         "architecture entries) and no level here learns an architecture; search it "
                                         "with methods::lfm_architecture_search"),
                       std::invalid_argument);
}

TEST_CASE("LFM end to end: the re-learner's validation loss falls") {
  const auto train = test::toy_classes(300, 7, 0.3), val = test::toy_classes(60, 8, 0.0, 1000);
  auto s = bilevel::methods::learning_from_mistakes_reweighting<P>(
      train.data, val.data,
      {.widths = {8, 16, 3}, .batch = 20, .validation_batch = 30, .meta_lr = 1e-2, .encoder_dim = 4, .seed = 2});
  const auto vb = test::whole<P>(*val.data);
  const mlp<P> net({8, 16, 3});
  const double before = net.loss(s.level<1>().theta, {}, vb);
  s.run(300);
  const double after = net.loss(s.level<1>().theta, {}, vb);
  MESSAGE("LFM W2 validation loss " << before << " -> " << after);
  CHECK(after < 0.7 * before);
  CHECK(P::all_finite(s.level<2>().theta));
}
