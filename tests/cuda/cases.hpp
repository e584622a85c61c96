// SPDX-License-Identifier: MIT
#pragma once
// The computations the CUDA tests compare across back ends, written once against the
// policy concept: instantiated with cuda<S> in the .cu files and with eigen<S> in
// host_reference.cpp (a host-compiler translation unit), so both sides run the very same
// code on the same data. Includes the library piece by piece: bilevel.hpp would bring Eigen.
#include <cstddef>
#include <numeric>
#include <string>
#include <vector>

#include <bilevel/core/hypergradient_strategy.hpp>
#include <bilevel/core/level.hpp>
#include <bilevel/core/solver.hpp>
#include <bilevel/hypergrad/first_order.hpp>
#include <bilevel/hypergrad/fixed_point.hpp>
#include <bilevel/hypergrad/forward_mode.hpp>
#include <bilevel/hypergrad/implicit_cg.hpp>
#include <bilevel/hypergrad/neumann.hpp>
#include <bilevel/hypergrad/unrolled.hpp>
#include <bilevel/learners/loss_weighting_net.hpp>
#include <bilevel/learners/mlp.hpp>
#include <bilevel/learners/sequential.hpp>
#include <bilevel/methods/meta_weight_net.hpp>
#include <bilevel/optim/adam.hpp>
#include <bilevel/optim/sgd.hpp>
#include <bilevel/problems/ridge.hpp>

#include "common.hpp"
#include "toy_data.hpp"

