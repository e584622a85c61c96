// SPDX-License-Identifier: MIT
// The optimizers' update, VJP and JVP as one fused element-wise pass (zip_apply, the Eigen
// policy) against the composed BLAS-1 form (the same policy with zip_apply hidden, as a policy
// without the primitive runs it), on the parameter count of the 784-256-128-10 MLP.
//
//   build/bench/bench_optimizers --benchmark_repetitions=5 --benchmark_report_aggregates_only
//
// On a device each composed call is a kernel launch; on the CPU the fused pass saves memory
// traffic (one read and write of each vector instead of one per call). Nothing here is timed
// by CI.
#include <benchmark/benchmark.h>

#include <bilevel/optim/adam.hpp>
#include <bilevel/optim/sgd.hpp>
#include <bilevel/policy/eigen.hpp>

#include <random>
#include <vector>
#if defined(__SSE__)
#include <xmmintrin.h>
#endif

namespace {

struct composed : bilevel::policy::eigen<float> {
  template <class F, class... V>
  static void zip_apply(F, V&...) = delete;
};

constexpr std::size_t parameters = 784 * 256 + 256 + 256 * 128 + 128 + 128 * 10 + 10;

template <class P>
typename P::vector random(unsigned seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> u(-1, 1);
  std::vector<float> h(parameters);
  for (auto& x : h) x = u(gen);
  return P::from_host(h);
}

enum class pass { step, vjp, jvp };

template <class O>
void run(benchmark::State& state, const O& o, pass which) {
  using P = typename O::policy;
#if defined(__SSE__)
  _mm_setcsr(_mm_getcsr() | 0x8040);  // flush denormals: the repeated adjoints decay towards them
#endif
  auto theta = random<P>(1), g = random<P>(2), t = random<P>(3);
  auto s = o.init(theta);
  for (auto& b : s.buffers) b = random<P>(4);
  if (s.buffers.size() > 1) s.buffers[1] = P::from_host(std::vector<float>(parameters, 0.5f));  // Adam's v > 0
  auto adj = s.zeros_like();
  typename P::vector out;
  for (auto _ : state) {
    if (which == pass::step) o.step(theta, s, g);
    else if (which == pass::vjp) o.vjp(theta, s, g, t, adj, out);
    else o.jvp(theta, s, g, t, adj, g);
    benchmark::DoNotOptimize(theta.data());
    benchmark::DoNotOptimize(t.data());
  }
  state.SetItemsProcessed(std::int64_t(state.iterations()) * std::int64_t(parameters));
}

template <class P>
bilevel::optim::sgd<P> sgd() {
  return {.lr = 1e-3, .momentum = 0.9, .weight_decay = 5e-4, .nesterov = true};
}
template <class P>
bilevel::optim::adam<P> adam() {
  return {.lr = 1e-3, .weight_decay = 5e-4};
}

void sgd_fused(benchmark::State& s, pass p) { run(s, sgd<bilevel::policy::eigen<float>>(), p); }
void sgd_composed(benchmark::State& s, pass p) { run(s, sgd<composed>(), p); }
void adam_fused(benchmark::State& s, pass p) { run(s, adam<bilevel::policy::eigen<float>>(), p); }
void adam_composed(benchmark::State& s, pass p) { run(s, adam<composed>(), p); }

}  // namespace

BENCHMARK_CAPTURE(sgd_fused, step, pass::step);
BENCHMARK_CAPTURE(sgd_composed, step, pass::step);
BENCHMARK_CAPTURE(sgd_fused, vjp, pass::vjp);
BENCHMARK_CAPTURE(sgd_composed, vjp, pass::vjp);
BENCHMARK_CAPTURE(sgd_fused, jvp, pass::jvp);
BENCHMARK_CAPTURE(sgd_composed, jvp, pass::jvp);
BENCHMARK_CAPTURE(adam_fused, step, pass::step);
BENCHMARK_CAPTURE(adam_composed, step, pass::step);
BENCHMARK_CAPTURE(adam_fused, vjp, pass::vjp);
BENCHMARK_CAPTURE(adam_composed, vjp, pass::vjp);
BENCHMARK_CAPTURE(adam_fused, jvp, pass::jvp);
BENCHMARK_CAPTURE(adam_composed, jvp, pass::jvp);
