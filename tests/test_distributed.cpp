// SPDX-License-Identifier: MIT
// Data parallelism in one process: data_parallel over the single-process communicator must be
// the wrapped learner exactly (the 2-rank comparisons run under mpirun, tests/mpi/).
#include <doctest/doctest.h>

#include <bilevel/distributed/data_parallel.hpp>
#include <bilevel/distributed/replicas.hpp>
#include <bilevel/eigen.hpp>
#include <bilevel/learners/mlp.hpp>
#include <bilevel/learners/sample_weighting.hpp>
#include <bilevel/problems/ridge.hpp>

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
