// SPDX-License-Identifier: MIT
// The data-reweighting methods (methods/*.hpp) as the solver runs them: each hypergradient
// against central differences of the method's own outer objective, and short end-to-end runs
// on noisy toy data that lower the validation loss and turn down the corrupted samples.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include <bilevel/eigen.hpp>
#include <bilevel/data/corruption.hpp>
#include <bilevel/methods/deep_interactions.hpp>
#include <bilevel/methods/l2rw.hpp>
#include <bilevel/methods/meta_class_weighting.hpp>
#include <bilevel/methods/meta_weight_net.hpp>

#include "support.hpp"
#include "toy_data.hpp"

namespace {

using P = test::P64;
using bilevel::learners::make_batch;
using bilevel::learners::mlp;
using bilevel::learners::sequential;

const std::vector<std::size_t> widths = {8, 6, 3};

/// F(u) = L_val(θ'(u)): the validation loss by `net` (the classifier's network, built afresh)
/// after the classifier's optimizer step from its current state on batch b, with its upper
/// input set to u. What a look-ahead hypergradient differentiates.
template <class Level>
double step_objective(const Level& low, P::vector theta, bilevel::optimizer_state<P> state,
                      const std::vector<double>& u, const bilevel::learners::classification_batch<P>& b,
                      const bilevel::learners::classification_batch<P>& vb, const sequential<P>& net = mlp<P>(widths)) {
  const P::vector upper = test::device<P>(u);
  const P::vector* in[] = {&upper};
  P::vector g;
  low.learner.gradient(theta, in, b, g);
  low.optimizer.step(theta, state, g);
  return net.loss(theta, {}, vb);
}
template <class Solver>
double lookahead_objective(Solver& s, const std::vector<double>& u, const bilevel::learners::classification_batch<P>& b,
                           const bilevel::learners::classification_batch<P>& vb, const sequential<P>& net) {
  const auto& low = s.template level<0>();
  return step_objective(low, low.theta, low.state, u, b, vb, net);
}

/// The solver's hypergradient of level 1 and central differences of the look-ahead objective
/// on the same two batches, over the coordinates `which` of level 1's variable; `net` is the
/// classifier's network (the MLP of `widths` unless given).
template <class Solver>
void check_lookahead_hypergradient(Solver& s, const std::vector<std::size_t>& which, double tolerance,
                                   const sequential<P>& net = mlp<P>(widths)) {
  auto val_sampler = s.template level<1>().sampler;  // a copy: the batch the solver will draw
  const auto vb = val_sampler();
  const auto b = s.template level<0>().peek_batch();
  const auto hg = s.hypergradient(1);
  const auto exact = test::host<P>(hg.gradient);
  const auto u0 = test::host<P>(s.template level<1>().theta);
  std::vector<double> fd, picked;
  for (std::size_t k : which) {
    auto u = u0;
    const double h = 1e-5;
    u[k] = u0[k] + h;
    const double fp = lookahead_objective(s, u, b, vb, net);
    u[k] = u0[k] - h;
    const double fm = lookahead_objective(s, u, b, vb, net);
    fd.push_back((fp - fm) / (2 * h));
    picked.push_back(exact[k]);
  }
  MESSAGE("hypergradient vs central differences: relative error " << test::relative_error(picked, fd));
  CHECK(test::relative_error(picked, fd) <= tolerance);
}

}  // namespace

TEST_CASE("L2RW: the weights' hypergradient is the derivative of the look-ahead validation loss") {
  const auto train = test::toy_classes(60, 3, 0.3), val = test::toy_classes(20, 4, 0.0, 1000);
  auto s = bilevel::methods::l2rw<P>(train.data, val.data,
                                     {.widths = widths, .batch = 10, .validation_batch = 20, .seed = 5});
  s.run(3);
  const auto b = s.level<0>().peek_batch();
  std::vector<std::size_t> which(b.ids.begin(), b.ids.end());
  which.push_back(59);  // and entries outside the batch, whose derivative is 0
  // Central differences with h = 1e-5 in double: truncation O(h²) ≈ 1e-10 relative,
  // round-off ≈ 1e-16 / 1e-5 = 1e-11; 1e-6 leaves room for ill-conditioned coordinates.
  check_lookahead_hypergradient(s, which, 1e-6);
}

