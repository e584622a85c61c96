// SPDX-License-Identifier: MIT
// Convolution and pooling: their forward maps against direct loops, and networks built from
// them (strides, padding, max and average pooling, every activation) with every exact
// product against central differences; the LeNet-5 shape on 28x28 images.
#include <doctest/doctest.h>

#include <bilevel/learners/sequential.hpp>

#include "batches.hpp"
#include "derivative_checks.hpp"

namespace {
using P = test::P64;
using namespace bilevel::learners;
using M = P::matrix;

}  // namespace

TEST_CASE("conv2d: im2col forward equals direct convolution, with stride and padding") {
  const geometry in{5, 6, 2};
  const std::size_t batch = 2, k = 3, stride = 2, pad = 1, cout = 3;
  const conv2d_layer<P> conv(in, cout, k, stride, pad, 0);
  CHECK(conv.out == geometry{3, 3, 3});
  const auto theta = test::device<P>(test::random_vector(conv.num_parameters(), 1));
  M x;
  P::reshape(P::matrix_from_host(batch, in.features(), test::random_vector(batch * in.features(), 2)),
             batch * in.pixels(), in.channels, x);
  M y;
  layer_cache<P> c;
  conv.forward(theta, x, batch, y, c);
  for (std::size_t b = 0; b < batch; ++b)
    for (std::size_t oh = 0; oh < 3; ++oh)
      for (std::size_t ow = 0; ow < 3; ++ow)
        for (std::size_t co = 0; co < cout; ++co) {
          double s = theta[long(k * k * in.channels * cout + co)];  // bias
          for (std::size_t kh = 0; kh < k; ++kh)
            for (std::size_t kw = 0; kw < k; ++kw)
              for (std::size_t ci = 0; ci < in.channels; ++ci) {
                const long ih = long(oh * stride + kh) - long(pad), iw = long(ow * stride + kw) - long(pad);
                if (ih < 0 || iw < 0 || ih >= long(in.height) || iw >= long(in.width)) continue;
                const double w = theta[long(((kh * k + kw) * in.channels + ci) * cout + co)];
                s += w * x(long((b * in.height + std::size_t(ih)) * in.width + std::size_t(iw)), long(ci));
              }
          CHECK(y(long((b * 3 + oh) * 3 + ow), long(co)) == doctest::Approx(s).epsilon(1e-12));
        }
}

TEST_CASE("pooling: max and average forward equal direct loops") {
  const geometry in{4, 6, 2};
  const std::size_t batch = 2;
  M x;
  P::reshape(P::matrix_from_host(batch, in.features(), test::random_vector(batch * in.features(), 3)),
             batch * in.pixels(), in.channels, x);
  for (auto kind : {pooling::max, pooling::average}) {
    const pool2d_layer<P> pool(in, kind, 2, 2);
    CHECK(pool.out == geometry{2, 3, 2});
    M y;
    layer_cache<P> c;
    pool.forward(P::zeros(0), x, batch, y, c);
    for (std::size_t b = 0; b < batch; ++b)
      for (std::size_t oh = 0; oh < 2; ++oh)
        for (std::size_t ow = 0; ow < 3; ++ow)
          for (std::size_t ch = 0; ch < 2; ++ch) {
            double mx = -1e300, sum = 0;
            for (std::size_t kh = 0; kh < 2; ++kh)
              for (std::size_t kw = 0; kw < 2; ++kw) {
                const double v = x(long((b * 4 + oh * 2 + kh) * 6 + ow * 2 + kw), long(ch));
                mx = std::max(mx, v);
                sum += v;
              }
            CHECK(y(long((b * 2 + oh) * 3 + ow), long(ch)) == doctest::Approx(kind == pooling::max ? mx : sum / 4));
          }
  }
}

TEST_CASE("cnn: every exact product against central differences") {
  // conv (padded) → tanh → max pool → conv (strided) → sigmoid → average pool → flatten → dense
  const std::vector<layer::spec> specs = {layer::conv{3, 3, 1, 1}, layer::act{activation::tanh}, layer::max_pool{2},
                                          layer::conv{4, 2, 1, 0},  layer::act{activation::sigmoid},
                                          layer::avg_pool{2},       layer::flatten{},
                                          layer::dense{3}};
  SUBCASE("unweighted") {
    const sequential<P> net({6, 6, 2}, specs);
    test::check_learner_derivatives(net, test::host<P>(net.initial_parameters(4)), {}, test::random_batch<P>(3, 72, 3, 5), 1e-6);
  }
  SUBCASE("per-sample weights, relu, strided padded convolution") {
    const sequential<P, sample_weights> net(
        {7, 7, 1}, {layer::conv{2, 3, 2, 1}, layer::act{activation::relu}, layer::flatten{}, layer::dense{3}},
        loss_kind::cross_entropy, sample_weights{3});
    test::check_learner_derivatives(net, test::host<P>(net.initial_parameters(6)), {{0.5, 1.0, 1.5}},
                                    test::random_batch<P>(3, 49, 3, 8), 1e-6);
  }
}

TEST_CASE("cnn: LeNet-5 on 28x28 has the classic 61,706 parameters and trains a step") {
  const sequential<P> lenet({28, 28, 1}, {layer::conv{6, 5, 1, 2}, layer::act{activation::relu}, layer::max_pool{2},
                                          layer::conv{16, 5}, layer::act{activation::relu}, layer::max_pool{2},
                                          layer::flatten{}, layer::dense{120}, layer::act{activation::relu},
                                          layer::dense{84}, layer::act{activation::relu}, layer::dense{10}});
  CHECK(lenet.num_parameters() == 61706);
  const auto b = test::random_batch<P>(4, 784, 10, 9);
  auto theta = lenet.initial_parameters(1);
  P::vector g;
  const double before = lenet.gradient(theta, {}, b, g);
  theta -= 1e-4 * g;  // a small step along −∇ must lower the loss
  CHECK(lenet.loss(theta, {}, b) < before);
}

TEST_CASE("sequential: shape errors are named") {
  CHECK_THROWS_WITH_AS(sequential<P>({4, 4, 1}, {layer::conv{2, 3}}), doctest::Contains("end with flatten and dense"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(sequential<P>({4, 4, 1}, {layer::dense{3}}), doctest::Contains("flatten it first"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(sequential<P>({4, 4, 1}, {layer::conv{2, 7}}), doctest::Contains("does not fit a 4x4 input"),
                       std::invalid_argument);
}
