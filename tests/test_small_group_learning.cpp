// SPDX-License-Identifier: MIT
// Small-Group Learning: the peer-label loss (its targets and loss written out, its products
// those of the own network on that batch, detached in the peers), the sum of validation
// losses, the top level's hypergradient through the solver against central differences of
// the method's own objective (first order, K = 3; one exact look-ahead step of every V_k,
// K = 2), the discretisation of each learner's architecture, and a short search that lowers
// the summed validation loss and moves the architectures away from uniform.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include <bilevel/eigen.hpp>
#include <bilevel/methods/darts.hpp>
#include <bilevel/learners/networks/network_design.hpp>
#include <bilevel/methods/small_group_learning.hpp>

#include "derivative_checks.hpp"
#include "search_cell.hpp"
#include "toy_data.hpp"

namespace {

using P = test::P64;
using namespace bilevel::learners;
using net_t = reading_segment<sequential<P>>;

/// tests/search_cell.hpp's search space.
std::vector<layer::spec> cell() { return test::search_cell(); }
constexpr geometry features8{1, 1, 8};
constexpr std::size_t m = 6;  // architecture entries per learner

std::vector<double> block(const std::vector<double>& v, std::size_t k) {
  return {v.begin() + std::ptrdiff_t(k * m), v.begin() + std::ptrdiff_t((k + 1) * m)};
}

}  // namespace