TEST_CASE("L2RW: weights are the normalised positive part of −g, zero elsewhere") {
  const auto train = test::toy_classes(60, 3, 0.3), val = test::toy_classes(20, 4, 0.0, 1000);
  auto s = bilevel::methods::l2rw<P>(train.data, val.data,
                                     {.widths = widths, .batch = 10, .validation_batch = 20, .seed = 5});
  s.run(2);
  auto val_sampler = s.level<1>().sampler;
  auto copy = s;  // the same solver state: its hypergradient is what the next step applies
  const auto g = test::host<P>(copy.hypergradient(1).gradient);
  s.step_level(1);
  const auto w = test::host<P>(s.level<1>().theta);
  double positive = 0;
  for (double x : g) positive += std::max(-x, 0.0);
  REQUIRE(positive > 0);
  for (std::size_t i = 0; i < w.size(); ++i) CHECK(w[i] == doctest::Approx(10.0 * std::max(-g[i], 0.0) / positive));
  CHECK(std::accumulate(w.begin(), w.end(), 0.0) == doctest::Approx(10.0));
}

TEST_CASE("L2RW end to end: validation loss falls and flipped labels get less weight") {
  const auto train = test::toy_classes(300, 7, 0.3), val = test::toy_classes(60, 8, 0.0, 1000);
  auto s = bilevel::methods::l2rw<P>(train.data, val.data,
                                     {.widths = {8, 16, 3}, .batch = 20, .validation_batch = 30, .lr = 0.1, .seed = 2});
  const auto vb = test::whole<P>(*val.data);
  const mlp<P> net({8, 16, 3});
  const double before = net.loss(s.level<0>().theta, {}, vb);
  double w_clean = 0, w_corrupt = 0;
  std::size_t n_clean = 0, n_corrupt = 0;
  s.run(300, {.on_step = [&](const bilevel::step_event& e) {
    if (e.level != 1 || e.iteration < 75) return;  // weights from the 6th epoch on
    const auto w = P::to_host(s.level<1>().theta);
    for (std::size_t id : s.level<0>().peek_batch().ids) {
      if (train.corrupted[id]) w_corrupt += w[id], ++n_corrupt;
      else w_clean += w[id], ++n_clean;
    }
  }});
  const double after = net.loss(s.level<0>().theta, {}, vb);
  w_clean /= double(n_clean);
  w_corrupt /= double(n_corrupt);
  MESSAGE("L2RW validation loss " << before << " -> " << after << "; mean weight clean " << w_clean << ", flipped "
                                  << w_corrupt);
  CHECK(after < 0.7 * before);
  // Directional, as the method promises: flipped samples' gradients tend to oppose the clean
  // validation gradient, so they get less weight on average (seen: 0.71 vs 1.13).
  CHECK(w_corrupt < w_clean);
}

TEST_CASE("Meta-Weight-Net: the weighting net's hypergradient against central differences") {
  const auto train = test::toy_classes(60, 3, 0.3), val = test::toy_classes(20, 4, 0.0, 1000);
  auto s = bilevel::methods::meta_weight_net<P>(train.data, val.data,
                                                {.widths = widths, .batch = 10, .validation_batch = 20, .hidden = 5, .seed = 5});
  s.run(3);
  std::vector<std::size_t> all(16);
  std::iota(all.begin(), all.end(), std::size_t(0));
  // As for L2RW; the ReLU kinks of V are met with probability ~0 at h = 1e-5.
  check_lookahead_hypergradient(s, all, 1e-6);
}

