// SPDX-License-Identifier: MIT
// The data-reweighting methods (methods/*.hpp) as the solver runs them: each hypergradient
// against central differences of the method's own outer objective, and short end-to-end runs
// on noisy toy data that lower the validation loss and turn down the corrupted samples.
#include <doctest/doctest.h>

#include <numeric>
#include <vector>

#include <bilevel/bilevel.hpp>
#include <bilevel/methods/deep_interactions.hpp>
#include <bilevel/methods/l2rw.hpp>
#include <bilevel/methods/meta_weight_net.hpp>

#include "support.hpp"
#include "toy_data.hpp"

namespace {

using P = test::P64;
using bilevel::learners::make_batch;
using bilevel::learners::mlp;

const std::vector<std::size_t> widths = {8, 6, 3};

/// F(u) = L_val(θ'(u)): the validation loss after the classifier's optimizer step from its
/// current state on batch b, with its upper input set to u. What a look-ahead hypergradient
/// differentiates.
template <class Level>
double step_objective(const Level& low, P::vector theta, bilevel::optimizer_state<P> state,
                      const std::vector<double>& u, const bilevel::learners::classification_batch<P>& b,
                      const bilevel::learners::classification_batch<P>& vb) {
  const P::vector upper = test::device<P>(u);
  const P::vector* in[] = {&upper};
  P::vector g;
  low.learner.gradient(theta, in, b, g);
  low.optimizer.step(theta, state, g);
  return mlp<P>(widths).loss(theta, {}, vb);
}
template <class Solver>
double lookahead_objective(Solver& s, const std::vector<double>& u, const bilevel::learners::classification_batch<P>& b,
                           const bilevel::learners::classification_batch<P>& vb) {
  const auto& low = s.template level<0>();
  return step_objective(low, low.theta, low.state, u, b, vb);
}

/// The solver's hypergradient of level 1 and central differences of the look-ahead objective
/// on the same two batches, over the coordinates `which` of level 1's variable.
template <class Solver>
void check_lookahead_hypergradient(Solver& s, const std::vector<std::size_t>& which, double tolerance) {
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
    const double fp = lookahead_objective(s, u, b, vb);
    u[k] = u0[k] - h;
    const double fm = lookahead_objective(s, u, b, vb);
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

TEST_CASE("teacher (deep interactions): its hypergradient against central differences, and an end-to-end run") {
  const auto train = test::toy_classes(60, 3, 0.3), val = test::toy_classes(20, 4, 0.0, 1000);
  auto s = bilevel::methods::deep_interactions<P>(
      train.data, val.data, {.widths = widths, .batch = 10, .validation_batch = 20, .hidden = 4, .seed = 5});
  s.run(3);
  std::vector<std::size_t> coords(s.level<1>().theta.size());
  std::iota(coords.begin(), coords.end(), std::size_t(0));
  check_lookahead_hypergradient(s, coords, 1e-6);

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
