// SPDX-License-Identifier: MIT
// The papers' networks on the CUDA policy: a CIFAR ResNet (options A and B), a wide ResNet
// with dropout, the DARTS supernet (α included) and a discrete DARTS network, every exact
// product against central differences computed on the device; the same small shapes as the
// CPU suite's tests/test_networks.cpp.
#include <doctest/doctest.h>

#include <bilevel/learners/networks/network_design.hpp>
#include <bilevel/policy/cuda.hpp>

#include "derivatives.hpp"

namespace {
using namespace cuda_test;
using namespace bilevel::learners;
using C64 = bilevel::policy::cuda<double>;

std::vector<double> weights_near_one(std::size_t n, unsigned seed) {
  auto w = random_vector(n, seed, 0.5);
  for (auto& x : w) x += 1.0;
  return w;
}
darts_space_options tiny_space() {
  return {.input = {4, 4, 1}, .classes = 3, .cells = 3, .channels = 1, .nodes = 2, .stem_multiplier = 1,
          .nonlinearity = activation::tanh};
}
}  // namespace

// Tolerances as the CPU suite's: 1e-6 for networks (no ReLU kink or max-pool tie within h
// of these random points; one crossed would give an O(1) error).
TEST_CASE("cuda networks<double>: ResNets, every product against central differences on the device") {
  using P = C64;
  for (auto shortcut : {resnet_shortcut::a_subsample_pad, resnet_shortcut::b_projection}) {
    CAPTURE(int(shortcut));
    const resnet_options o{.input = {6, 6, 1}, .classes = 3, .depth = 8, .width = 2, .shortcut = shortcut};
    const sequential<P, sample_weights> net(o.input, resnet<P>(o), loss_kind::cross_entropy, sample_weights{4});
    check_learner_derivatives(net, host<P>(net.initial_parameters(3)), {weights_near_one(4, 5)},
                              random_batch<P>(4, 36, 3, 6), 1e-6);
  }
  const wide_resnet_options w{.input = {4, 4, 1}, .classes = 3, .depth = 10, .widen = 1, .width = 2, .dropout = 0.3};
  const sequential<P> wide(w.input, wide_resnet<P>(w));
  check_learner_derivatives(wide, host<P>(wide.initial_parameters(4)), {}, random_batch<P>(4, 16, 3, 7), 1e-6);
}

TEST_CASE("cuda networks<double>: the DARTS supernet and a discrete DARTS network") {
  using P = C64;
  const auto o = tiny_space();
  const sequential<P, sample_weights> net(o.input, darts_supernet<P>(o), loss_kind::cross_entropy, sample_weights{3});
  check_learner_derivatives(net, host<P>(net.initial_parameters(2)),
                            {weights_near_one(3, 3), random_vector(o.arch_size(), 4, 0.5)}, random_batch<P>(3, 16, 3, 5),
                            1e-6);
  using dp = darts_primitive;
  const darts_genotype g{{{dp::sep_conv_3x3, 0}, {dp::dil_conv_3x3, 0}, {dp::skip_connect, 2}, {dp::avg_pool_3x3, 0}},
                         {{dp::max_pool_3x3, 0}, {dp::skip_connect, 1}, {dp::sep_conv_5x5, 2}, {dp::none, 1}},
                         {2, 3},
                         {2, 3}};
  const sequential<P> discrete(o.input, darts_network<P>(g, o));
  check_learner_derivatives(discrete, host<P>(discrete.initial_parameters(6)), {}, random_batch<P>(3, 16, 3, 8), 1e-6);
}