TEST_CASE("Meta-Weight-Net, Betty's schedule: the hypergradient through the real step against central differences") {
  using bilevel::methods::mwn_schedule;
  const auto train = test::toy_classes(60, 3, 0.3), val = test::toy_classes(20, 4, 0.0, 1000);
  auto s = bilevel::methods::meta_weight_net<P, mwn_schedule::real_step_first>(
      train.data, val.data, {.widths = widths, .batch = 10, .validation_batch = 20, .hidden = 5, .seed = 5});
  s.run(3);
  // The classifier's real step from (θ, state) on batch b with V's current Θ, then Θ's
  // hypergradient: the derivative of L_val(step(θ, state; Θ)) on the validation batch it draws.
  const auto& low = s.level<0>();
  const P::vector theta = low.theta;
  const auto state = low.state;
  const auto b = s.level<0>().peek_batch();
  auto val_sampler = s.level<1>().sampler;
  const auto vb = val_sampler();
  const auto u0 = test::host<P>(s.level<1>().theta);
  s.step_level(0);
  const auto hg = s.hypergradient(1);
  CHECK_FALSE(hg.approximated);
  const auto exact = test::host<P>(hg.gradient);
  std::vector<double> fd(u0.size());
  for (std::size_t k = 0; k < u0.size(); ++k) {
    auto u = u0;
    const double h = 1e-5;
    u[k] = u0[k] + h;
    const double fp = step_objective(low, theta, state, u, b, vb);
    u[k] = u0[k] - h;
    fd[k] = (fp - step_objective(low, theta, state, u, b, vb)) / (2 * h);
  }
  MESSAGE("real-step hypergradient vs central differences: relative error " << test::relative_error(exact, fd));
  CHECK(test::relative_error(exact, fd) <= 1e-6);  // as for the virtual-step form above
  // And it trains: the classifier's validation loss falls over a short run.
  const auto vall = test::whole<P>(*val.data);
  const double before = mlp<P>(widths).loss(s.level<0>().theta, {}, vall);
  s.run(100);
  CHECK(mlp<P>(widths).loss(s.level<0>().theta, {}, vall) < before);
}

TEST_CASE("Meta-Weight-Net end to end: validation loss falls, flipped labels get less weight") {
  const auto train = test::toy_classes(300, 7, 0.3), val = test::toy_classes(60, 8, 0.0, 1000);
  auto s = bilevel::methods::meta_weight_net<P>(
      train.data, val.data, {.widths = {8, 16, 3}, .batch = 20, .validation_batch = 30, .lr = 0.1, .meta_lr = 1e-2,
                             .hidden = 10, .seed = 2});
  const auto vb = test::whole<P>(*val.data), tb = test::whole<P>(*train.data);
  const mlp<P> net({8, 16, 3});
  const double before = net.loss(s.level<0>().theta, {}, vb);
  s.run(300);
  const double after = net.loss(s.level<0>().theta, {}, vb);
  const auto losses = P::to_host(net.forward(s.level<0>().theta, tb).losses);
  const auto vp = test::host<P>(s.level<1>().theta);
  const bilevel::learners::loss_weighting_net v{10};
  double w_clean = 0, w_corrupt = 0;
  std::size_t n_clean = 0, n_corrupt = 0;
  for (std::size_t i = 0; i < losses.size(); ++i) {
    const double w = v.weight(vp, losses[i]);
    if (train.corrupted[i]) w_corrupt += w, ++n_corrupt;
    else w_clean += w, ++n_clean;
  }
  w_clean /= double(n_clean);
  w_corrupt /= double(n_corrupt);
  MESSAGE("MWN validation loss " << before << " -> " << after << "; mean weight clean " << w_clean << ", flipped "
                                 << w_corrupt);
  CHECK(after < 0.7 * before);
  CHECK(w_corrupt < w_clean);
}

TEST_CASE("learned class weights: the logits' hypergradient against central differences") {
  const auto train = test::toy_classes(60, 3, 0.3), val = test::toy_classes(20, 4, 0.0, 1000);
  auto s = bilevel::methods::meta_class_weighting<P>(
      train.data, val.data, {.widths = widths, .batch = 10, .validation_batch = 20, .meta_lr = 0.1, .seed = 5});
  s.run(3);  // away from φ = 0, where every weight is 1
  const auto c = s.class_weights();
  REQUIRE(c.size() == 3);
  CHECK(c[0] + c[1] + c[2] == doctest::Approx(3.0).epsilon(1e-12));  // mean 1 over the classes
  CHECK(std::abs(c[0] - c[1]) + std::abs(c[1] - c[2]) > 1e-3);        // and they have moved
  // The loss is smooth in φ (softmax, then a weighted smooth loss): as for Meta-Weight-Net.
  check_lookahead_hypergradient(s, {0, 1, 2}, 1e-6);
}