namespace cuda_test {

// ---- a network's loss and exact products at a fixed point ----

enum class net_kind { mlp_relu, mlp_tanh, mlp_sigmoid_squared_error, cnn };
inline const char* name(net_kind k) {
  switch (k) {
    case net_kind::mlp_relu: return "mlp relu, cross-entropy";
    case net_kind::mlp_tanh: return "mlp tanh, cross-entropy";
    case net_kind::mlp_sigmoid_squared_error: return "mlp sigmoid, squared error";
    case net_kind::cnn: return "cnn: conv, tanh, max pool, conv, sigmoid, avg pool, dense";
  }
  return "?";
}
inline constexpr std::size_t batch_rows = 6;

/// Every network reads per-sample weights (input slot 0), so all products are defined.
template <class P>
using network = bilevel::learners::sequential<P, bilevel::learners::sample_weights>;

template <class P>
network<P> make_network(net_kind k) {
  using namespace bilevel::learners;
  using bilevel::learners::geometry;
  switch (k) {
    case net_kind::mlp_relu:
      return mlp<P, sample_weights>({5, 4, 3, 3}, activation::relu, loss_kind::cross_entropy, sample_weights{batch_rows});
    case net_kind::mlp_tanh:
      return mlp<P, sample_weights>({5, 4, 3, 3}, activation::tanh, loss_kind::cross_entropy, sample_weights{batch_rows});
    case net_kind::mlp_sigmoid_squared_error:
      return mlp<P, sample_weights>({5, 4, 3}, activation::sigmoid, loss_kind::squared_error, sample_weights{batch_rows});
    case net_kind::cnn:
      break;
  }
  return network<P>({6, 6, 2},
                    {layer::conv{3, 3, 1, 1}, layer::act{activation::tanh}, layer::max_pool{2}, layer::conv{2, 2, 1, 0},
                     layer::act{activation::sigmoid}, layer::avg_pool{2}, layer::flatten{}, layer::dense{3}},
                    loss_kind::cross_entropy, sample_weights{batch_rows});
}
inline std::size_t features(net_kind k) { return k == net_kind::cnn ? 72 : 5; }

/// The point, the directions and what the network computes there (all in double on the host).
struct products {
  std::vector<double> theta, weights, v, u;
  double loss = 0;
  std::vector<double> gradient, hvp, input_gradient, mixed_vjp, mixed_jvp;
};

template <class P>
products learner_products(net_kind k) {
  using V = bilevel::vector_t<P>;
  const auto net = make_network<P>(k);
  const auto batch = random_batch<P>(batch_rows, features(k), 3, 3);
  products r;
  r.theta = host<P>(net.initial_parameters(7));
  r.weights = random_vector(batch_rows, 5, 0.5);
  for (auto& w : r.weights) w += 1.0;
  r.v = random_vector(r.theta.size(), 101);
  r.u = random_vector(batch_rows, 202);
  const V theta = device<P>(r.theta), w = device<P>(r.weights), v = device<P>(r.v), u = device<P>(r.u);
  const V* in_ptrs[] = {&w};
  const bilevel::input_list<P> in(in_ptrs);
  V out;
  r.loss = net.gradient(theta, in, batch, out);
  r.gradient = host<P>(out);
  net.hvp(theta, in, batch, v, out);
  r.hvp = host<P>(out);
  net.input_gradient(theta, in, batch, 0, out);
  r.input_gradient = host<P>(out);
  net.mixed_vjp(theta, in, batch, 0, v, out);
  r.mixed_vjp = host<P>(out);
  net.mixed_jvp(theta, in, batch, 0, u, out);
  r.mixed_jvp = host<P>(out);
  return r;
}

// ---- ridge regression with a learned log-penalty (bilevel/problems/ridge.hpp) ----

inline const std::vector<double>& ridge_log_penalty() {
  static const std::vector<double> lam = {-1.0, -0.5, -1.5, 0.0, -1.0, -2.0, -0.3, -1.2};
  return lam;
}
template <class P>
bilevel::problems::ridge_problem<P> ridge() {
  return bilevel::problems::ridge_problem<P>::synthetic(60, 40, 8, 3, 0.5, 7);
}

/// Level 1's hypergradient by `strategy` after `steps − 1` inner steps from theta0 (as the CPU
/// suite's tests/test_backends.cpp does), with the strategy's first report.
template <class P, class Strategy>
std::pair<std::vector<double>, bilevel::hypergradient_report> ridge_hypergradient(
    const bilevel::problems::ridge_problem<P>& prob, Strategy strategy, std::vector<double> theta0, std::size_t steps) {
  using namespace bilevel::problems;
  auto inner = bilevel::make_level("theta", ridge_training_loss<P>(prob.train), bilevel::optim::sgd<P>{.lr = 0.1},
                                   strategy, device<P>(theta0))
                   .reading({1})
                   .steps_per_iteration(steps);
  auto outer = bilevel::make_level("lambda", validation_least_squares<P>(prob.validation, 8),
                                   bilevel::optim::sgd<P>{.lr = 0.1}, bilevel::hypergrad::first_order{},
                                   device<P>(ridge_log_penalty()))
                   .reading({0});
  bilevel::solver s(std::move(inner), std::move(outer));
  if (steps > 1) s.step_level(0);
  const auto r = s.hypergradient(1);
  return {host<P>(r.gradient), r.reports.empty() ? bilevel::hypergradient_report{} : r.reports.at(0)};
}

// ---- Meta-Weight-Net end to end (bilevel/methods/meta_weight_net.hpp) on toy data ----

struct mwn_trace {
  std::vector<std::vector<double>> hypergradients;  ///< level 1's, before each iteration
  std::vector<double> theta, phi;                   ///< after the last iteration
  double validation_loss_before = 0, validation_loss_after = 0;
};
inline const std::vector<std::size_t>& mwn_widths() {
  static const std::vector<std::size_t> w = {8, 6, 3};
  return w;
}

/// The toy Meta-Weight-Net solver of these tests (60 training rows with 30% noise, 20 clean
/// validation rows, classifier 8-6-3, V 1-5-1).
template <class P>
auto toy_meta_weight_net() {
  return bilevel::methods::meta_weight_net<P>(
      test::toy_classes(60, 3, 0.3).data, test::toy_classes(20, 4, 0.0, 1000).data,
      {.widths = mwn_widths(), .batch = 10, .validation_batch = 20, .hidden = 5, .seed = 5});
}

template <class P>
mwn_trace meta_weight_net_run(std::size_t iterations) {
  const auto val = test::toy_classes(20, 4, 0.0, 1000);
  auto s = toy_meta_weight_net<P>();
  std::vector<std::size_t> rows(val.data->rows);
  std::iota(rows.begin(), rows.end(), std::size_t(0));
  const auto vb = bilevel::learners::make_batch<P>(*val.data, rows);
  const bilevel::learners::mlp<P> net(mwn_widths());
  mwn_trace t;
  t.validation_loss_before = net.loss(s.template level<0>().theta, {}, vb);
  for (std::size_t it = 0; it < iterations; ++it) {
    auto copy = s;  // the same state and samplers: the hypergradient the next iteration applies
    t.hypergradients.push_back(host<P>(copy.hypergradient(1).gradient));
    s.run(1);
  }
  t.theta = host<P>(s.template level<0>().theta);
  t.phi = host<P>(s.template level<1>().theta);
  t.validation_loss_after = net.loss(s.template level<0>().theta, {}, vb);
  return t;
}

/// Both levels' parameters after `before` iterations of the toy MWN solver, a checkpoint saved
/// to `path`, and `after` more iterations.
template <class P>
std::vector<std::vector<double>> meta_weight_net_checkpointed(const std::string& path, std::size_t before,
                                                              std::size_t after) {
  auto s = toy_meta_weight_net<P>();
  s.run(before);
  s.save_checkpoint(path);
  s.run(after);
  return {host<P>(s.template level<0>().theta), host<P>(s.template level<1>().theta)};
}

}  // namespace cuda_test