TEST_CASE("peer-label loss: labelled CE plus λ times CE against the peers' soft labels, detached in the peers") {
  const sequential<P> plain(features8, cell());
  const net_t own(plain, 0, 0, 2 * m), peer(plain, 0, m, 2 * m);  // learner 1 of 2, its peer reads block 2
  const double lambda = 0.7;
  const peer_label_loss<net_t> loss(own, {peer}, lambda);
  CHECK(loss.num_inputs() == 2);
  CHECK(loss.input_size(0) == 2 * m);
  CHECK(loss.input_size(1) == plain.num_parameters());
  static_assert(bilevel::twice_differentiable_learner<peer_label_loss<net_t>>);

  const auto train = test::toy_classes(30, 3), pool = test::toy_classes(30, 5);
  peer_batches<P> batches(train.data, 4, pool.data, 6, 9);
  const auto b = batches();  // 4 labelled rows, then 6 unlabelled
  REQUIRE(b.size() == 10);
  CHECK(std::count(b.labels.begin(), b.labels.begin() + 4, -1) == 0);
  CHECK(std::vector<int>(b.labels.begin() + 4, b.labels.end()) == std::vector<int>(6, -1));  // the pool's labels are hidden

  const auto theta = test::host<P>(plain.initial_parameters(1)), peer_w = test::host<P>(plain.initial_parameters(2));
  const auto top = test::random_vector(2 * m, 3, 0.5);
  const P::vector t0 = test::device<P>(theta), pw = test::device<P>(peer_w), tp = test::device<P>(top);
  const P::vector* in[] = {&tp, &pw};

  // The loss written out from the plain network: mean CE on the labelled rows, plus λ times
  // the mean CE of the unlabelled rows against the peer's softmax.
  const P::vector a_own = test::device<P>(block(top, 0)), a_peer = test::device<P>(block(top, 1));
  const P::vector* own_in[] = {&a_own};
  const P::vector* peer_in[] = {&a_peer};
  const auto own_out = plain.forward(t0, b, own_in);
  const auto all_peer_logits = P::matrix_to_host(plain.forward(pw, b, peer_in).logits);
  const std::vector<double> peer_logits(all_peer_logits.begin() + 12, all_peer_logits.end());  // rows 4..9
  const auto z = P::matrix_to_host(own_out.logits);
  double expected = 0;
  for (std::size_t i = 0; i < 10; ++i) {
    double mz = -1e300, lse = 0;
    for (std::size_t c = 0; c < 3; ++c) mz = std::max(mz, z[i * 3 + c]);
    for (std::size_t c = 0; c < 3; ++c) lse += std::exp(z[i * 3 + c] - mz);
    lse = mz + std::log(lse);
    if (i < 4) {
      expected += (lse - z[i * 3 + std::size_t(b.labels[i])]) / 4.0;
    } else {
      const std::size_t u = i - 4;
      double pm = -1e300, ps = 0;
      for (std::size_t c = 0; c < 3; ++c) pm = std::max(pm, peer_logits[u * 3 + c]);
      for (std::size_t c = 0; c < 3; ++c) ps += std::exp(peer_logits[u * 3 + c] - pm);
      for (std::size_t c = 0; c < 3; ++c)
        expected += lambda / 6.0 * std::exp(peer_logits[u * 3 + c] - pm) / ps * (lse - z[i * 3 + c]);
    }
  }
  CHECK(loss.loss(t0, in, b) == doctest::Approx(expected).epsilon(1e-12));

  // Every product is the own network's on the batch with the pseudo-labels filled in...
  const auto filled = loss.targets_filled(in, b);
  const P::vector* own_packed[] = {&tp};
  test::check_learner_derivatives(own, theta, {top}, filled, 1e-6);
  const auto v = test::device<P>(test::random_vector(theta.size(), 4));
  const auto u = test::device<P>(test::random_vector(2 * m, 5));
  P::vector x, y;
  loss.gradient(t0, in, b, x), own.gradient(t0, own_packed, filled, y);
  CHECK(test::host<P>(x) == test::host<P>(y));
  loss.hvp(t0, in, b, v, x), own.hvp(t0, own_packed, filled, v, y);
  CHECK(test::host<P>(x) == test::host<P>(y));
  loss.mixed_vjp(t0, in, b, 0, v, x), own.mixed_vjp(t0, own_packed, filled, 0, v, y);
  CHECK(test::host<P>(x) == test::host<P>(y));
  loss.mixed_jvp(t0, in, b, 0, u, x), own.mixed_jvp(t0, own_packed, filled, 0, u, y);
  CHECK(test::host<P>(x) == test::host<P>(y));
  // ... so in the own block the input gradient is the derivative of the loss itself (the
  // peer's labels do not read that block), against central differences (h = 1e-5: ≲ 1e-9).
  loss.input_gradient(t0, in, b, 0, x);
  const auto g_top = test::host<P>(x);
  const auto fd_own = test::central_gradient(
      [&](const std::vector<double>& a) {
        auto moved = top;
        std::copy(a.begin(), a.end(), moved.begin());
        const P::vector mv = test::device<P>(moved);
        const P::vector* mi[] = {&mv, &pw};
        return loss.loss(t0, mi, b);
      },
      block(top, 0), 1e-5);
  CHECK(test::relative_error(block(g_top, 0), fd_own) <= 1e-6);
  // Detached: nothing flows to the peer's block or weights, although the loss does move with them.
  CHECK(test::norm(block(g_top, 1)) == 0.0);
  loss.input_gradient(t0, in, b, 1, x);
  CHECK(test::norm(test::host<P>(x)) == 0.0);
  loss.mixed_vjp(t0, in, b, 1, v, x);
  CHECK(test::norm(test::host<P>(x)) == 0.0);
  auto pw2 = peer_w;
  pw2[0] += 0.5;
  const P::vector moved_peer = test::device<P>(pw2);
  const P::vector* in2[] = {&tp, &moved_peer};
  CHECK(loss.loss(t0, in2, b) != loss.loss(t0, in, b));
}

TEST_CASE("SGL, K = 3, first order: the architectures' gradient is Σ_k ∂L_val(V_k, A_k)/∂A") {
  const auto train = test::toy_classes(40, 3, 0.1), val = test::toy_classes(30, 4, 0.0, 1000);
  auto s = bilevel::methods::small_group_learning<P, 3>(
      features8, cell(), train.data, val.data,
      {.batch = 8, .unlabelled_batch = 8, .validation_batch = 10, .lr = 0.1, .arch_lr = 1e-2, .seed = 3});
  s.run(3);
  auto& top = s.level<6>();
  CHECK(P::size(top.theta) == 3 * m);
  auto val_sampler = top.sampler;
  const auto vb = val_sampler();
  const auto hg = s.hypergradient(6);
  const auto exact = test::host<P>(hg.gradient);
  const sequential<P> plain(features8, cell());
  const std::vector<std::vector<double>> v = {test::host<P>(s.level<3>().theta), test::host<P>(s.level<4>().theta),
                                              test::host<P>(s.level<5>().theta)};
  // Written out from the plain network: learner k's validation loss reads block k.
  auto objective = [&](const std::vector<double>& a) {
    double total = 0;
    for (std::size_t k = 0; k < 3; ++k) {
      const P::vector ak = test::device<P>(block(a, k));
      const P::vector* in[] = {&ak};
      total += plain.loss(test::device<P>(v[k]), in, vb);
    }
    return total;
  };
  const auto reference = test::central_gradient(objective, test::host<P>(top.theta), 1e-5);
  MESSAGE("SGL first-order gradient vs central differences: " << test::relative_error(exact, reference));
  CHECK(test::relative_error(exact, reference) <= 1e-6);  // h = 1e-5 in double: ≲ 1e-9 relative
  CHECK(hg.loss == doctest::Approx(objective(test::host<P>(top.theta))).epsilon(1e-12));
}