TEST_CASE("learned class weights end to end: a rare class gains weight, validation loss falls") {
  // The toy classes cut to a long tail of 16:1, validated on balanced clean data: the rare
  // class's weight must rise above the common one's, as n_k^(−1) would set it.
  const auto full = test::toy_classes(900, 7, 0.0);
  const auto train = std::make_shared<const bilevel::data::dataset>(bilevel::data::long_tail(*full.data, 16.0, 3));
  const auto counts = train->class_counts();
  const auto val = test::toy_classes(150, 8, 0.0, 5000);
  auto s = bilevel::methods::meta_class_weighting<P>(
      train, val.data, {.widths = {8, 16, 3}, .batch = 20, .validation_batch = 50, .lr = 0.1, .meta_lr = 0.05, .seed = 2});
  const auto vb = test::whole<P>(*val.data);
  const mlp<P> net({8, 16, 3});
  const double before = net.loss(s.level<0>().theta, {}, vb);
  s.run(300);
  const double after = net.loss(s.level<0>().theta, {}, vb);
  const auto c = s.class_weights();
  const auto rare = std::size_t(std::min_element(counts.begin(), counts.end()) - counts.begin());
  const auto common = std::size_t(std::max_element(counts.begin(), counts.end()) - counts.begin());
  MESSAGE("class counts " << counts[0] << "/" << counts[1] << "/" << counts[2] << ", learned weights " << c[0] << "/"
                          << c[1] << "/" << c[2] << "; validation loss " << before << " -> " << after);
  CHECK(after < 0.7 * before);
  CHECK(c[rare] > c[common]);
}

TEST_CASE("learned class weights: bad input is named") {
  const auto train = test::toy_classes(30, 3, 0.0), val = test::toy_classes(10, 4, 0.0, 1000);
  CHECK_THROWS_WITH_AS(bilevel::methods::meta_class_weighting<P>(nullptr, val.data, {.widths = widths}),
                       doctest::Contains("meta_class_weighting: no training set"), std::invalid_argument);
  const bilevel::learners::softmax_class_weights c{3};
  CHECK_THROWS_WITH_AS(c.weights(std::vector<double>{0.0, 1.0}), doctest::Contains("2 logits for 3 classes"),
                       std::invalid_argument);
  const auto w = c.weights(std::vector<double>{0.0, std::log(2.0), std::log(3.0)});  // 3 · (1, 2, 3) / 6
  CHECK(w[0] == doctest::Approx(0.5).epsilon(1e-14));
  CHECK(w[2] == doctest::Approx(1.5).epsilon(1e-14));
}

TEST_CASE("teacher (deep interactions): exact products of the teacher against central differences") {
  // The Weighting's scatter and gather_tangent are the VJP and JVP of gather in φ.
  const auto train = test::toy_classes(12, 3, 0.3);
  const auto b = test::whole<P>(*train.data);
  const mlp<P> student({8, 6, 3});
  const auto out = student.forward(student.initial_parameters(4), b);
  const bilevel::learners::sample_signals<P> s{out.losses, &out.logits, &out.features};
  const bilevel::learners::teacher_weighting_net teacher{6, 3, 7};
  const auto phi = test::host<P>(teacher.initial_parameters<P>(9));
  auto c_at = [&](const std::vector<double>& p) {
    const P::vector v = test::device<P>(p);
    const P::vector* in[] = {&v};
    return test::host<P>(teacher.gather(bilevel::input_list<P>(in), b, s));
  };
  const auto r = test::random_vector(12, 5, 1.0), u = test::random_vector(phi.size(), 6, 1.0);
  const P::vector phi_d = test::device<P>(phi);
  const P::vector* in[] = {&phi_d};
  const auto vjp = test::host<P>(teacher.scatter(bilevel::input_list<P>(in), b, s, test::device<P>(r)));
  const auto jvp = test::host<P>(teacher.gather_tangent(bilevel::input_list<P>(in), b, s, test::device<P>(u)));
  // ⟨r, J u⟩ = ⟨Jᵀ r, u⟩ exactly, and J u by central differences (h = 1e-6: O(h²) ≈ 1e-12).
  double lhs = 0, rhs = 0;
  for (std::size_t i = 0; i < r.size(); ++i) lhs += r[i] * jvp[i];
  for (std::size_t k = 0; k < u.size(); ++k) rhs += vjp[k] * u[k];
  CHECK(lhs == doctest::Approx(rhs).epsilon(1e-12));
  std::vector<double> plus = phi, minus = phi;
  for (std::size_t k = 0; k < phi.size(); ++k) plus[k] += 1e-6 * u[k], minus[k] -= 1e-6 * u[k];
  const auto cp = c_at(plus), cm = c_at(minus);
  std::vector<double> fd(cp.size());
  for (std::size_t i = 0; i < fd.size(); ++i) fd[i] = (cp[i] - cm[i]) / 2e-6;
  CHECK(test::relative_error(jvp, fd) <= 1e-7);
}

