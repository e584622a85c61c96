// SPDX-License-Identifier: MIT
#pragma once
// The work the GPU benchmark times, written once against the policy concept and instantiated
// with cuda<float> (learners_gpu.cu) and eigen<float> (cpu_side.cpp, the only translation
// unit that sees Eigen): a gradient, a Hessian-vector product and one Meta-Weight-Net
// look-ahead step (the hypergradient through one virtual SGD step, then the real step) of the
// MLP 784-256-128-10 and of the small CNN (LeNet-5's shape), on random 28x28 images; and one
// outer iteration of each of the other methods (L2RW, the teacher, LFM, LFM-CW, DARTS in both
// orders) on the same images.
#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include <bilevel/core/solver.hpp>
#include <bilevel/data/dataset.hpp>
#include <bilevel/data/generator.hpp>
#include <bilevel/hypergrad/first_order.hpp>
#include <bilevel/methods/darts.hpp>
#include <bilevel/methods/deep_interactions.hpp>
#include <bilevel/methods/l2rw.hpp>
#include <bilevel/methods/learning_from_mistakes.hpp>
#include <bilevel/methods/lfm_class_weighting.hpp>
#include <bilevel/learners/classification_batch.hpp>
#include <bilevel/learners/loss_weighting_net.hpp>
#include <bilevel/learners/sequential.hpp>
#include <bilevel/methods/meta_weight_net.hpp>

