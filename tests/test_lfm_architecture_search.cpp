// SPDX-License-Identifier: MIT
// Learning from Mistakes, architecture-search form: the segment-reading adapter's products
// against central differences; the mistake weights with W1's architecture in the top vector
// (VJP/JVP against each other and central differences); the three-level hypergradient of
// [A | V | r] through W2 and W1 against central differences of the method's own look-ahead
// objective; the discretisation of A; and a short search that lowers W2's validation loss
// and moves A away from uniform.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include <bilevel/eigen.hpp>
#include <bilevel/learners/reading_segment.hpp>
#include <bilevel/methods/darts.hpp>
#include <bilevel/methods/lfm_architecture_search.hpp>

#include "batches.hpp"
#include "derivative_checks.hpp"
#include "search_cell.hpp"
#include "toy_data.hpp"
#include "weighting_checks.hpp"

namespace {

using P = test::P64;
using namespace bilevel::learners;

/// tests/search_cell.hpp's search space.
std::vector<layer::spec> cell() { return test::search_cell(); }
constexpr geometry features8{1, 1, 8};

}  // namespace

TEST_CASE("reading_segment: a network reads its architecture from a segment, every product padded") {
  // Weights (slot 0) beside an architecture read at entries [3, 9) of a 12-entry vector.
  const sequential<P, sample_weights> inner(features8, cell(), loss_kind::cross_entropy, sample_weights{6});
  const reading_segment<sequential<P, sample_weights>> net(inner, inner.arch_slot(), 3, 12);
  CHECK(net.num_inputs() == 2);
  CHECK(net.input_size(1) == 12);
  CHECK(net.arch_size() == 12);
  static_assert(bilevel::twice_differentiable_learner<decltype(net)>);
  const std::vector<double> weights = {1.0, 0.5, 1.5, 0.8, 1.2, 0.7};
  auto packed = test::random_vector(12, 31, 0.5);
  const auto theta = test::host<P>(inner.initial_parameters(4));
  const auto batch = test::random_batch<P>(6, 8, 3, 2);
  // Every member against central differences of the one below (h = 1e-5 in double: ≲ 1e-9
  // relative; derivative_checks.hpp), the packed slot included: the entries outside the
  // segment do not move the loss, so their differences are zero, as the padding says.
  test::check_learner_derivatives(net, theta, {weights, packed}, batch, 1e-6);
  // ... and the padding is exactly zero, the segment exactly the inner network's.
  const P::vector w = test::device<P>(weights), full = test::device<P>(packed);
  P::vector alpha;
  P::segment(full, 3, 6, alpha);
  const P::vector* outer_in[] = {&w, &full};
  const P::vector* inner_in[] = {&w, &alpha};
  P::vector g_outer, g_inner, m_outer, m_inner;
  net.input_gradient(test::device<P>(theta), outer_in, batch, 1, g_outer);
  inner.input_gradient(test::device<P>(theta), inner_in, batch, 1, g_inner);
  const auto v = test::device<P>(test::random_vector(theta.size(), 5));
  net.mixed_vjp(test::device<P>(theta), outer_in, batch, 1, v, m_outer);
  inner.mixed_vjp(test::device<P>(theta), inner_in, batch, 1, v, m_inner);
  const auto go = test::host<P>(g_outer), gi = test::host<P>(g_inner), mo = test::host<P>(m_outer),
             mi = test::host<P>(m_inner);
  for (std::size_t k = 0; k < 12; ++k) {
    CAPTURE(k);
    const bool in_segment = k >= 3 && k < 9;
    CHECK(go[k] == (in_segment ? gi[k - 3] : 0.0));
    CHECK(mo[k] == (in_segment ? mi[k - 3] : 0.0));
  }
  CHECK(net.loss(test::device<P>(theta), outer_in, batch) == inner.loss(test::device<P>(theta), inner_in, batch));
  // A packed vector of the wrong size, or a segment that does not fit, is named.
  const P::vector short_full = P::zeros(8);
  const P::vector* bad_in[] = {&w, &short_full};
  CHECK_THROWS_WITH_AS(net.loss(test::device<P>(theta), bad_in, batch), doctest::Contains("has 8 entries, expected 12"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS((reading_segment<sequential<P, sample_weights>>(inner, 1, 7, 12)),
                       doctest::Contains("does not fit in 12 entries"), std::invalid_argument);
}

TEST_CASE("LFM mistake weights with W1's architecture: VJP and JVP in W1 and [A | V | r] are exact") {
  const auto train = test::toy_classes(12, 3, 0.3), refs = test::toy_classes(9, 4, 0.0, 500);
  const mistake_weighting<P> mw(features8, cell(), *refs.data, 6, 4);
  CHECK(mw.arch_size() == 6);
  const auto b = test::whole<P>(*train.data);
  const sequential<P> w1net(features8, cell());
  std::vector<std::vector<double>> point = {test::host<P>(w1net.initial_parameters(5)),
                                            test::host<P>(mw.initial_top(6))};
  const std::vector<double> alpha = {0.3, -0.2, 0.1, 0.5, -0.4, 0.2};
  std::copy(alpha.begin(), alpha.end(), point[1].begin());
  for (std::size_t j = 0; j < 9; ++j) point[1][mw.r_offset() + j] = 0.5 + 0.3 * double(j);
  const P::vector dummy_losses = P::zeros(12);
  const sample_signals<P> s{dummy_losses};
  // Adjoint identity to round-off and the JVP against central differences of the weights
  // (1e-7 relative, weighting_checks.hpp), in W1 and in the whole top vector, A included.
  test::check_weighting_products(mw, b, s, point, 0, test::random_vector(point[0].size(), 8, 1.0), 7);
  test::check_weighting_products(mw, b, s, point, 1, test::random_vector(point[1].size(), 9, 1.0), 7);
  // The path through A is there: the VJP in A is not zero, and the A-only JVP matches
  // central differences (a wrong or missing A term shows up at O(1)).
  const test::weighting_at<P, mistake_weighting<P>> at(mw, point);
  const auto vjp = test::host<P>(mw.scatter(at.in(), b, s, test::device<P>(test::random_vector(12, 7, 1.0)), 1));
  CHECK(test::norm(std::vector<double>(vjp.begin(), vjp.begin() + 6)) > 1e-6);
  auto t = std::vector<double>(point[1].size(), 0.0);
  for (std::size_t k = 0; k < 6; ++k) t[k] = 1.0 - 0.3 * double(k);
  test::check_weighting_products(mw, b, s, point, 1, t, 11);
  // W1 with mixed operations needs the architecture in the prefix.
  CHECK_THROWS_WITH_AS(mistake_weighting<P>(features8, cell(), *refs.data, 4, 4),
                       doctest::Contains("architecture has 6 entries but the top vector's prefix only 4"),
                       std::invalid_argument);
}

TEST_CASE("LFM search: the hypergradient of [A | V | r] through W2 and W1 against central differences") {
  const auto train = test::toy_classes(40, 3, 0.2), val = test::toy_classes(30, 4, 0.0, 1000);
  auto s = bilevel::methods::lfm_architecture_search<P>(
      features8, cell(), train.data, val.data,
      {.batch = 10, .validation_batch = 15, .lr = 0.1, .encoder_dim = 3, .references_per_class = 3, .seed = 4});
  s.run(2);  // away from the start: momentum buffers and A no longer zero-ish
  auto& w1 = s.level<0>();
  auto& w2 = s.level<1>();
  auto& top = s.level<2>();
  auto val_sampler = top.sampler;
  const auto vb = val_sampler();
  const auto b1 = w1.peek_batch(), b2 = w2.peek_batch();
  CHECK(b1.ids == b2.ids);  // W1 and W2 see the same training batches
  const auto hg = s.hypergradient(2);
  CHECK_FALSE(hg.approximated);
  REQUIRE(hg.reports.size() == 2);  // look-ahead through W2, then W1
  for (const auto& r : hg.reports) CHECK(r.exact_second_order);
  const auto exact = test::host<P>(hg.gradient);
  // The method's own objective, written out: one step of W1 (its optimizer, momentum and
  // weight decay included) reading A, one step of W2 reading W1's step and [A | V | r], the
  // validation loss of W2's step at A.
  auto objective = [&](const std::vector<double>& top_host) {
    const P::vector t = test::device<P>(top_host);
    const P::vector* in1[] = {&t};
    P::vector theta1 = w1.theta, g;
    auto st1 = w1.state;
    w1.learner.gradient(theta1, in1, b1, g);
    w1.optimizer.step(theta1, st1, g);
    const P::vector* in2[] = {&theta1, &t, &t};
    P::vector theta2 = w2.theta;
    auto st2 = w2.state;
    w2.learner.gradient(theta2, in2, b2, g);
    w2.optimizer.step(theta2, st2, g);
    const P::vector* in3[] = {&theta2};
    return top.learner.loss(t, in3, vb);
  };
  const auto top0 = test::host<P>(top.theta);
  const auto& mw = w2.learner.inner().weighting();
  std::vector<std::size_t> which(6);
  std::iota(which.begin(), which.end(), std::size_t(0));  // all of A
  for (std::size_t k = 0; k < 6; ++k) which.push_back(mw.encoder_offset() + 5 * k);  // some of V
  for (std::size_t j = 0; j < mw.references(); ++j) which.push_back(mw.r_offset() + j);  // all of r
  std::vector<double> fd, picked, fd_a, picked_a;
  for (std::size_t k : which) {
    auto u = top0;
    u[k] = top0[k] + 1e-5;
    const double fp = objective(u);
    u[k] = top0[k] - 1e-5;
    fd.push_back((fp - objective(u)) / 2e-5);
    picked.push_back(exact[k]);
    if (k < 6) fd_a.push_back(fd.back()), picked_a.push_back(exact[k]);
  }
  // Central differences with h = 1e-5 in double: O(h²) truncation and O(ε/h) round-off,
  // ≈ 1e-10 relative here; every product is exact, so 1e-6 leaves a wide margin and still
  // catches a missing path (the A → u_j term alone is far larger than that).
  MESSAGE("LFM search hypergradient vs central differences: all " << test::relative_error(picked, fd) << ", A "
                                                                   << test::relative_error(picked_a, fd_a));
  CHECK(test::relative_error(picked, fd) <= 1e-6);
  CHECK(test::relative_error(picked_a, fd_a) <= 1e-6);
}

TEST_CASE("LFM search: A is the prefix of the top vector and discretises like DARTS's α") {
  const auto val = test::toy_classes(30, 4, 0.0, 1000), train = test::toy_classes(20, 3);
  auto s = bilevel::methods::lfm_architecture_search<P>(features8, cell(), train.data, val.data,
                                                         {.batch = 10, .validation_batch = 10, .encoder_dim = 3,
                                                          .references_per_class = 2});
  auto top = test::host<P>(s.level<2>().theta);
  CHECK(top.size() == 6 + 3 * 8 + 6);  // [A | V | r], r over 2 references of each of 3 classes
  const std::vector<double> alpha = {0.1, 0.7, 0.2, 5.0, 0.3, 0.9};  // zero has the largest weight on edge 1
  std::copy(alpha.begin(), alpha.end(), top.begin());
  const auto a = bilevel::methods::searched_architecture<P>(test::device<P>(top), 6);
  CHECK(a == alpha);
  CHECK(bilevel::methods::chosen_operations(cell(), a) == std::vector<std::size_t>{1, 1});
  // A starts near uniform (1e-3·N(0, 1)), r at 1.
  for (std::size_t k = 0; k < 6; ++k) CHECK(std::abs(test::host<P>(s.level<2>().theta)[k]) < 0.01);
  CHECK(top.back() == 1.0);
  // The named levels are these levels; searched_architecture() is the prefix A of top().
  CHECK(&s.learner() == &s.level<0>());
  CHECK(&s.relearner() == &s.level<1>());
  CHECK(&s.top() == &s.level<2>());
  CHECK(s.arch_size() == 6);
  s.top().theta = test::device<P>(top);
  CHECK(s.searched_architecture() == alpha);
}

TEST_CASE("LFM search end to end: W2's validation loss falls and A leaves uniform") {
  const auto train = test::toy_classes(300, 7, 0.1), val = test::toy_classes(90, 8, 0.0, 1000);
  auto s = bilevel::methods::lfm_architecture_search<P>(
      features8, cell(), train.data, val.data,
      {.batch = 20, .validation_batch = 30, .lr = 0.1, .top_lr = 3e-2, .encoder_dim = 4, .seed = 2});
  const auto vb = test::whole<P>(*val.data);
  const auto& upper = s.level<2>().learner;
  auto val_loss = [&] {
    const P::vector* in[] = {&s.level<1>().theta};
    return upper.loss(s.level<2>().theta, in, vb);
  };
  auto spread = [&] {  // largest spread of A within an edge: 0 at uniform
    const auto a = bilevel::methods::searched_architecture<P>(s.level<2>().theta, 6);
    const auto [lo1, hi1] = std::minmax_element(a.begin(), a.begin() + 4);
    const auto [lo2, hi2] = std::minmax_element(a.begin() + 4, a.end());
    return std::max(*hi1 - *lo1, *hi2 - *lo2);
  };
  const double before = val_loss(), spread0 = spread();
  s.run(200);
  const double after = val_loss(), spread1 = spread();
  MESSAGE("LFM search: W2 validation loss " << before << " -> " << after << ", A spread " << spread0 << " -> "
                                            << spread1);
  CHECK(after < 0.7 * before);
  CHECK(spread1 > 10 * spread0);
  CHECK(P::all_finite(s.level<2>().theta));
}