TEST_CASE("SGL, K = 2, one exact look-ahead step of each V_k against central differences") {
  const auto train = test::toy_classes(40, 3, 0.1), val = test::toy_classes(30, 4, 0.0, 1000);
  auto s = bilevel::methods::small_group_learning<P, 2>(
      features8, cell(), train.data, val.data,
      {.batch = 8, .unlabelled_batch = 6, .validation_batch = 10, .lr = 0.2, .arch_lr = 1e-2, .lambda = 0.5, .seed = 5},
      bilevel::hypergrad::lookahead{.steps = 1, .on_next_batch = true});
  s.run(3);
  auto& top = s.level<4>();
  auto val_sampler = top.sampler;
  const auto vb = val_sampler();
  const std::vector<classification_batch<P>> vbatch = {s.level<2>().peek_batch(), s.level<3>().peek_batch()};
  const auto hg = s.hypergradient(4);
  CHECK_FALSE(hg.approximated);
  for (const auto& r : hg.reports) CHECK(r.exact_second_order);
  const auto exact = test::host<P>(hg.gradient);
  const auto a0 = test::host<P>(top.theta);
  const P::vector top0 = test::device<P>(a0);
  const std::vector<P::vector> w = {s.level<0>().theta, s.level<1>().theta};
  const sequential<P> plain(features8, cell());
  // The method's own objective: V_k takes one step of its optimizer on its batch, with the
  // pseudo-labels held where they are (detached: computed at the current architectures),
  // and is validated at its architecture block.
  auto objective = [&](const std::vector<double>& a) {
    const P::vector av = test::device<P>(a);
    double total = 0;
    for (std::size_t k = 0; k < 2; ++k) {
      auto& vk = k == 0 ? s.level<2>() : s.level<3>();
      const P::vector* at0[] = {&top0, &w[1 - k]};
      const auto filled = vk.learner.targets_filled(at0, vbatch[k]);  // labels at the unperturbed point
      const P::vector* own_in[] = {&av};
      P::vector theta = vk.theta, g;
      auto st = vk.state;
      vk.learner.network().gradient(theta, own_in, filled, g);
      vk.optimizer.step(theta, st, g);
      const P::vector ak = test::device<P>(block(a, k));
      const P::vector* val_in[] = {&ak};
      total += plain.loss(theta, val_in, vb);
    }
    return total;
  };
  const auto reference = test::central_gradient(objective, a0, 1e-5);
  // h = 1e-5 central differences (≲ 1e-9 relative) of an objective whose products are exact.
  MESSAGE("SGL look-ahead hypergradient vs central differences: " << test::relative_error(exact, reference));
  CHECK(test::relative_error(exact, reference) <= 1e-6);
  // The look-ahead term is not negligible: the first-order gradient differs from it.
  double direct_only = 0;
  {
    const auto direct = test::central_gradient(
        [&](const std::vector<double>& a) {
          double total = 0;
          for (std::size_t k = 0; k < 2; ++k) {
            const P::vector ak = test::device<P>(block(a, k));
            const P::vector* in[] = {&ak};
            total += plain.loss(k == 0 ? s.level<2>().theta : s.level<3>().theta, in, vb);
          }
          return total;
        },
        a0, 1e-5);
    direct_only = test::relative_error(direct, reference);
  }
  MESSAGE("first-order gradient vs the look-ahead objective's: " << direct_only);
  CHECK(direct_only > 1e-3);
}

