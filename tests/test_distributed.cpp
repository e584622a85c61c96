// SPDX-License-Identifier: MIT
// Data parallelism in one process: data_parallel over the single-process communicator must be
// the wrapped learner exactly (the 2-rank comparisons run under mpirun, tests/mpi/).
#include <doctest/doctest.h>

#include <bilevel/distributed/data_parallel.hpp>
#include <bilevel/distributed/replicas.hpp>
#include <bilevel/eigen.hpp>
#include <bilevel/learners/mlp.hpp>
#include <bilevel/learners/peer_label_loss.hpp>
#include <bilevel/learners/reading_segment.hpp>
#include <bilevel/learners/sample_weighting.hpp>
#include <bilevel/problems/ridge.hpp>

#include "search_cell.hpp"
#include "support.hpp"
#include "toy_data.hpp"

namespace {
namespace dist = bilevel::distributed;
using test::P64;

static_assert(dist::communicator<dist::single_process>);
static_assert(!dist::communicator<int>);
static_assert(dist::row_shardable<bilevel::learners::classification_batch<P64>>);
static_assert(!dist::row_shardable<bilevel::full_batch>);
}  // namespace

TEST_CASE("distributed: on one process a data-parallel learner is the learner, bit for bit") {
  using bilevel::learners::mlp;
  using bilevel::learners::sample_weights;
  const auto data = test::toy_classes(12, 3);
  const auto batch = test::whole<P64>(*data.data);
  const mlp<P64, sample_weights> net({8, 5, 3}, bilevel::learners::activation::tanh,
                                     bilevel::learners::loss_kind::cross_entropy, sample_weights{12});
  const dist::data_parallel wrapped(net, dist::single_process{});
  const auto theta = net.initial_parameters(3);
  const auto w = test::device<P64>(std::vector<double>(12, 0.7));
  const P64::vector* in[] = {&w};
  const auto v = test::device<P64>(test::random_vector(net.num_parameters(), 4));
  P64::vector a, b;
  CHECK(wrapped.gradient(theta, in, batch, a) == net.gradient(theta, in, batch, b));
  CHECK(a == b);
  wrapped.hvp(theta, in, batch, v, a);
  net.hvp(theta, in, batch, v, b);
  CHECK(a == b);
  wrapped.mixed_vjp(theta, in, batch, 0, v, a);
  net.mixed_vjp(theta, in, batch, 0, v, b);
  CHECK(a == b);
  wrapped.input_gradient(theta, in, batch, 0, a);
  net.input_gradient(theta, in, batch, 0, b);
  CHECK(a == b);
  CHECK(wrapped.loss(theta, in, batch) == net.loss(theta, in, batch));
  // Every second-order product stays exact through the wrapper.
  static_assert(bilevel::twice_differentiable_learner<decltype(wrapped)>);
}

TEST_CASE("distributed: take_rows keeps each row with its target, label and id") {
  const auto data = test::toy_classes(7, 5, 0.0, 100);
  const auto batch = test::whole<P64>(*data.data);
  const auto part = dist::take_rows(batch, 2, 3);
  REQUIRE(part.size() == 3u);
  CHECK(part.ids == std::vector<std::size_t>{102, 103, 104});
  CHECK(part.labels == std::vector<int>(batch.labels.begin() + 2, batch.labels.begin() + 5));
  CHECK(part.x == batch.x.middleRows(2, 3));
  CHECK(part.targets == batch.targets.middleRows(2, 3));
}