namespace gpu_bench {

enum class model { mlp, cnn };
inline const char* name(model m) { return m == model::mlp ? "MLP 784-256-128-10" : "CNN (LeNet-5 shape)"; }

/// The samples' shape: 784 features for the MLP, a 28×28 single-channel image for the CNN.
inline bilevel::learners::geometry input(model m) {
  return m == model::mlp ? bilevel::learners::geometry{1, 1, 784} : bilevel::learners::geometry{28, 28, 1};
}
inline std::vector<bilevel::learners::layer::spec> layers(model m) {
  using namespace bilevel::learners;
  if (m == model::mlp)
    return {layer::dense{256}, layer::act{activation::relu}, layer::dense{128}, layer::act{activation::relu},
            layer::dense{10}};
  return {layer::conv{6, 5, 1, 2}, layer::act{activation::relu}, layer::max_pool{2}, layer::conv{16, 5},
          layer::act{activation::relu}, layer::max_pool{2}, layer::flatten{}, layer::dense{120},
          layer::act{activation::relu}, layer::dense{84}, layer::act{activation::relu}, layer::dense{10}};
}

/// The forward pass's GEMMs as (m, n, k): C (m×n) = A (m×k) B (k×n), a convolution as its
/// im2col product. A gradient runs these, the weight gradients (k×n = (k×m)(m×n)) and the
/// input adjoints of every layer but the first ((m×k) = (m×n)(n×k)).
struct gemm_shape {
  std::size_t m, n, k;
};
inline std::vector<gemm_shape> forward_gemms(model m, std::size_t batch) {
  if (m == model::mlp) return {{batch, 256, 784}, {batch, 128, 256}, {batch, 10, 128}};
  return {{batch * 28 * 28, 6, 25}, {batch * 10 * 10, 16, 150}, {batch, 120, 400}, {batch, 84, 120}, {batch, 10, 84}};
}
/// 2·m·n·k for each GEMM of a gradient: the arithmetic no implementation can skip.
inline double gradient_flops(model m, std::size_t batch) {
  const auto g = forward_gemms(m, batch);
  double f = 0;
  for (std::size_t l = 0; l < g.size(); ++l) f += 2.0 * double(g[l].m * g[l].n * g[l].k) * (l == 0 ? 2 : 3);
  return f;
}

/// Random images in [0, 1) with random labels: timing does not depend on the values.
inline std::shared_ptr<const bilevel::data::dataset> random_images(std::size_t rows, std::uint64_t seed,
                                                                   std::size_t first_id) {
  std::mt19937_64 gen(seed);
  std::uniform_real_distribution<float> u(0, 1);
  bilevel::data::dataset d;
  d.rows = rows;
  d.cols = 784;
  d.num_classes = 10;
  d.features.resize(rows * 784);
  for (auto& x : d.features) x = u(gen);
  for (std::size_t r = 0; r < rows; ++r) {
    d.labels.push_back(int(gen() % 10));
    d.ids.push_back(first_id + r);
  }
  return std::make_shared<const bilevel::data::dataset>(std::move(d));
}

struct timing {
  double median_ms = 0, p10_ms = 0, p90_ms = 0;
  std::size_t reps = 0;
};
/// Median wall time of f() (with sync() inside the clock, so that queued device work counts)
/// after `warmup` calls, over at least `min_reps` calls and at most `budget_s` seconds.
template <class F, class Sync>
timing time_calls(F&& f, Sync&& sync, double budget_s = 1.5, std::size_t min_reps = 5, std::size_t max_reps = 200,
                  std::size_t warmup = 3) {
  using clock = std::chrono::steady_clock;
  for (std::size_t i = 0; i < warmup; ++i) f();
  sync();
  std::vector<double> ms;
  const auto start = clock::now();
  while (ms.size() < max_reps &&
         (ms.size() < min_reps || std::chrono::duration<double>(clock::now() - start).count() < budget_s)) {
    const auto t0 = clock::now();
    f();
    sync();
    ms.push_back(std::chrono::duration<double, std::milli>(clock::now() - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  return {ms[ms.size() / 2], ms[ms.size() / 10], ms[(ms.size() * 9) / 10], ms.size()};
}

/// What one call asked of the device (the CUDA policy's activity counters; zeros elsewhere).
/// Kernels and cuBLAS calls of a captured step count as captured, launched in graph_launches.
struct call_counts {
  std::size_t kernels = 0, blas_calls = 0, host_waits = 0, graph_launches = 0;
};
template <class P, class F>
call_counts count_one_call(F&& f) {
  if constexpr (requires { P::activity(); }) {
    const auto a = P::activity();
    f();
    const auto b = P::activity();
    return {b.kernels - a.kernels, b.blas_calls - a.blas_calls, b.host_waits - a.host_waits,
            b.graph_launches - a.graph_launches};
  } else {
    return {};
  }
}

/// One model at one batch size: the three timings, and what one call of each asks.
struct workload_times {
  timing gradient, hvp, lookahead_step;
  call_counts gradient_calls, hvp_calls, lookahead_step_calls;
  /// The same step with deferred checks (failure_policy::check_every = 100): the counts of a
  /// step between two reads, the time with the read amortised over its 100 steps.
  timing lookahead_step_deferred;
  call_counts lookahead_step_deferred_calls;
  /// And captured as one CUDA graph a step (solver::capture_steps; device back ends only).
  timing lookahead_step_captured;
  call_counts lookahead_step_captured_calls;
  double check = 0;  ///< a loss, printed so that both back ends can be seen to compute the same thing
};

/// Solver s's outer iteration with each one captured as a CUDA graph (after the probe): its
/// time, and what one iteration that does not end in the deferred checks' read asks. s must
/// have deferred checks (every `check_every`); `what` names it if it is not captured.
template <class P, class Solver, class Sync>
void time_captured(Solver& s, Sync sync, std::size_t check_every, const std::string& what, timing& t,
                   call_counts& calls) {
  s.capture_steps();
  s.iterate();  // the probe
  t = time_calls([&] { s.iterate(); }, sync, 2.0, 5, 100, 2);
  if ((s.iteration() + 1) % check_every == 0) s.iterate();
  calls = count_one_call<P>([&] { s.iterate(); });
  if (!s.capture_report().fallback.empty())
    throw std::runtime_error(what + " was not captured: " + s.capture_report().fallback);
}

template <class P, class Sync>
workload_times measure(model m, std::size_t batch, Sync sync) {
  using namespace bilevel::learners;
  using V = bilevel::vector_t<P>;
  workload_times out;
  const std::size_t hidden = 100;  // Meta-Weight-Net's V: 1-100-1
  const sequential<P, loss_weighting_net> net(input(m), layers(m), loss_kind::cross_entropy, loss_weighting_net{hidden});
  const auto train = random_images(4 * batch, 1, 0), validation = random_images(2 * batch, 2, 1u << 20);
  std::vector<std::size_t> rows(batch);
  for (std::size_t i = 0; i < batch; ++i) rows[i] = i;
  const auto b = make_batch<P>(*train, rows);
  const V theta[2] = {net.initial_parameters(1), net.initial_parameters(2)};
  const V v = net.initial_parameters(3);
  const V phi = loss_weighting_net{hidden}.initial_parameters<P>(4);
  const V* in[] = {&phi};
  V g, hv;
  int k = 0;
  // Alternate θ so that no gradient is served from the learner's forward cache.
  out.gradient = time_calls([&] { net.gradient(theta[k ^= 1], in, b, g); }, sync);
  out.gradient_calls = count_one_call<P>([&] { net.gradient(theta[k ^= 1], in, b, g); });
  out.check = net.gradient(theta[0], in, b, g);
  // A fixed θ and a new direction: what CG and Neumann iterations do.
  out.hvp = time_calls([&] { net.hvp(theta[0], in, b, v, hv); }, sync);
  out.hvp_calls = count_one_call<P>([&] { net.hvp(theta[0], in, b, v, hv); });
  auto s = bilevel::methods::meta_weight_net<P>(
      train, validation,
      {.layers = layers(m), .input = input(m), .batch = batch, .validation_batch = batch, .hidden = hidden, .seed = 1});
  out.lookahead_step = time_calls([&] { s.iterate(); }, sync, 2.0, 5, 100, 2);
  out.lookahead_step_calls = count_one_call<P>([&] { s.iterate(); });
  constexpr std::size_t check_every = 100;
  s.on_failure({.check_every = check_every});
  s.flush_checks();
  out.lookahead_step_deferred = time_calls([&] { s.iterate(); }, sync, 2.0, 5, 100, 2);
  if ((s.iteration() + 1) % check_every == 0) s.iterate();  // count a step that does not end in the read
  out.lookahead_step_deferred_calls = count_one_call<P>([&] { s.iterate(); });
  if constexpr (bilevel::has_graph_capture<P>)
    time_captured<P>(s, sync, check_every, "the MWN step", out.lookahead_step_captured,
                     out.lookahead_step_captured_calls);
  return out;
}

// ---- one outer iteration of each of the other methods ----

enum class method { l2rw, teacher, lfm, lfm_class_weighting, darts_first_order, darts_second_order };
inline constexpr method all_methods[] = {method::l2rw, method::teacher, method::lfm, method::lfm_class_weighting,
                                         method::darts_first_order, method::darts_second_order};
inline const char* name(method k) {
  switch (k) {
    case method::l2rw: return "L2RW";
    case method::teacher: return "deep-interactions teacher";
    case method::lfm: return "LFM (3 levels)";
    case method::lfm_class_weighting: return "LFM-CW (3 levels, +64 synthetic rows)";
    case method::darts_first_order: return "DARTS, first order";
    case method::darts_second_order: return "DARTS, second order";
  }
  return "?";
}
/// Example 04's search space: a 64-wide MLP whose three hidden edges each mix
/// {linear+relu, linear+tanh, skip, zero}.
inline std::vector<bilevel::learners::layer::spec> search_space() {
  using namespace bilevel::learners;
  constexpr std::size_t width = 64;
  std::vector<layer::spec> s = {layer::dense{width}, layer::act{activation::relu}};
  for (int e = 0; e < 3; ++e)
    s.push_back(layer::mixed{{layer::candidate{{layer::dense{width}, layer::act{activation::relu}}},
                              layer::candidate{{layer::dense{width}, layer::act{activation::tanh}}}, layer::skip(),
                              layer::zero_op()}});
  s.push_back(layer::dense{10});
  return s;
}

struct method_times {
  timing iteration;
  call_counts calls;  ///< of one iteration
  /// The same with deferred checks (check_every = 100), each iteration captured as one CUDA
  /// graph (device back ends only).
  timing captured;
  call_counts captured_calls;
};
/// The median time of one outer iteration (every level's block, in the method's schedule) of
/// method k, its classifiers MLP 784-256-128-10 (DARTS: search_space()), at `batch`.
template <class P, class Sync>
method_times measure_method(method k, std::size_t batch, Sync sync) {
  namespace m = bilevel::methods;
  const std::vector<std::size_t> widths = {784, 256, 128, 10};
  const auto train = random_images(4 * batch, 1, 0), validation = random_images(2 * batch, 2, 1u << 20);
  auto time_solver = [&](auto s) {
    method_times t;
    t.iteration = time_calls([&] { s.iterate(); }, sync, 2.0, 5, 100, 2);
    t.calls = count_one_call<P>([&] { s.iterate(); });
    if constexpr (bilevel::has_graph_capture<P>) {
      s.on_failure({.check_every = 100});
      time_captured<P>(s, sync, 100, name(k), t.captured, t.captured_calls);
    }
    return t;
  };
  switch (k) {
    case method::l2rw:
      return time_solver(m::l2rw<P>(train, validation, {.widths = widths, .batch = batch, .validation_batch = batch}));
    case method::teacher:
      return time_solver(
          m::deep_interactions<P>(train, validation, {.widths = widths, .batch = batch, .validation_batch = batch}));
    case method::lfm:
      return time_solver(m::learning_from_mistakes_reweighting<P>(
          train, validation, {.widths = widths, .batch = batch, .validation_batch = batch}));
    case method::lfm_class_weighting: {
      auto generator = std::make_shared<const bilevel::data::pca_gaussian_generator>(*train, 16, 1);
      return time_solver(m::lfm_class_weighting<P>(
          train, validation, generator,
          {.widths = widths, .batch = batch, .synthetic_per_batch = 64, .validation_batch = batch}));
    }
    case method::darts_first_order:
      return time_solver(m::darts<P>(input(model::mlp), search_space(), train, validation,
                                     {.batch = batch, .validation_batch = batch}, bilevel::hypergrad::first_order{}));
    case method::darts_second_order:
      return time_solver(m::darts<P>(input(model::mlp), search_space(), train, validation,
                                     {.batch = batch, .validation_batch = batch}));
  }
  return {};
}

}  // namespace gpu_bench
