// SPDX-License-Identifier: MIT
// The open layer concept: chains, graphs (sums of edges, concatenations, residual blocks)
// and a layer written outside the library, inside a network whose every exact product is
// checked against central differences, on every policy.
#include <doctest/doctest.h>

#include <bilevel/learners/layers/graph.hpp>
#include <bilevel/learners/layers/identity.hpp>
#include <bilevel/learners/layers/linear.hpp>
#include <bilevel/learners/layers/mixed_op.hpp>
#include <bilevel/learners/layers/nonlinearity.hpp>
#include <bilevel/learners/sequential.hpp>

#include "batches.hpp"
#include "derivative_checks.hpp"
#include "policies.hpp"

namespace {
using namespace bilevel::learners;

/// A layer the library does not know: y = θ_c · x ⊙ x per channel c (a learned quadratic),
/// with its own cache, used through the open layer concept only.
template <bilevel::nn_tensor_policy P>
struct channel_square {
  using matrix = typename P::matrix;
  using vector = bilevel::vector_t<P>;
  using scalar = bilevel::scalar_t<P>;
  struct cache {
    matrix square;  // x ⊙ x
  };
  geometry shape;
  [[nodiscard]] geometry input_shape() const { return shape; }
  [[nodiscard]] geometry output_shape() const { return shape; }
  [[nodiscard]] std::size_t num_parameters() const { return shape.channels; }
  void initialize(std::span<scalar> p, std::mt19937_64&) const {
    for (auto& e : p) e = scalar(0.5);
  }
  vector weights(const vector& theta, std::size_t offset) const {
    vector w;
    P::segment(theta, offset, shape.channels, w);
    return w;
  }
  void forward(const pass_context<P>& p, const matrix& x, matrix& y, cache& c) const {
    P::hadamard(x, x, c.square);
    y = c.square;
    P::scale_columns(y, weights(p.theta, p.offset));
  }
  // y_rc = w_c x_rc²: ∂/∂w_c = Σ_r g_rc x_rc², ∂/∂x = 2 w_c x g.
  void backward(const pass_context<P>& p, const matrix& x, const matrix& g, cache& c, matrix* gx, vector& grad) const {
    matrix gs;
    P::hadamard(g, c.square, gs);
    vector dw;
    P::column_sums(gs, dw);
    P::set_segment(dw, grad, p.offset);
    if (gx) {
      P::hadamard(g, x, *gx);
      P::scale_columns(*gx, weights(p.theta, p.offset));
      P::scale(*gx, scalar(2));
    }
  }
  void tangent_forward(const tangent_context<P>& t, const matrix& x, const matrix* x_dot, cache& c,
                       matrix& y_dot) const {
    y_dot = c.square;
    P::scale_columns(y_dot, weights(t.v, t.offset));  // v_c x²
    if (x_dot) {
      matrix d;
      P::hadamard(x, *x_dot, d);
      P::scale_columns(d, weights(t.theta, t.offset));
      P::axpy(scalar(2), d, y_dot);  // + 2 w_c x ẋ
    }
  }
  void tangent_backward(const tangent_context<P>& t, const matrix& x, const matrix* x_dot, const matrix& g,
                        const matrix& g_dot, cache& c, matrix* gx_dot, vector& grad_dot) const {
    matrix gs;
    P::hadamard(g_dot, c.square, gs);  // ġ x²
    if (x_dot) {
      matrix gx2;
      P::hadamard(g, x, gx2);
      P::hadamard(gx2, *x_dot, gx2);
      P::axpy(scalar(2), gx2, gs);  // + 2 g x ẋ
    }
    vector dw;
    P::column_sums(gs, dw);
    P::set_segment(dw, grad_dot, t.offset);
    if (gx_dot) {
      // 2 (w ġ x + v g x + w g ẋ)
      matrix a, b;
      P::hadamard(g_dot, x, a);
      P::scale_columns(a, weights(t.theta, t.offset));
      P::hadamard(g, x, b);
      P::scale_columns(b, weights(t.v, t.offset));
      P::axpy(scalar(1), b, a);
      if (x_dot) {
        P::hadamard(g, *x_dot, b);
        P::scale_columns(b, weights(t.theta, t.offset));
        P::axpy(scalar(1), b, a);
      }
      P::scale(a, scalar(2));
      *gx_dot = std::move(a);
    }
  }
};

}  // namespace