TEST_CASE("distributed: rows_of_rank splits labelled and unlabelled rows each, and the parts' peer-label losses add up") {
  using namespace bilevel::learners;
  // 7 labelled rows (ids 0..) then 5 unlabelled (ids 100..) over 3 ranks: labelled blocks
  // [0, 2), [2, 4), [4, 7) and unlabelled blocks [0, 1), [1, 3), [3, 5), each rank's labelled
  // rows first.
  const auto train = test::toy_classes(20, 3), pool = test::toy_classes(20, 5, 0.0, 100);
  auto batch_of = [&](std::size_t unlabelled) { return peer_batches<P64>(train.data, 7, pool.data, unlabelled, 9)(); };
  const auto b = batch_of(5);
  REQUIRE(b.size() == 12u);
  const std::vector<std::vector<std::size_t>> rows = {{0, 1, 7}, {2, 3, 8, 9}, {4, 5, 6, 10, 11}};
  for (std::size_t r = 0; r < 3; ++r) {
    const auto part = dist::rows_of_rank(b, r, 3);
    REQUIRE(part.size() == rows[r].size());
    CHECK(part.whole_labelled == 7u);
    CHECK(part.whole_rows == 12u);
    for (std::size_t i = 0; i < part.size(); ++i) {
      const auto w = long(rows[r][i]);
      CHECK(part.ids[i] == b.ids[std::size_t(w)]);
      CHECK(part.labels[i] == b.labels[std::size_t(w)]);
      CHECK(part.x.row(long(i)) == b.x.row(w));
      CHECK(part.targets.row(long(i)) == b.targets.row(w));
    }
  }
  // Without unlabelled rows, rows [⌊r·n/R⌋, ⌊(r+1)·n/R⌋): one block per rank.
  const auto labelled = test::whole<P64>(*test::toy_classes(7, 5).data);
  for (std::size_t r = 0; r < 3; ++r) {
    const auto part = dist::rows_of_rank(labelled, r, 3), block = dist::take_rows(labelled, r * 7 / 3, (r + 1) * 7 / 3 - r * 7 / 3);
    CHECK(part.ids == block.ids);
    CHECK(part.x == block.x);
    CHECK(part.targets == block.targets);
  }
  // 1 labelled and 1 unlabelled row over 2 ranks would leave rank 0 nothing: refused, on every rank.
  const auto tiny = peer_batches<P64>(train.data, 1, pool.data, 1, 2)();
  for (std::size_t r = 0; r < 2; ++r)
    CHECK_THROWS_WITH_AS(dist::rows_of_rank(tiny, r, 2), doctest::Contains("leaves rank 0 no rows"),
                         std::invalid_argument);

  // Σ_r (n_r/n)·L_r is the whole batch's loss and gradient, also where a part has one kind only
  // (7 labelled and 2 unlabelled rows: rank 0 has no unlabelled row).
  using net_t = reading_segment<sequential<P64>>;
  const sequential<P64> plain(bilevel::learners::geometry{1, 1, 8}, test::search_cell());
  const std::size_t m = plain.arch_size();
  const peer_label_loss<net_t> loss(net_t(plain, 0, 0, 2 * m), {net_t(plain, 0, m, 2 * m)}, 0.7);
  const auto theta = plain.initial_parameters(1), peer_w = plain.initial_parameters(2);
  const auto top = test::device<P64>(test::random_vector(2 * m, 3, 0.5));
  const P64::vector* in[] = {&top, &peer_w};
  for (const std::size_t unlabelled : {5u, 2u}) {
    const auto whole = batch_of(unlabelled);
    P64::vector g_whole, g_part;
    const double l_whole = loss.gradient(theta, in, whole, g_whole);
    double l_sum = 0;
    std::vector<double> g_sum(g_whole.size(), 0.0);
    for (std::size_t r = 0; r < 3; ++r) {
      const auto part = dist::rows_of_rank(whole, r, 3);
      const double share = double(part.size()) / double(whole.size());
      l_sum += share * loss.gradient(theta, in, part, g_part);
      for (std::size_t i = 0; i < g_sum.size(); ++i) g_sum[i] += share * g_part[long(i)];
    }
    CHECK(l_sum == doctest::Approx(l_whole).epsilon(1e-14));
    CHECK(test::relative_error(g_sum, test::host<P64>(g_whole)) <= 1e-14);
  }
  // A whole batch still needs both kinds.
  CHECK_THROWS_WITH_AS((void)loss.loss(theta, in, labelled), doctest::Contains("it has 7 and 0"),
                       std::invalid_argument);
}

TEST_CASE("distributed: an own-data share must be a fraction, and the shares must sum to 1") {
  const auto problem = bilevel::problems::ridge_problem<P64>::synthetic(20, 10, 4, 2, 0.5, 1);
  using bilevel::problems::ridge_training_loss;
  CHECK_THROWS_WITH_AS(dist::data_parallel(ridge_training_loss<P64>(problem.train), dist::single_process{},
                                           dist::own_data{1.5}),
                       doctest::Contains("share 1.5"), std::invalid_argument);
  // One process holding half the rows would halve every loss and derivative.
  CHECK_THROWS_WITH_AS(dist::data_parallel(ridge_training_loss<P64>(problem.train), dist::single_process{},
                                           dist::own_data{0.5}),
                       doctest::Contains("shares sum to 0.5"), std::invalid_argument);
}
