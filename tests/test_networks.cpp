// SPDX-License-Identifier: MIT
// The papers' networks: CIFAR ResNets (options A and B), a wide ResNet, the DARTS supernet
// (a whole cell's every exact product, α included, on every policy) and the discrete
// networks of its genotypes; DARTS's hypergradient of α on the supernet against central
// differences of the outer objective.
#include <doctest/doctest.h>

#include <cmath>
#include <map>
#include <random>

#include <bilevel/core/solver.hpp>
#include <bilevel/hypergrad/finite_difference.hpp>
#include <bilevel/hypergrad/unrolled.hpp>
#include <bilevel/learners/architecture_loss.hpp>
#include <bilevel/learners/networks/network_design.hpp>
#include <bilevel/learners/shared_network.hpp>
#include <bilevel/methods/darts.hpp>
#include <bilevel/optim/adam.hpp>
#include <bilevel/optim/sgd.hpp>

#include "batches.hpp"
#include "derivative_checks.hpp"
#include "policies.hpp"

namespace {
using namespace bilevel::learners;

/// A DARTS space small enough for central differences over every parameter: 4x4 images,
/// three cells (reductions at cells 1 and 2: 4x4 → 2x2 → 1x1), two nodes per cell, one
/// channel (2 and 4 after the reductions); tanh where DARTS has ReLUs, since with a few thousand ReLU inputs one lies within
/// a difference step of its kink at almost any point (measured: errors of 1e-6 to O(1) that
/// move with the seed), which checks nothing about the derivatives.
darts_space_options tiny_space() {
  return {.input = {4, 4, 1},
          .classes = 3,
          .cells = 3,
          .channels = 1,
          .nodes = 2,
          .stem_multiplier = 1,
          .nonlinearity = activation::tanh};
}

std::vector<double> weights_near_one(std::size_t n, unsigned seed) {
  auto w = test::random_vector(n, seed, 0.5);
  for (auto& x : w) x += 1.0;
  return w;
}
}  // namespace

TEST_CASE_TEMPLATE("resnet: options A and B and a wide ResNet, every exact product", P,
                   BILEVEL_NETWORK_DOUBLE_POLICIES) {
  // ResNet-8 (one block a stage) at width 2 on 6x6 images: 6x6 → 3x3 → 2x2.
  for (auto shortcut : {resnet_shortcut::a_subsample_pad, resnet_shortcut::b_projection}) {
    CAPTURE(int(shortcut));
    const resnet_options o{.input = {6, 6, 1}, .classes = 3, .depth = 8, .width = 2, .shortcut = shortcut};
    const sequential<P, sample_weights> net(o.input, resnet<P>(o), loss_kind::cross_entropy, sample_weights{4});
    test::check_learner_derivatives(net, test::host<P>(net.initial_parameters(3)), {weights_near_one(4, 5)},
                                    test::random_batch<P>(4, 36, 3, 6), 1e-6);
  }
  const wide_resnet_options w{.input = {4, 4, 1}, .classes = 3, .depth = 10, .widen = 1, .width = 2, .dropout = 0.3};
  const sequential<P> wide(w.input, wide_resnet<P>(w));
  test::check_learner_derivatives(wide, test::host<P>(wide.initial_parameters(4)), {},
                                  test::random_batch<P>(4, 16, 3, 7), 1e-6);
}

TEST_CASE("resnet: ResNet-20 and ResNet-32 on 28x28x1 have He et al.'s parameter counts") {
  using P = test::P64;
  // Option A: 3x3 convolutions without bias, two affine batch norms a block, the classifier.
  auto count = [](std::size_t n) {
    std::size_t params = 9 * 1 * 16 + 2 * 16;  // stem
    std::size_t in = 16;
    for (std::size_t c : {16, 32, 64})
      for (std::size_t b = 0; b < n; ++b) {
        params += 9 * in * c + 9 * c * c + 4 * c;
        in = c;
      }
    return params + 64 * 10 + 10;
  };
  const auto r20 = resnet<P>({.depth = 20}), r32 = resnet<P>({.depth = 32});
  CHECK(sequential<P>({28, 28, 1}, r20).num_parameters() == count(3));
  CHECK(sequential<P>({28, 28, 1}, r32).num_parameters() == count(5));
  // The CIFAR-10 ResNet-20 and ResNet-32 count 269,722 and 464,154 on 3-channel images; one
  // input channel has 2 · 9 · 16 = 288 fewer stem weights.
  CHECK(count(3) == 269722 - 288);
  CHECK(count(5) == 464154 - 288);
  CHECK_THROWS_WITH_AS(resnet<P>({.depth = 21}), doctest::Contains("depth 21 is not 6n + 2"), std::invalid_argument);
  // One training step of ResNet-20 lowers the loss on its batch.
  const sequential<P> net({28, 28, 1}, r20);
  const auto b = test::random_batch<P>(4, 784, 10, 2);
  auto theta = net.initial_parameters(1);
  P::vector g;
  const double before = net.gradient(theta, {}, b, g);
  theta -= 1e-3 * g;
  CHECK(net.loss(theta, {}, b) < before);
}

