// SPDX-License-Identifier: MIT
// The cost of ONE hypergradient of each strategy, in units of one gradient of the lower
// learner measured in the same run, next to the count the algorithm predicts.
//
//   build/bench/bench_strategies --benchmark_repetitions=3 --benchmark_report_aggregates_only=true
//
// The problem: data reweighting on synthetic data. Lower level: an MLP classifier (ReLU,
// cross-entropy, float, Eigen policy) whose loss weights each sample by its entry in a table
// of per-sample weights (learners::sample_weights), SGD lr 0.1 with momentum 0.9; upper level:
// the table itself, its objective the validation loss of the classifier's solution
// (learners::solution_loss). Batches of 128 samples of 784 features in 10 classes; the
// training set is two batches (256 samples, so the table has 256 entries) and so is the
// validation set. Each sampler alternates between its two batches: consecutive draws always
// differ, so the learner's value-pass cache (learners/sequential.hpp) never carries work from
// one timed hypergradient to the next. Sizes: 784-64-10, 784-256-128-10, 784-1024-256-10.
//
// What is timed. Before the timed loop (untimed) the lower level takes one block of T = 5
// optimizer steps (solver::step_level(0)); the unrolled strategies record them. The timed
// region is then `solver.hypergradient(1)` alone: the lower strategy's response, the upper
// level's validation loss and gradient at it, and the strategy's vjp, including the batch
// copies the samplers hand out. forward_mode is the exception: its work is done while the
// steps are taken (one tangent per table entry pushed through every step), so its timed
// region is the block of T steps plus the hypergradient, and its figure includes the T plain
// gradients of the steps themselves.
//
// Counters. grad_equiv = time / the time of one lower gradient at the same size (measured
// once per size, the first time a benchmark of that size runs, before its timed loop: the
// median of 31 calls). theory = the calls the code makes, priced as the textbook does
// (gradient 1, HVP 2, mixed product 2; formulas below, next to each strategy). theory_gemm =
// the network passes those calls really run, given the learner's cache, priced by their GEMM
// multiply-adds (layers/affine.hpp) relative to one gradient's. gradients / hvps / mixed /
// iterations / residual = the lower strategy's hypergradient_report of the last call, the
// counts as the strategy itself records them.
#include <benchmark/benchmark.h>

#include <bilevel/eigen.hpp>
#include <bilevel/learners/mlp.hpp>
#include <bilevel/learners/solution_loss.hpp>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

namespace {

using P = bilevel::policy::eigen<float>;
using batch = bilevel::learners::classification_batch<P>;
using widths_t = std::vector<std::size_t>;
namespace hg = bilevel::hypergrad;
namespace learners = bilevel::learners;

constexpr std::size_t batch_size = 128, features = 784, classes = 10;
constexpr std::size_t batches_per_set = 2;  // the fewest for which consecutive draws differ
constexpr std::size_t training_samples = batches_per_set * batch_size;
constexpr std::size_t recorded_steps = 5;  // T

const std::vector<widths_t> sizes = {{features, 64, classes}, {features, 256, 128, classes},
                                     {features, 1024, 256, classes}};

std::string size_name(const widths_t& widths) {
  std::string name;
  for (std::size_t w : widths) name += (name.empty() ? "" : "-") + std::to_string(w);
  return name;
}

/// Uniform features and random labels; ids first_id, first_id + 1, ... (the weight table is
/// keyed by id).
batch synthetic_batch(std::size_t first_id, std::uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::uniform_real_distribution<float> feature(0.0f, 1.0f);
  std::uniform_int_distribution<int> label(0, int(classes) - 1);
  std::vector<float> x(batch_size * features), targets(batch_size * classes, 0.0f);
  for (auto& e : x) e = feature(gen);
  batch b;
  for (std::size_t i = 0; i < batch_size; ++i) {
    b.labels.push_back(label(gen));
    b.ids.push_back(first_id + i);
    targets[i * classes + std::size_t(b.labels.back())] = 1.0f;
  }
  b.x = P::matrix_from_host(batch_size, features, x);
  b.targets = P::matrix_from_host(batch_size, classes, targets);
  return b;
}

std::shared_ptr<const std::vector<batch>> synthetic_set(std::uint64_t seed) {
  auto set = std::make_shared<std::vector<batch>>();
  for (std::size_t k = 0; k < batches_per_set; ++k) set->push_back(synthetic_batch(k * batch_size, seed + k));
  return set;
}

/// A level's sampler: the set's batches in turn, so that no two consecutive draws are equal.
class alternating_batches {
 public:
  explicit alternating_batches(std::shared_ptr<const std::vector<batch>> set) : set_(std::move(set)) {}
  batch operator()() { return (*set_)[next_++ % set_->size()]; }