namespace {
/// The teacher's hypergradient after three outer iterations on the toy data, with the student
/// of `cfg` (whose batch, hidden width and seed are set here), against central differences.
void check_teacher_hypergradient(bilevel::methods::deep_interactions_config cfg, const sequential<P>& student) {
  const auto train = test::toy_classes(60, 3, 0.3), val = test::toy_classes(20, 4, 0.0, 1000);
  cfg.batch = 10;
  cfg.validation_batch = 20;
  cfg.hidden = 4;
  cfg.seed = 5;
  auto s = bilevel::methods::deep_interactions<P>(train.data, val.data, cfg);
  s.run(3);
  std::vector<std::size_t> coords(s.level<1>().theta.size());
  std::iota(coords.begin(), coords.end(), std::size_t(0));
  check_lookahead_hypergradient(s, coords, 1e-6, student);
}
}  // namespace

TEST_CASE("teacher (deep interactions): its hypergradient against central differences, and an end-to-end run") {
  check_teacher_hypergradient({.widths = widths}, mlp<P>(widths));

  const auto big = test::toy_classes(300, 7, 0.3), bigval = test::toy_classes(60, 8, 0.0, 1000);
  auto run = bilevel::methods::deep_interactions<P>(
      big.data, bigval.data, {.widths = {8, 16, 3}, .batch = 20, .validation_batch = 30, .lr = 0.1, .meta_lr = 1e-2,
                              .hidden = 10, .seed = 2});
  const auto vb = test::whole<P>(*bigval.data);
  const mlp<P> net({8, 16, 3});
  const double before = net.loss(run.level<0>().theta, {}, vb);
  run.run(300);
  const double after = net.loss(run.level<0>().theta, {}, vb);
  MESSAGE("teacher validation loss " << before << " -> " << after);
  CHECK(after < 0.7 * before);
}

TEST_CASE("teacher (deep interactions) on a ResNet student: its hypergradient against central differences") {
  // The teacher reads the features after the ResNet's global pooling (4·width = 8 channels,
  // one vector per sample). Batch norms in training mode are smooth and a ReLU kink within a
  // difference step is as unlikely as in the MLP, so the MLP's tolerance holds.
  const bilevel::learners::network_design resnet =
      bilevel::learners::resnet_options{.input = {2, 4, 1}, .classes = 3, .depth = 8, .width = 2};
  const auto net = bilevel::learners::build_network<P>(resnet);
  check_teacher_hypergradient({.network = resnet}, net);
  CHECK(net.feature_shape() == bilevel::learners::geometry{1, 1, 8});
  CHECK(mlp<P>(widths).feature_shape() == bilevel::learners::geometry{1, 1, 6});
}