TEST_CASE_TEMPLATE("darts supernet: a whole search network, every exact product, the architecture included", P,
                   BILEVEL_NETWORK_DOUBLE_POLICIES) {
  const auto o = tiny_space();
  const sequential<P, sample_weights> net(o.input, darts_supernet<P>(o), loss_kind::cross_entropy, sample_weights{6});
  CHECK(net.arch_size() == o.arch_size());
  CHECK(o.arch_size() == 2 * 5 * 8);
  MESSAGE("tiny supernet: " << net.num_parameters() << " parameters");
  test::check_learner_derivatives(net, test::host<P>(net.initial_parameters(2)),
                                  {weights_near_one(6, 3), test::random_vector(o.arch_size(), 4, 0.5)},
                                  test::random_batch<P>(6, 16, 3, 5), 1e-6);
}

TEST_CASE("networks: released adjoints give the same numbers, and a second-order product after any pass is right") {
  // keep_adjoints(false) releases the inner adjoints of chains, graphs and mixed operations;
  // an HVP or mixed product then re-runs the backward pass keeping them. The products must
  // equal those of a network that keeps them, bit for bit (the same operations in the same
  // order), in any order of calls at one point, including a mixed_jvp along the sample
  // weights, whose backward pass with other weights overwrites the inner adjoints.
  using P = test::P64;
  using net_t = sequential<P, sample_weights>;
  const auto o = tiny_space();
  auto make = [&](bool keep) {
    net_t net(o.input, darts_supernet<P>(o), loss_kind::cross_entropy, sample_weights{6});
    net.keep_adjoints(keep);
    return net;
  };
  const auto theta = make(true).initial_parameters(2);
  const P::vector w = test::device<P>(weights_near_one(6, 3)),
                  alpha = test::device<P>(test::random_vector(o.arch_size(), 4, 0.5));
  const P::vector* in[] = {&w, &alpha};
  const auto b = test::random_batch<P>(6, 16, 3, 5);
  const P::vector v = test::device<P>(test::random_vector(P::size(theta), 6)),
                  u_w = test::device<P>(test::random_vector(6, 7)),
                  u_a = test::device<P>(test::random_vector(o.arch_size(), 8));
  // Every product alone, each on a fresh network that keeps its adjoints.
  enum product { gradient, hvp, vjp_w, vjp_a, jvp_w, jvp_a };
  auto apply = [&](const net_t& net, product k) {
    P::vector out;
    switch (k) {
      case gradient: net.gradient(theta, in, b, out); break;
      case hvp: net.hvp(theta, in, b, v, out); break;
      case vjp_w: net.mixed_vjp(theta, in, b, 0, v, out); break;
      case vjp_a: net.mixed_vjp(theta, in, b, 1, v, out); break;
      case jvp_w: net.mixed_jvp(theta, in, b, 0, u_w, out); break;
      case jvp_a: net.mixed_jvp(theta, in, b, 1, u_a, out); break;
    }
    return test::host<P>(out);
  };
  std::vector<std::vector<double>> fresh;
  for (product k : {gradient, hvp, vjp_w, vjp_a, jvp_w, jvp_a}) fresh.push_back(apply(make(true), k));
  const std::vector<product> order = {gradient, hvp, jvp_w, hvp, vjp_a, gradient, jvp_a, jvp_w, vjp_a, vjp_w, hvp};
  for (bool keep : {true, false}) {
    CAPTURE(keep);
    const net_t net = make(keep);
    CHECK(net.keeps_adjoints() == keep);
    for (std::size_t i = 0; i < order.size(); ++i) {
      CAPTURE(i);
      CHECK(apply(net, order[i]) == fresh[order[i]]);
    }
  }
}