TEST_CASE("SGL: every learner's architecture is its block of the top vector, discretised like DARTS's α") {
  const std::vector<double> top = {0.1, 0.7, 0.2, 5.0, 0.3, 0.9,    // learner 1: zero largest on edge 1
                                   0.9, 0.1, 0.2, 0.0, 0.8, 0.1};  // learner 2
  const auto archs = bilevel::methods::group_architectures<P>(test::device<P>(top), 2);
  REQUIRE(archs.size() == 2);
  CHECK(bilevel::methods::chosen_operations(cell(), archs[0]) == std::vector<std::size_t>{1, 1});
  CHECK(bilevel::methods::chosen_operations(cell(), archs[1]) == std::vector<std::size_t>{0, 0});
  CHECK_THROWS_AS(bilevel::methods::group_architectures<P>(test::device<P>(top), 5), std::invalid_argument);
}

TEST_CASE("SGL on the DARTS space: both stages' networks take their real steps (batch-norm running statistics)") {
  // The second stage's networks sit inside peer_label_loss; their running statistics move
  // with their own real steps as the first stage's do, so evaluation mode sees trained
  // statistics in both.
  const auto train = test::toy_classes(60, 7, 0.1), val = test::toy_classes(30, 8, 0.0, 1000);
  // The toy data's 8 features as 2x4 images; one (reduction) cell of two nodes.
  const network_design space = darts_supernet_design{{.input = {2, 4, 1}, .classes = 3, .cells = 1, .channels = 1,
                                                      .nodes = 2, .stem_multiplier = 1}};
  auto s = bilevel::methods::small_group_learning<P, 2>(
      space, train.data, val.data, {.batch = 10, .unlabelled_batch = 10, .validation_batch = 10, .seed = 3});
  const auto w0 = s.w<0>().learner.state(), v0 = s.v<1>().learner.state();
  REQUIRE(!v0.empty());
  s.run(2);
  CHECK(s.w<0>().learner.state() != w0);
  CHECK(s.v<1>().learner.state() != v0);
}

TEST_CASE("SGL end to end: the summed validation loss falls and the architectures leave uniform") {
  const auto train = test::toy_classes(300, 7, 0.1), val = test::toy_classes(90, 8, 0.0, 1000);
  auto s = bilevel::methods::small_group_learning<P, 2>(
      features8, cell(), train.data, val.data,
      {.batch = 20, .unlabelled_batch = 20, .validation_batch = 30, .lr = 0.1, .arch_lr = 3e-2, .seed = 2});
  // The named levels: W_k at k, V_k at K + k, the architectures at 2K (K = 2).
  CHECK(&s.w<0>() == &s.level<0>());
  CHECK(&s.w<1>() == &s.level<1>());
  CHECK(&s.v<0>() == &s.level<2>());
  CHECK(&s.v<1>() == &s.level<3>());
  CHECK(&s.architectures() == &s.level<4>());
  CHECK(s.group_architectures() == bilevel::methods::group_architectures<P>(s.level<4>().theta, 2));
  const auto vb = test::whole<P>(*val.data);
  const auto& upper = s.level<4>().learner;
  auto val_loss = [&] {
    const P::vector* in[] = {&s.level<2>().theta, &s.level<3>().theta};
    return upper.loss(s.level<4>().theta, in, vb);
  };
  auto spread = [&] {  // largest spread of α within an edge of either learner: 0 at uniform
    double out = 0;
    for (const auto& a : bilevel::methods::group_architectures<P>(s.level<4>().theta, 2)) {
      const auto [lo1, hi1] = std::minmax_element(a.begin(), a.begin() + 4);
      const auto [lo2, hi2] = std::minmax_element(a.begin() + 4, a.end());
      out = std::max({out, *hi1 - *lo1, *hi2 - *lo2});
    }
    return out;
  };
  const double before = val_loss(), spread0 = spread();
  s.run(200);
  const double after = val_loss(), spread1 = spread();
  MESSAGE("SGL: summed validation loss " << before << " -> " << after << ", α spread " << spread0 << " -> " << spread1);
  CHECK(after < 0.7 * before);
  CHECK(spread1 > 10 * spread0);
  CHECK(P::all_finite(s.level<4>().theta));
}