 private:
  std::shared_ptr<const std::vector<batch>> set_;
  std::size_t next_ = 0;
};

P::vector unit_weights() {
  P::vector w = P::zeros(training_samples);
  P::fill(w, 1.0f);
  return w;
}

learners::mlp<P, learners::sample_weights> classifier(const widths_t& widths) {
  return learners::mlp<P, learners::sample_weights>(widths, learners::activation::relu,
                                                    learners::loss_kind::cross_entropy,
                                                    learners::sample_weights{training_samples});
}

/// The two-level problem with `strategy` on the classifier.
template <class Strategy>
auto make_problem(const widths_t& widths, Strategy strategy) {
  auto net = classifier(widths);
  auto theta0 = net.initial_parameters(1);
  auto lower = bilevel::make_level("classifier", std::move(net), bilevel::optim::sgd<P>{.lr = 0.1, .momentum = 0.9},
                                   strategy, std::move(theta0), alternating_batches(synthetic_set(100)))
                   .reading({1})
                   .steps_per_iteration(recorded_steps);
  auto upper = bilevel::make_level("sample_weights",
                                   learners::solution_loss<learners::mlp<P>>(learners::mlp<P>(widths), training_samples),
                                   bilevel::optim::sgd<P>{.lr = 0.1}, hg::first_order{}, unit_weights(),
                                   alternating_batches(synthetic_set(200)))
                   .reading({0});
  return bilevel::solver(std::move(lower), std::move(upper));
}

/// The lower learner alone, for the unit: one training batch, two points and two directions,
/// so that alternating between them defeats the value and tangent caches.
struct lower_learner {
  learners::mlp<P, learners::sample_weights> net;
  batch b = synthetic_batch(0, 100);
  P::vector theta[2], direction[2], weights = unit_weights();
  const P::vector* inputs[1] = {&weights};

  explicit lower_learner(const widths_t& widths) : net(classifier(widths)) {
    for (int k = 0; k < 2; ++k) {
      theta[k] = net.initial_parameters(std::uint64_t(k + 1));
      direction[k] = net.initial_parameters(std::uint64_t(k + 10));
    }
  }
  lower_learner(const lower_learner&) = delete;  // `inputs` points into the object
  lower_learner& operator=(const lower_learner&) = delete;
  void gradient(int k, P::vector& g) const { net.gradient(theta[k], inputs, b, g); }
  void hvp(int point, int along, P::vector& hv) const { net.hvp(theta[point], inputs, b, direction[along], hv); }
};

/// Seconds of one lower gradient at this size: measured once (the median of 31 calls after
/// 5 warm-up calls) and kept for every benchmark of the size.
double gradient_seconds(const widths_t& widths) {
  static std::map<widths_t, double> measured;
  if (auto it = measured.find(widths); it != measured.end()) return it->second;
  const lower_learner f(widths);
  P::vector g;
  int k = 0;
  for (int i = 0; i < 5; ++i) f.gradient(k ^= 1, g);
  std::vector<double> seconds;
  for (int i = 0; i < 31; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    f.gradient(k ^= 1, g);
    seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    benchmark::DoNotOptimize(g.data());
  }
  std::nth_element(seconds.begin(), seconds.begin() + 15, seconds.end());
  return measured[widths] = seconds[15];
}

/// Calls a strategy makes, priced as the textbook prices them: gradient 1, HVP 2 (a forward
/// and a backward pass, then their tangents), mixed product 2.
struct calls {
  double gradients = 0, hvps = 0, mixed = 0;
  [[nodiscard]] double in_gradients() const { return gradients + 2 * hvps + 2 * mixed; }
};

/// Network passes those calls really run: a value pass and a backward pass are cached by the
/// learner (keyed on θ, batch and weights), and so is the last tangent pass along a direction,
/// so repeated products at one point pay only their tangent passes.
struct passes {
  double forward = 0, backward = 0, tangent_forward = 0, tangent_backward = 0;