TEST_CASE("darts supernet: the CPU size on Fashion-MNIST's shape") {
  using P = test::P64;
  const darts_space_options o{};  // 28x28x1, 5 cells of 8 channels, 4 nodes
  CHECK(o.edges() == 14);
  CHECK(o.arch_size() == 224);
  CHECK(o.is_reduction(1));
  CHECK(o.is_reduction(3));
  const sequential<P> net(o.input, darts_supernet<P>(o));
  CHECK(net.arch_size() == 224);
  const P::vector alpha = P::zeros(224);
  const P::vector* in[] = {&alpha};
  const auto out = net.forward(net.initial_parameters(1), test::random_batch<P>(2, 784, 10, 1), in);
  CHECK(out.logits.rows() == 2);
  CHECK(out.logits.cols() == 10);
}

TEST_CASE("darts: derive_genotype keeps each node's two strongest edges by their strongest operation") {
  const darts_space_options o{.nodes = 2};  // 5 edges a cell: node 0 reads states 0, 1; node 1 reads 0, 1, 2
  std::vector<double> alpha(o.arch_size(), 0.0);
  auto set = [&](bool reduce, std::size_t edge, darts_primitive p, double v) {
    alpha[(reduce ? o.edges() : 0) * 8 + edge * 8 + std::size_t(p)] = v;
  };
  // node 0: edge 0 prefers sep_conv_3x3, edge 1 a huge `none` (ignored) and a weak max_pool
  set(false, 0, darts_primitive::sep_conv_3x3, 2.0);
  set(false, 1, darts_primitive::none, 9.0);
  set(false, 1, darts_primitive::max_pool_3x3, 0.5);
  // node 1: edges 2, 3, 4 from states 0, 1, 2: the strongest are state 2 (dil_conv_5x5) and 0 (skip)
  set(false, 2, darts_primitive::skip_connect, 1.5);
  set(false, 3, darts_primitive::avg_pool_3x3, 0.2);
  set(false, 4, darts_primitive::dil_conv_5x5, 3.0);
  set(true, 4, darts_primitive::sep_conv_5x5, 1.0);
  const auto g = derive_genotype(alpha, o);
  using dp = darts_primitive;
  // edge 1's softmax puts most mass on none, so its max_pool weight is small: edge 0 comes first
  const std::vector<std::pair<dp, std::size_t>> normal = {
      {dp::sep_conv_3x3, 0}, {dp::max_pool_3x3, 1}, {dp::dil_conv_5x5, 2}, {dp::skip_connect, 0}};
  CHECK(g.normal == normal);
  CHECK(g.normal_concat == std::vector<std::size_t>{2, 3});
  CHECK(g.reduce[2] == std::pair<dp, std::size_t>{dp::sep_conv_5x5, 2});
  CHECK(g.str().find("('sep_conv_3x3', 0)") != std::string::npos);
  CHECK_THROWS_WITH_AS(derive_genotype(std::vector<double>(3), o), doctest::Contains("α has 3 entries, the space has 80"),
                       std::invalid_argument);
}