TEST_CASE("teacher (deep interactions): a student whose last layer reads images, or no hidden layer, is refused") {
  using namespace bilevel::learners;
  const auto train = test::toy_classes(60, 3, 0.3), val = test::toy_classes(20, 4, 0.0, 1000);
  // The toy data's 8 features as 2x2 images of 2 channels: a 1x1 convolution, then a 2x2 one
  // that covers the image. The last layer's input is 2x2x2: four feature vectors per sample.
  const layer_specs convs{{2, 2, 2}, {layer::conv{2, 1}, layer::act{activation::tanh}, layer::conv{3, 2}}};
  CHECK(build_network<P>(convs).feature_shape() == geometry{2, 2, 2});
  CHECK_THROWS_WITH_AS(bilevel::methods::deep_interactions<P>(train.data, val.data, {.network = convs}),
                       doctest::Contains("deep_interactions: the teacher reads one feature vector per sample at the "
                                         "input of the student's last layer, which takes 2x2x2 images"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(bilevel::methods::deep_interactions<P>(train.data, val.data, {.widths = {8, 3}}),
                       doctest::Contains("deep_interactions: the student needs a hidden layer"), std::invalid_argument);
}

TEST_CASE("Meta-Weight-Net and L2RW refuse a network with mixed operations, naming the search methods") {
  using namespace bilevel::learners;
  const auto train = test::toy_classes(200, 3, 0.3), val = test::toy_classes(20, 4, 0.0, 1000);  // ≥ one default batch
  // One mixed operation over {tanh, skip}: two architecture entries that no level would learn.
  const network_design searched = layer_specs{
      {1, 1, 8},
      {layer::dense{6}, layer::mixed{{layer::candidate{{layer::act{activation::tanh}}}, layer::skip()}}, layer::dense{3}}};
  const char* refusal = "the network has mixed operations (2 architecture entries) and no level here learns an "
                        "architecture; search it with methods::darts or methods::lfm_architecture_search";
  CHECK_THROWS_WITH_AS(bilevel::methods::meta_weight_net<P>(train.data, val.data, {.network = searched}),
                       doctest::Contains(refusal), std::invalid_argument);
  CHECK_THROWS_WITH_AS(bilevel::methods::l2rw<P>(train.data, val.data, {.network = searched}),
                       doctest::Contains(refusal), std::invalid_argument);
}

TEST_CASE("method results: the named levels are the solver's levels") {
  const auto train = test::toy_classes(60, 3, 0.3), val = test::toy_classes(20, 4, 0.0, 1000);
  auto mwn = bilevel::methods::meta_weight_net<P>(train.data, val.data,
                                                  {.widths = widths, .batch = 10, .validation_batch = 20, .hidden = 5});
  const auto& const_mwn = mwn;
  CHECK(&mwn.classifier() == &mwn.level<0>());
  CHECK(&mwn.model() == &mwn.level<0>());
  CHECK(&mwn.weighting_net() == &mwn.level<1>());
  CHECK(&const_mwn.classifier() == &mwn.level<0>());
  CHECK(&const_mwn.weighting_net() == &mwn.level<1>());
  CHECK(mwn.classifier().name == "classifier");
  auto teacher = bilevel::methods::deep_interactions<P>(
      train.data, val.data, {.widths = widths, .batch = 10, .validation_batch = 20, .hidden = 4});
  CHECK(&teacher.student() == &teacher.level<0>());
  CHECK(&teacher.classifier() == &teacher.level<0>());
  CHECK(&teacher.teacher() == &teacher.level<1>());
  CHECK(&teacher.weighting_net() == &teacher.level<1>());
  auto l2rw = bilevel::methods::l2rw<P>(train.data, val.data, {.widths = widths, .batch = 10, .validation_batch = 20});
  CHECK(&l2rw.classifier() == &l2rw.level<0>());
  CHECK(&l2rw.model() == &l2rw.level<0>());
  CHECK(&l2rw.example_weights() == &l2rw.level<1>());
  // Still the solver: it runs, and the handles follow the levels it steps.
  l2rw.run(2);
  CHECK(l2rw.iteration() == 2);
  CHECK(l2rw.classifier().state.step == 2);
  // L2RW's sample weights are its table read at each row's id.
  const auto w = l2rw.sample_weights(*train.data);
  const auto table = test::host<P>(l2rw.example_weights().theta);
  REQUIRE(w.size() == train.data->rows);
  for (std::size_t r = 0; r < w.size(); ++r) CHECK(w[r] == table[train.data->ids[r]]);
}

TEST_CASE("method configs: each learning rate is stated once, its decay relative to it and to `epochs`") {
  using bilevel::optim::cosine_decay;
  using bilevel::optim::multistep_decay;
  const auto train = test::toy_classes(60, 3, 0.3), val = test::toy_classes(20, 4, 0.0, 1000);
  // 60 rows in batches of 10: 6 iterations an epoch, 12 in the 2 epochs; milestones at half
  // and three quarters of training: steps 6 and 9.
  auto s = bilevel::methods::meta_weight_net<P>(
      train.data, val.data,
      {.widths = widths, .batch = 10, .validation_batch = 20, .epochs = 2, .lr = 0.2,
       .lr_decay = multistep_decay{.at = {0.5, 0.75}}, .meta_lr = 1e-2, .meta_lr_decay = cosine_decay{.lr_min = 1e-4},
       .hidden = 5});
  CHECK(s.iterations_per_epoch() == 6);
  CHECK(s.total_iterations() == 12);
  const auto& sgd = s.classifier().optimizer;
  CHECK(sgd.lr == 0.2);
  CHECK(sgd.lr_at(0) == 0.2);
  CHECK(sgd.lr_at(5) == 0.2);
  CHECK(sgd.lr_at(6) == doctest::Approx(0.02));
  CHECK(sgd.lr_at(8) == doctest::Approx(0.02));
  CHECK(sgd.lr_at(9) == doctest::Approx(0.002));
  const auto& adam = s.weighting_net().optimizer;
  CHECK(adam.lr_at(0) == 1e-2);
  CHECK(adam.lr_at(6) == doctest::Approx(0.5 * (1e-2 + 1e-4)));
  CHECK(adam.lr_at(12) == 1e-4);
  // The default is the constant rate: no schedule, the optimizer's lr is the config's.
  auto plain = bilevel::methods::meta_weight_net<P>(
      train.data, val.data, {.widths = widths, .batch = 10, .validation_batch = 20, .lr = 0.3, .hidden = 5});
  CHECK_FALSE(plain.classifier().optimizer.schedule);
  CHECK(plain.classifier().optimizer.lr_at(100) == 0.3);
  CHECK(plain.total_iterations() == 0);
  // A decay needs the length of training; fractions outside (0, 1] and lr_min above lr are refused.
  CHECK_THROWS_WITH_AS(bilevel::methods::meta_weight_net<P>(
                           train.data, val.data,
                           {.widths = widths, .batch = 10, .validation_batch = 20,
                            .lr_decay = multistep_decay{.at = {0.5}}, .hidden = 5}),
                       doctest::Contains("meta_weight_net: lr_decay: the learning-rate decay is stated in fractions "
                                         "of training, but the length of training is 0 steps (set `epochs`"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(bilevel::methods::l2rw<P>(train.data, val.data,
                                                 {.widths = widths, .batch = 10, .validation_batch = 20, .epochs = 1,
                                                  .lr_decay = multistep_decay{.at = {1.5}}}),
                       doctest::Contains("l2rw: lr_decay: multistep_decay: milestones are fractions of training in "
                                         "(0, 1], got 1.5"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(bilevel::methods::deep_interactions<P>(
                           train.data, val.data,
                           {.widths = widths, .batch = 10, .validation_batch = 20, .epochs = 1,
                            .meta_lr_decay = cosine_decay{.lr_min = 0.5}, .hidden = 4}),
                       doctest::Contains("deep_interactions: meta_lr_decay: cosine_decay: lr_min must be in [0, lr]"),
                       std::invalid_argument);
}

TEST_CASE("learned sample weights: one call gives what the weighting gives through a pointer array") {
  const auto train = test::toy_classes(60, 3, 0.3), val = test::toy_classes(20, 4, 0.0, 1000);
  auto s = bilevel::methods::meta_weight_net<P>(train.data, val.data,
                                                {.widths = widths, .batch = 10, .validation_batch = 20, .hidden = 5, .seed = 5});
  s.run(3);
  // inputs_of: the classifier reads the weighting net's parameters, as the solver passes them.
  const auto in = s.inputs_of<0>();
  REQUIRE(in.size() == 1);
  CHECK(&in[0] == &s.weighting_net().theta);
  CHECK(bilevel::methods::inputs_of<1>(s).list()[0] == &s.classifier().theta);
  // The pointer-array path, over the whole training set at once.
  const auto& lv0 = s.level<0>();
  const P::vector* raw[] = {&s.level<1>().theta};
  const auto b = test::whole<P>(*train.data);
  const auto out = lv0.learner.forward(lv0.theta, b);
  const bilevel::learners::sample_signals<P> signals{out.losses, &out.logits, &out.features};
  const auto expected = test::host<P>(lv0.learner.weighting().gather(bilevel::input_list<P>(raw), b, signals));
  const auto weights = s.sample_weights(*train.data);
  CHECK(weights == expected);
  // In chunks of 7 rows (the last one short): the same up to the products' summation order.
  CHECK(test::relative_error(s.sample_weights(*train.data, 7), expected) <= 1e-12);
  CHECK(bilevel::methods::learned_sample_weights<0>(s, *train.data) == expected);
  // V's weights lie in (0, 1) and are not all equal after training.
  CHECK(*std::min_element(weights.begin(), weights.end()) > 0.0);
  CHECK(*std::max_element(weights.begin(), weights.end()) < 1.0);
  CHECK(*std::min_element(weights.begin(), weights.end()) < *std::max_element(weights.begin(), weights.end()));
  CHECK_THROWS_WITH_AS(s.sample_weights(*train.data, 0), doctest::Contains("chunk must be >= 1"), std::invalid_argument);
}
