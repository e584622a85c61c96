// SPDX-License-Identifier: MIT
// Cost of the MLP and small-CNN learners' products, as ratios to one gradient, and the gradient's GEMM
// efficiency against this machine's GEMM rate measured in the same run.
//
//   build/bench/bench_learners --benchmark_format=json > learners.json
//   python3 bench/ratios.py learners.json
//
// Targets (set from a prototype measured on the same machine): HVP inside a CG loop (value
// pass reused) <= 2x a gradient, full gradient + HVP + mixed pass <= 3x, gradient >= 70% of
// the GEMM rate. Nothing here is timed by CI.
#include <benchmark/benchmark.h>

#include <bilevel/learners/mlp.hpp>
#include <bilevel/learners/sequential.hpp>
#include <bilevel/policy/eigen.hpp>

#include <random>
#include <vector>

namespace {
using namespace bilevel::learners;

constexpr std::size_t batch = 128;
const std::vector<std::size_t> widths = {784, 256, 128, 10};

/// Multiply-adds ×2 of one gradient: forward, weight gradients, and input adjoints of every
/// layer but the first.
double gradient_flops() {
  double f = 0;
  for (std::size_t l = 0; l + 1 < widths.size(); ++l) {
    const double gemm = 2.0 * batch * double(widths[l]) * double(widths[l + 1]);
    f += gemm * (l == 0 ? 2 : 3);
  }
  return f;
}

/// The small CNN: LeNet-5's shape on 28x28 images.
template <class P>
sequential<P, sample_weights> small_cnn() {
  return sequential<P, sample_weights>(
      {28, 28, 1},
      {layer::conv{6, 5, 1, 2}, layer::act{activation::relu}, layer::max_pool{2}, layer::conv{16, 5},
       layer::act{activation::relu}, layer::max_pool{2}, layer::flatten{}, layer::dense{120},
       layer::act{activation::relu}, layer::dense{84}, layer::act{activation::relu}, layer::dense{10}},
      loss_kind::cross_entropy, sample_weights{batch});
}

template <class P, bool cnn = false>
struct fixture {
  sequential<P, sample_weights> net = cnn ? small_cnn<P>()
                                          : mlp<P, sample_weights>(widths, activation::relu, loss_kind::cross_entropy,
                                                                   sample_weights{batch});
  classification_batch<P> b;
  typename P::vector theta[2], v[2], w;
  fixture() {
    std::mt19937_64 gen(1);
    std::uniform_real_distribution<double> u(0, 1);
    std::vector<typename P::scalar> x(batch * 784), t(batch * widths.back(), 0);
    for (auto& e : x) e = typename P::scalar(u(gen));
    for (std::size_t i = 0; i < batch; ++i) {
      t[i * widths.back() + i % widths.back()] = 1;
      b.labels.push_back(int(i % widths.back()));
      b.ids.push_back(i);
    }
    b.x = P::matrix_from_host(batch, widths[0], x);
    b.targets = P::matrix_from_host(batch, widths.back(), t);
    for (int k = 0; k < 2; ++k) {
      theta[k] = net.initial_parameters(std::uint64_t(k + 1));
      v[k] = net.initial_parameters(std::uint64_t(k + 10));
    }
    w = P::zeros(batch);
    P::fill(w, 1);
  }
};

template <class S, bool cnn = false>
void gradient(benchmark::State& state) {
  using P = bilevel::policy::eigen<S>;
  fixture<P, cnn> f;
  const typename P::vector* in[] = {&f.w};
  typename P::vector g;
  int k = 0;
  for (auto _ : state) {  // alternate θ so that no call is served from the forward cache
    f.net.gradient(f.theta[k ^= 1], in, f.b, g);
    benchmark::DoNotOptimize(g.data());
  }
  if (!cnn) state.counters["FLOP/s"] = benchmark::Counter(gradient_flops(), benchmark::Counter::kIsIterationInvariantRate);
}

template <class S, bool cnn = false>
void hvp_in_cg(benchmark::State& state) {
  using P = bilevel::policy::eigen<S>;
  fixture<P, cnn> f;
  const typename P::vector* in[] = {&f.w};
  typename P::vector g, hv;
  f.net.gradient(f.theta[0], in, f.b, g);
  int k = 0;
  for (auto _ : state) {  // fixed θ, a new direction each call: what CG and Neumann do
    f.net.hvp(f.theta[0], in, f.b, f.v[k ^= 1], hv);
    benchmark::DoNotOptimize(hv.data());
  }
}

template <class S, bool cnn = false>
void full_pass(benchmark::State& state) {
  using P = bilevel::policy::eigen<S>;
  fixture<P, cnn> f;
  const typename P::vector* in[] = {&f.w};
  typename P::vector g, hv, mixed;
  int k = 0;
  for (auto _ : state) {  // a new θ each time: gradient + HVP + mixed product from scratch
    k ^= 1;
    f.net.gradient(f.theta[k], in, f.b, g);
    f.net.hvp(f.theta[k], in, f.b, f.v[k], hv);
    f.net.mixed_vjp(f.theta[k], in, f.b, 0, f.v[k], mixed);
    benchmark::DoNotOptimize(mixed.data());
  }
}

/// The ceiling: the policy's GEMM on the first layer's forward shape (the largest GEMM of
/// the gradient).
template <class S>
void gemm_rate(benchmark::State& state) {
  using P = bilevel::policy::eigen<S>;
  const auto a = P::matrix_zeros(batch, widths[0]), b = P::matrix_zeros(widths[0], widths[1]);
  typename P::matrix c;
  for (auto _ : state) {
    P::gemm(S(1), a, false, b, false, S(0), c);
    benchmark::DoNotOptimize(c.data());
  }
  state.counters["FLOP/s"] = benchmark::Counter(2.0 * batch * widths[0] * widths[1],
                                                benchmark::Counter::kIsIterationInvariantRate);
}
}  // namespace

BENCHMARK(gradient<float>)->Name("mlp_gradient/float");
BENCHMARK(hvp_in_cg<float>)->Name("mlp_hvp_in_cg/float");
BENCHMARK(full_pass<float>)->Name("mlp_full_pass/float");
BENCHMARK(gemm_rate<float>)->Name("gemm_rate/float");
BENCHMARK(gradient<double>)->Name("mlp_gradient/double");
BENCHMARK(hvp_in_cg<double>)->Name("mlp_hvp_in_cg/double");
BENCHMARK(full_pass<double>)->Name("mlp_full_pass/double");
BENCHMARK(gemm_rate<double>)->Name("gemm_rate/double");
BENCHMARK(gradient<float, true>)->Name("cnn_gradient/float");
BENCHMARK(hvp_in_cg<float, true>)->Name("cnn_hvp_in_cg/float");
BENCHMARK(full_pass<float, true>)->Name("cnn_full_pass/float");
BENCHMARK(gradient<double, true>)->Name("cnn_gradient/double");
BENCHMARK(hvp_in_cg<double, true>)->Name("cnn_hvp_in_cg/double");
BENCHMARK(full_pass<double, true>)->Name("cnn_full_pass/double");