TEST_CASE("darts: random genotypes are valid, uniform over operations and inputs, and round-trip through α") {
  const darts_space_options o{.nodes = 4};
  std::mt19937_64 gen(11);
  std::map<darts_primitive, std::size_t> ops;
  std::map<std::size_t, std::size_t> inputs_of_last;  // node 3 picks two of states 0..4
  constexpr std::size_t draws = 2000;
  for (std::size_t d = 0; d < draws; ++d) {
    const auto g = random_genotype(o, gen);
    REQUIRE(g.normal.size() == 8);
    REQUIRE(g.reduce.size() == 8);
    for (const auto* gene : {&g.normal, &g.reduce})
      for (std::size_t i = 0; i < 4; ++i) {
        const auto& [op_a, a] = (*gene)[2 * i];
        const auto& [op_b, b] = (*gene)[2 * i + 1];
        CHECK(a < b);  // two distinct states, listed in order
        CHECK(b < i + 2);
        CHECK(op_a != darts_primitive::none);
        CHECK(op_b != darts_primitive::none);
        ++ops[op_a], ++ops[op_b];
        if (i == 3 && gene == &g.normal) ++inputs_of_last[a], ++inputs_of_last[b];
      }
    if (d < 50) CHECK(derive_genotype(genotype_alpha(g, o), o) == g);  // α records the genotype exactly
  }
  // 7 operations over 2000 · 16 draws: each about 4571, binomial σ ≈ 63; 5 states for node 3,
  // each picked in 2/5 of 2000 draws, σ ≈ 22. Bounds at about 6σ.
  REQUIRE(ops.size() == 7);
  for (const auto& [op, count] : ops) CHECK(std::abs(double(count) - draws * 16 / 7.0) < 400);
  REQUIRE(inputs_of_last.size() == 5);
  for (const auto& [state, count] : inputs_of_last) CHECK(std::abs(double(count) - draws * 2 / 5.0) < 130);
  auto bad = random_genotype(o, gen);
  bad.normal[0].first = darts_primitive::none;
  CHECK_THROWS_WITH_AS(genotype_alpha(bad, o), doctest::Contains("the normal cell's node 0 reads state"),
                       std::invalid_argument);
}

TEST_CASE_TEMPLATE("darts network: the discrete network of a genotype, every exact product", P,
                   BILEVEL_NETWORK_DOUBLE_POLICIES) {
  const auto o = tiny_space();
  using dp = darts_primitive;
  // state 1 unread in the normal cell (its preprocessing gets a zero gradient)
  const darts_genotype g{{{dp::sep_conv_3x3, 0}, {dp::dil_conv_3x3, 0}, {dp::skip_connect, 2}, {dp::avg_pool_3x3, 0}},
                         {{dp::max_pool_3x3, 0}, {dp::skip_connect, 1}, {dp::sep_conv_5x5, 2}, {dp::none, 1}},
                         {2, 3},
                         {2, 3}};
  const sequential<P> net(o.input, darts_network<P>(g, o));
  CHECK(net.arch_size() == 0);
  test::check_learner_derivatives(net, test::host<P>(net.initial_parameters(6)), {}, test::random_batch<P>(3, 16, 3, 8),
                                  1e-6);
  auto bad = g;
  bad.normal[0].second = 2;  // node 0 cannot read node 0
  CHECK_THROWS_WITH_AS(darts_network<P>(bad, o), doctest::Contains("reads state 2, node 0 can read states 0-1"),
                       std::invalid_argument);
}

TEST_CASE("darts supernet through the solver: α's hypergradient, finite differences and exact, against the outer "
          "objective") {
  using P = test::P64;
  const auto o = tiny_space();
  using net_t = sequential<P>;
  const net_t net(o.input, darts_supernet<P>(o));
  const auto train = test::random_batch<P>(4, 16, 3, 7), val = test::random_batch<P>(4, 16, 3, 8);
  const auto w0 = net.initial_parameters(9);
  const auto alpha0 = test::random_vector(o.arch_size(), 10, 0.3);
  const double lr = 0.1;
  auto solve = [&](auto strategy) {
    auto weights = bilevel::make_level("weights", net, bilevel::optim::sgd<P>{.lr = lr, .momentum = 0.9, .weight_decay = 3e-4},
                                       strategy, w0, [&] { return train; })
                       .reading({1});
    auto arch = bilevel::make_level("alpha", architecture_loss<net_t>(net), bilevel::optim::adam<P>{.lr = 3e-4},
                                    bilevel::hypergrad::first_order{}, test::device<P>(alpha0), [&] { return val; })
                    .reading({0});
    bilevel::solver s(std::move(weights), std::move(arch));
    return test::host<P>(s.hypergradient(1).gradient);
  };
  const auto fd = solve(bilevel::hypergrad::finite_difference{});
  const auto exact = solve(bilevel::hypergrad::lookahead{.steps = 1});
  auto objective = [&](const std::vector<double>& a) {  // F(α) = L_val(w − η(∇L_tr + wd·w), α)
    const P::vector av = test::device<P>(a);
    const P::vector* in[] = {&av};
    P::vector g;
    net.gradient(w0, in, train, g);
    const P::vector w1 = w0 - lr * (g + 3e-4 * w0);
    return net.loss(w1, in, val);
  };
  const auto reference = test::central_gradient(objective, alpha0, 1e-5);
  // As the chain test (test_mixed_ops.cpp): h = 1e-5 differences ≲ 1e-9 relative, the DARTS
  // strategy's own differences O(s²) ≈ 1e-8.
  CHECK(test::relative_error(exact, reference) <= 1e-6);
  CHECK(test::relative_error(fd, exact) <= 1e-6);
}