  /// In gradients, by GEMM multiply-adds (layers/affine.hpp). With s_0 the first layer's
  /// fan_in·fan_out and s_rest the sum over the others: forward s_0 + s_rest; backward
  /// s_0 + 2 s_rest (no input adjoint for the data); tangent forward s_0 + 2 s_rest (XV + ẊW,
  /// Ẋ = 0 at the data); tangent backward s_0 + 4 s_rest (Xᵀġ + Ẋᵀg, ġWᵀ + gVᵀ).
  [[nodiscard]] double in_gradients(const widths_t& widths) const {
    const double s0 = double(widths[0] * widths[1]);
    double rest = 0;
    for (std::size_t l = 1; l + 1 < widths.size(); ++l) rest += double(widths[l] * widths[l + 1]);
    const double fwd = s0 + rest, bwd = s0 + 2 * rest, tfwd = s0 + 2 * rest, tbwd = s0 + 4 * rest;
    return (forward * fwd + backward * bwd + tangent_forward * tfwd + tangent_backward * tbwd) / (fwd + bwd);
  }
};

struct expected_cost {
  calls textbook;
  passes run;
};

// The formulas, one per benchmark, counted from hypergrad/*.hpp, hypergrad/detail/*.hpp and
// the solver for this problem (the lower level reads one input, the weight table). Every
// hypergradient starts with the upper level's validation loss and gradient at the lower
// level's response: 1 gradient, one forward and one backward pass of the validation MLP.

/// The unit itself, at a new point each call.
const expected_cost gradient_cost{{.gradients = 1}, {.forward = 1, .backward = 1}};
/// An HVP at a new point: value and backward passes, then their tangents.
const expected_cost hvp_cost{{.hvps = 1}, {.forward = 1, .backward = 1, .tangent_forward = 1, .tangent_backward = 1}};
/// An HVP at the point of the previous call along a new direction (what CG and Neumann pay
/// per iteration): the tangent passes only.
const expected_cost hvp_in_solve_cost{{.hvps = 1}, {.tangent_forward = 1, .tangent_backward = 1}};

/// first_order: the validation gradient; the vjp returns zeros. Theory 1.
const expected_cost first_order_cost{{.gradients = 1}, {.forward = 1, .backward = 1}};

/// lookahead, one virtual step: its gradient, the validation gradient at the look-ahead
/// iterate, then the reverse pass over one step: a mixed product at the virtual step's point
/// (its value and backward passes still cached: a tangent forward pass only) and no HVP, the
/// first iterate being a constant. Theory 1 + 1 + 2 = 4.
const expected_cost lookahead_cost{{.gradients = 2, .mixed = 1}, {.forward = 2, .backward = 2, .tangent_forward = 1}};

/// unrolled over the K last recorded steps (K = T = 5 in full, 2 truncated): the validation
/// gradient, then per kept step in reverse a mixed product at that step's point, which must
/// redo its value and backward passes (the tape keeps θ_t, not the activations), and for every
/// step but the first an HVP along the same direction at the same point, which reuses that
/// tangent forward pass. Theory 1 + 2K + 2(K − 1) = 4K − 1.
expected_cost unrolled_cost(std::size_t kept) {
  const double k = double(kept);
  return {{.gradients = 1, .hvps = k - 1, .mixed = k},
          {.forward = 1 + k, .backward = 1 + k, .tangent_forward = k, .tangent_backward = k - 1}};
}

/// implicit_cg and neumann with k iterations (the step given, so no power iterations): the
/// validation gradient; on a new batch, k operator products plus one for the reported true
/// residual (k + 1 HVPs, the first paying the value and backward passes); then one mixed
/// product along the solution x, whose tangent forward pass the residual's HVP along x left in
/// the cache. Theory 1 + 2(k + 1) + 2 = 2k + 5.
///
/// Since the reports state the lower level's stationarity, each also takes the lower gradient
/// at the solve's point and batch, whose value and backward passes the first HVP left in the
/// cache: one more textbook gradient, no more GEMM. Nyström with rank k makes the same calls
/// (k sketch HVPs, one for the residual, one mixed product along the solution).
expected_cost implicit_solve_cost(std::size_t iterations) {
  const double k = double(iterations);
  return {{.gradients = 2, .hvps = k + 1, .mixed = 1},
          {.forward = 2, .backward = 2, .tangent_forward = k + 1, .tangent_backward = k + 1}};
}

/// fixed_point with k iterations: the validation gradient; the lower gradient on a new batch;
/// k iterations of the transposed optimizer step, one HVP each (tangent passes only); then
/// one mixed product along a new direction (a tangent forward pass). Theory 1 + 1 + 2k + 2.
expected_cost fixed_point_cost(std::size_t iterations) {
  const double k = double(iterations);
  return {{.gradients = 2, .hvps = k, .mixed = 1},
          {.forward = 2, .backward = 2, .tangent_forward = k + 1, .tangent_backward = k}};
}

/// forward_mode, timed with the T steps it rides on: per step the step's own gradient, and
/// per table entry (n of them) an HVP along that entry's tangent (tangent passes only, the
/// step's value and backward passes are cached) and a mixed JVP (for sample weights one
/// backward pass with the weights replaced by the unit tangent); then the validation
/// gradient and n dot products. Theory T + 4Tn + 1.
expected_cost forward_mode_cost(std::size_t steps, std::size_t entries) {
  const double t = double(steps), tn = double(steps * entries);
  return {{.gradients = t + 1, .hvps = tn, .mixed = tn},
          {.forward = t + 1, .backward = t + 1 + tn, .tangent_forward = tn, .tangent_backward = tn}};
}

/// finite_difference (DARTS): the virtual step's gradient, the validation gradient, and the
/// mixed product by central differences of the input gradient at θ ± εv: for sample weights
/// that is the per-sample losses, a value pass each, no backward pass. Theory 1 + 1 + 2 = 4.
const expected_cost finite_difference_cost{{.gradients = 4}, {.forward = 4, .backward = 2}};

/// soba: the validation gradient; one HVP along z on a new batch (paying the value and
/// backward passes) and the mixed product along the same z (its tangent forward pass cached).
/// Theory 1 + 2 + 2 = 5.
const expected_cost soba_cost{{.gradients = 1, .hvps = 1, .mixed = 1},
                              {.forward = 2, .backward = 2, .tangent_forward = 1, .tangent_backward = 1}};

/// sama: the validation gradient; the optimizer's VJP of the last recorded step (vector
/// arithmetic); the mixed product by central differences of the input gradient at θ ± εṽ (for
/// sample weights the per-sample losses: a value pass each). Theory 1 + 2 = 3.
const expected_cost sama_cost{{.gradients = 3}, {.forward = 3, .backward = 1}};

/// f2sa and bome: the validation gradient at y; the lower gradient at y; the input gradients
/// at y (the per-sample losses of the value pass just cached) and at θ (a value pass).
/// Theory 1 + 1 + 2 = 4.
const expected_cost penalty_cost{{.gradients = 4}, {.forward = 3, .backward = 2}};

/// zero_order with N pairs and T = 1: the response's virtual step (1 gradient), the validation
/// gradient, and 2N virtual steps from perturbed inputs (a gradient each, at new points).
/// Theory 2 + 2N.
expected_cost zero_order_cost(std::size_t pairs) {
  const double n = double(pairs);
  return {{.gradients = 2 + 2 * n}, {.forward = 2 + 2 * n, .backward = 2 + 2 * n}};
}

/// Runs `body` (the timed region) as the benchmark's loop, then sets the counters. `body`
/// returns the reports of what it computed (none for the plain learner products).
template <class Body>
void time_and_count(benchmark::State& state, const widths_t& widths, const expected_cost& expected, Body body) {
  const double unit = gradient_seconds(widths);  // before the loop: never timed
  std::vector<bilevel::hypergradient_report> reports;
  const auto start = std::chrono::steady_clock::now();
  for (auto _ : state) reports = body();
  // The loop's own wall time (what UseRealTime reports, to the loop's negligible overhead).
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  state.counters["grad_equiv"] = seconds / double(state.iterations()) / unit;
  state.counters["theory"] = expected.textbook.in_gradients();
  state.counters["theory_gemm"] = expected.run.in_gradients(widths);
  if (reports.empty()) return;
  double gradients = 0, hvps = 0, mixed = 0, iterations = 0, residual = 0;
  for (const auto& r : reports) {
    gradients += double(r.gradient_evals);
    hvps += double(r.hvp_evals);
    mixed += double(r.mixed_evals);
    iterations += double(r.iterations);
    residual = std::max(residual, r.residual);
  }
  state.counters["gradients"] = gradients;
  state.counters["hvps"] = hvps;
  state.counters["mixed"] = mixed;
  state.counters["iterations"] = iterations;
  state.counters["residual"] = residual;  // of the last call's solve (0 without one): sane, or diverging?
}

void gradient(benchmark::State& state, const widths_t& widths) {
  const lower_learner f(widths);
  P::vector g;
  int k = 0;
  time_and_count(state, widths, gradient_cost, [&] {
    f.gradient(k ^= 1, g);  // a new point each call: no call is served from the value cache
    benchmark::DoNotOptimize(g.data());
    return std::vector<bilevel::hypergradient_report>{};
  });
}

void hvp(benchmark::State& state, const widths_t& widths) {
  const lower_learner f(widths);
  P::vector hv;
  int k = 0;
  time_and_count(state, widths, hvp_cost, [&] {
    k ^= 1;
    f.hvp(k, k, hv);  // a new point each call
    benchmark::DoNotOptimize(hv.data());
    return std::vector<bilevel::hypergradient_report>{};
  });
}

void hvp_in_solve(benchmark::State& state, const widths_t& widths) {
  const lower_learner f(widths);
  P::vector hv;
  int k = 0;
  f.hvp(0, 0, hv);  // fills the value and backward passes at point 0
  time_and_count(state, widths, hvp_in_solve_cost, [&] {
    f.hvp(0, k ^= 1, hv);  // the same point, a new direction each call
    benchmark::DoNotOptimize(hv.data());
    return std::vector<bilevel::hypergradient_report>{};
  });
}

/// One hypergradient of the upper level, after one untimed block of T lower steps.
template <class Strategy>
void hypergradient(benchmark::State& state, const widths_t& widths, Strategy strategy, const expected_cost& expected) {
  auto s = make_problem(widths, strategy);
  s.step_level(0);
  time_and_count(state, widths, expected, [&] {
    auto result = s.hypergradient(1);
    benchmark::DoNotOptimize(result.gradient.data());
    return std::move(result.reports);
  });
}

/// forward_mode pays during the steps: the block of T steps and the hypergradient, timed.
/// Each block also allocates one tangent of θ and one of the momentum per table entry
/// (2 · 256 · |θ| floats, 2.2 GB at 784-1024-256-10), which the formula does not count.
void forward_mode_block(benchmark::State& state, const widths_t& widths) {
  auto s = make_problem(widths, hg::forward_mode{});
  time_and_count(state, widths, forward_mode_cost(recorded_steps, training_samples), [&] {
    s.step_level(0);
    auto result = s.hypergradient(1);
    benchmark::DoNotOptimize(result.gradient.data());
    return std::move(result.reports);
  });
}

template <class Fn>
void add(const std::string& what, const widths_t& widths, Fn fn) {
  benchmark::RegisterBenchmark((what + "/" + size_name(widths)).c_str(),
                               [widths, fn](benchmark::State& state) { fn(state, widths); })
      ->Unit(benchmark::kMillisecond)
      ->UseRealTime();
}

template <class Strategy>
void add_strategy(const std::string& what, const widths_t& widths, Strategy strategy, const expected_cost& expected) {
  add(what, widths, [strategy, expected](benchmark::State& state, const widths_t& w) {
    hypergradient(state, w, strategy, expected);
  });
}

/// The implicit solves are forced to run exactly k iterations: a tolerance no float solve
/// meets keeps CG going (as bench/compare/mwn_step.cpp does), and the damping keeps the damped
/// Hessian positive definite, else CG stops at negative curvature. Measured here: with μ = 1
/// CG (k = 10) met pᵀ(H+μI)p <= 0 after 4 to 6 iterations in 8 of 9 calls, 3 per size (this
/// barely trained network's Hessian has eigenvalues below −1); with μ = 10 it runs its k
/// iterations (the `iterations` counter shows it). Neumann gets the same μ, and its step is
/// given (0.01, mwn_step's default), so no power iterations are spent on estimating it
/// (step = 0 would add power_iterations = 20 HVPs).
constexpr double forced_damping = 10.0;
hg::implicit_cg forced_cg(std::size_t k) {
  return {.damping = forced_damping, .max_iterations = k, .tolerance = 1e-30};
}
hg::neumann forced_neumann(std::size_t k) { return {.iterations = k, .damping = forced_damping, .step = 0.01}; }

[[maybe_unused]] const bool registered = [] {
  for (const auto& widths : sizes) {
    add("gradient", widths, gradient);
    add("hvp", widths, hvp);
    add("hvp_in_solve", widths, hvp_in_solve);
    add_strategy("first_order", widths, hg::first_order{}, first_order_cost);
    add_strategy("lookahead_1", widths, hg::lookahead{.steps = 1}, lookahead_cost);
    add_strategy("unrolled_T5", widths, hg::unrolled{}, unrolled_cost(recorded_steps));
    add_strategy("truncated_2of5", widths, hg::unrolled{.keep_last = 2}, unrolled_cost(2));
    for (std::size_t k : {5, 10}) {
      add_strategy("implicit_cg_k" + std::to_string(k), widths, forced_cg(k), implicit_solve_cost(k));
      add_strategy("neumann_k" + std::to_string(k), widths, forced_neumann(k), implicit_solve_cost(k));
    }
    add_strategy("fixed_point_k10", widths, hg::fixed_point{.max_iterations = 10, .tolerance = 1e-30},
                 fixed_point_cost(10));
    add("forward_mode_T5", widths, forward_mode_block);
    add_strategy("finite_difference", widths, hg::finite_difference{}, finite_difference_cost);
    for (std::size_t k : {5, 10})
      add_strategy("nystrom_k" + std::to_string(k), widths, hg::nystrom{.rank = k, .damping = forced_damping},
                   implicit_solve_cost(k));
    add_strategy("soba", widths, hg::soba{.step = 0.01}, soba_cost);
    add_strategy("sama", widths, hg::sama{}, sama_cost);
    add_strategy("f2sa", widths, hg::f2sa{}, penalty_cost);
    add_strategy("bome", widths, hg::bome{}, penalty_cost);
    add_strategy("zero_order_N8", widths, hg::zero_order{.samples = 8}, zero_order_cost(8));
  }
  return true;
}();

}  // namespace