TEST_CASE_TEMPLATE("graph: residual blocks, sums and concatenations, every exact product", P, BILEVEL_DOUBLE_POLICIES) {
  const geometry in{1, 1, 5};
  // node 1 = tanh(linear(x)) ; node 2 = node 1 + square(linear(node 1)) (a residual block)
  // node 3 = concat(node 1, node 2) ; node 4 = linear(node 3) + linear(x)
  graph<P> g(in);
  const auto n1 = g.add(g.input(), chain<P>({linear<P>(in, 4), nonlinearity<P>({1, 1, 4}, activation::tanh)}));
  const auto n2 = g.sum({{n1, identity_layer<P>({1, 1, 4})},
                         {n1, chain<P>({linear<P>({1, 1, 4}, 4, false), channel_square<P>{{1, 1, 4}}})}});
  const auto n3 = g.concat({n1, n2});
  g.sum({{n3, linear<P>({1, 1, 8}, 3)}, {g.input(), linear<P>(in, 3, false)}});
  CHECK(g.output_shape() == geometry{1, 1, 3});
  CHECK(g.num_parameters() == (5 * 4 + 4) + 4 * 4 + 4 + (8 * 3 + 3) + 5 * 3);
  const sequential<P, sample_weights> net(in, {g}, loss_kind::cross_entropy, sample_weights{4});
  test::check_learner_derivatives(net, test::host<P>(net.initial_parameters(3)), {{0.5, 1.0, 1.5, 0.7}},
                                  test::random_batch<P>(4, 5, 3, 2), 1e-6);
}

TEST_CASE_TEMPLATE("graph: a node no later node reads has a zero gradient", P, BILEVEL_DOUBLE_POLICIES) {
  graph<P> g({1, 1, 4});
  g.add(g.input(), linear<P>({1, 1, 4}, 2));  // node 1: read by nobody (10 parameters)
  g.add(g.input(), linear<P>({1, 1, 4}, 2));
  const sequential<P> net({1, 1, 4}, {g});
  const auto theta = net.initial_parameters(2);
  bilevel::vector_t<P> grad;
  net.gradient(theta, {}, test::random_batch<P>(3, 4, 2, 1), grad);
  const auto h = test::host<P>(grad);
  for (std::size_t i = 0; i < 10; ++i) CHECK(h[i] == 0.0);
  CHECK(std::abs(h[10]) > 0.0);
}

TEST_CASE_TEMPLATE("graph: shapes are named", P, BILEVEL_DOUBLE_POLICIES) {
  graph<P> g({1, 1, 4});
  CHECK_THROWS_WITH_AS(g.add(g.input(), linear<P>({1, 1, 3}, 2)), doctest::Contains("takes 1x1x3 but the node is 1x1x4"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(g.add(7, linear<P>({1, 1, 4}, 2)), doctest::Contains("reads node 7"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(g.sum({{0, linear<P>({1, 1, 4}, 2)}, {0, linear<P>({1, 1, 4}, 3)}}),
                       doctest::Contains("give 1x1x2 and 1x1x3"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(chain<P>({linear<P>({1, 1, 4}, 2), linear<P>({1, 1, 3}, 2)}),
                       doctest::Contains("layer 1 takes 1x1x3 but layer 0 gives 1x1x2"), std::invalid_argument);
}

TEST_CASE_TEMPLATE("mixed_op: shared and separate architecture entries, every exact product", P, BILEVEL_DOUBLE_POLICIES) {
  const geometry in{1, 1, 4};
  // Two edges read α[0, 4) (as DARTS's cells of one type share α), a third reads α[4, 8).
  auto edge = [&](std::size_t arch_at) {
    return mixed_op<P>({linear<P>(in, 4), chain<P>({linear<P>(in, 4, false), nonlinearity<P>(in, activation::tanh)}),
                        identity_layer<P>(in), zero_layer<P>(in)},
                       arch_at);
  };
  graph<P> g(in);
  const auto n1 = g.add(g.input(), edge(0));
  const auto n2 = g.sum({{g.input(), edge(0)}, {n1, edge(4)}});
  g.add(n2, linear<P>(in, 3));
  CHECK(g.arch_size() == 8);
  const sequential<P, sample_weights> net(in, {g}, loss_kind::cross_entropy, sample_weights{3});
  CHECK(net.num_inputs() == 2);
  CHECK(net.arch_size() == 8);
  test::check_learner_derivatives(net, test::host<P>(net.initial_parameters(5)),
                                  {{0.5, 1.0, 1.5}, test::random_vector(8, 9, 0.5)}, test::random_batch<P>(3, 4, 3, 4),
                                  1e-6);
}