TEST_CASE("darts supernet: the levels share one network, and a run equals one with a copy per level") {
  // The cache is keyed on contents, so sharing changes only memory: three iterations of
  // second-order DARTS (α first, on the weights' next batch) on the supernet, whose batch
  // norms keep running statistics; weights, α and the statistics bit for bit equal to those
  // of two copies (the same passes in the same order).
  using P = test::P64;
  using net_t = sequential<P>;
  const auto o = tiny_space();
  const auto train = test::random_batch<P>(4, 16, 3, 7), val = test::random_batch<P>(4, 16, 3, 8);
  const P::vector alpha0 = test::device<P>(test::random_vector(o.arch_size(), 10, 0.3));
  auto run = [&](bool shared) {
    net_t net(o.input, darts_supernet<P>(o));
    const auto w0 = net.initial_parameters(9);
    const bilevel::optim::sgd<P> sgd{.lr = 0.1, .momentum = 0.9, .weight_decay = 3e-4};
    const bilevel::optim::adam<P> adam{.lr = 3e-2};
    const bilevel::hypergrad::finite_difference fd{.on_next_batch = true};
    auto go = [&](auto weights_learner, auto arch_learner) {
      bilevel::solver s(bilevel::make_level("weights", std::move(weights_learner), sgd, fd, w0, [&] { return train; })
                            .reading({1}),
                        bilevel::make_level("alpha", std::move(arch_learner), adam, bilevel::hypergrad::first_order{},
                                            alpha0, [&] { return val; })
                            .reading({0}));
      s.schedule({1, 0});
      for (int k = 0; k < 3; ++k) s.iterate();
      auto out = test::host<P>(s.template level<0>().theta);
      for (const std::vector<double>& part : {test::host<P>(s.template level<1>().theta), s.template level<0>().learner.state()})
        out.insert(out.end(), part.begin(), part.end());
      auto network_of = [](const auto& l) -> const net_t& {
        if constexpr (requires { l.network(); }) return l.network();
        else return l;
      };
      const bool one_network = &network_of(s.template level<1>().learner) == &network_of(s.template level<0>().learner);
      CHECK(one_network == shared);
      return out;
    };
    if (!shared) return go(net, architecture_loss<net_t>(net));
    shared_network<net_t> one(std::move(net));
    return go(one, architecture_loss<net_t>(one));
  };
  const auto apart = run(false), together = run(true);
  REQUIRE(together.size() == apart.size());
  CHECK(together == apart);

  // methods::darts builds both levels on one network.
  bilevel::data::dataset d;
  d.rows = 8, d.cols = 16, d.num_classes = 3;
  const auto x = test::random_vector(8 * 16, 5);
  d.features.assign(x.begin(), x.end());
  for (std::size_t i = 0; i < 8; ++i) d.labels.push_back(i % 3), d.ids.push_back(i);
  auto data = std::make_shared<const bilevel::data::dataset>(d);
  auto s = bilevel::methods::darts<P>(darts_supernet_design{o}, data, data, {.batch = 4, .validation_batch = 4});
  CHECK(&s.architecture().learner.network() == &s.weights().learner.network());
}

TEST_CASE("network designs: one description, any policy and weighting") {
  using P = test::P64;
  const network_design d = resnet_options{.input = {6, 6, 1}, .classes = 3, .depth = 8, .width = 2};
  CHECK(input_of(d) == geometry{6, 6, 1});
  const auto plain = build_network<P>(d);
  const auto weighted = build_network<P, sample_weights>(d, sample_weights{5});
  CHECK(plain.num_parameters() == weighted.num_parameters());
  CHECK(weighted.num_inputs() == 1);
  const network_design s = darts_supernet_design{tiny_space()};
  CHECK(build_network<P>(s).arch_size() == tiny_space().arch_size());
}
