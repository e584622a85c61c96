// SPDX-License-Identifier: MIT
// Time to reach a given suboptimality on a quadratic bilevel problem, for the single-loop
// methods (SOBA, F2SA, BOME) and the implicit ones (CG, Nyström) around a lower level that
// takes a few steps per outer iteration.
//
//   build/bench/bench_quadratic_convergence [--features D] [--rows N] [--iterations K]
//
// The problem: ridge regression with a learned log-penalty per feature (bilevel/problems/
// ridge.hpp), N training and N/2 validation rows of D features (D/4 informative), and weight
// decay β = 0.1 on the upper level (a Gaussian prior on the log-penalties, which makes the
// optimum λ* finite). λ* is computed first by exact hypergradient descent on the closed form.
// Each method then runs from the same start, double precision, Eigen policy, one thread; after
// every outer iteration the relative distance ‖λ − λ*‖/‖λ*‖ is measured (outside the clock),
// and the program prints, per method, the outer iterations and the milliseconds of solver time
// to reach 1e-1, 1e-2, 1e-3 and 1e-4 (or "-" when not reached within K iterations), and the
// final distance. Settings per method are printed with its row.
#include <bilevel/eigen.hpp>
#include <bilevel/problems/ridge.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

namespace {
using P = bilevel::policy::eigen<double>;
namespace hg = bilevel::hypergrad;
using namespace bilevel::problems;

constexpr double beta = 0.1;
const std::vector<double> targets = {1e-1, 1e-2, 1e-3, 1e-4};

double relative_distance(const std::vector<double>& a, const std::vector<double>& b) {
  double d = 0, n = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    d += (a[i] - b[i]) * (a[i] - b[i]);
    n += b[i] * b[i];
  }
  return std::sqrt(d / n);
}

template <class Strategy>
void run(const char* name, const std::string& settings, const ridge_problem<P>& problem, const std::vector<double>& star,
         Strategy strategy, double inner_lr, std::size_t inner_steps, bilevel::optim::sgd<P> outer, std::size_t iterations) {
  const std::size_t d = problem.train.cols;
  auto inner = bilevel::make_level("theta", ridge_training_loss<P>(problem.train), bilevel::optim::sgd<P>{.lr = inner_lr},
                                   strategy, P::zeros(d))
                   .reading({1})
                   .steps_per_iteration(inner_steps);
  auto upper = bilevel::make_level("log_penalty", validation_least_squares<P>(problem.validation, d), std::move(outer),
                                   hg::first_order{}, P::zeros(d))
                   .reading({0});
  bilevel::solver s(std::move(inner), std::move(upper));
  std::vector<std::size_t> reached_at(targets.size(), 0);
  std::vector<double> reached_ms(targets.size(), 0);
  double ms = 0, last = 0;
  for (std::size_t it = 1; it <= iterations; ++it) {
    const auto t0 = std::chrono::steady_clock::now();
    s.iterate();
    ms += std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    const auto host = P::to_host(s.template level<1>().theta);
    last = relative_distance(host, star);
    if (!std::isfinite(last)) break;
    for (std::size_t t = 0; t < targets.size(); ++t)
      if (reached_at[t] == 0 && last <= targets[t]) {
        reached_at[t] = it;
        reached_ms[t] = ms;
      }
    if (reached_at.back() != 0) break;
  }
  std::printf("| %s | %s |", name, settings.c_str());
  for (std::size_t t = 0; t < targets.size(); ++t) {
    if (reached_at[t] == 0) std::printf(" - |");
    else std::printf(" %zu / %.1f |", reached_at[t], reached_ms[t]);
  }
  std::printf(" %.2e |\n", last);
}
}  // namespace

int main(int argc, char** argv) {
  std::size_t features = 32, rows = 400, iterations = 20000;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    const std::size_t value = std::strtoull(argv[i + 1], nullptr, 10);
    if (flag == "--features") features = value;
    else if (flag == "--rows") rows = value;
    else if (flag == "--iterations") iterations = value;
  }
  const auto problem = ridge_problem<P>::synthetic(rows, rows / 2, features, features / 4, 0.5, 7);
  // λ*: exact hypergradient descent on F + β/2‖λ‖², step 1, until the gradient is below 1e-12.
  std::vector<double> star(features, 0.0);
  double gnorm = 1;
  std::size_t exact_steps = 0;
  for (; exact_steps < 100000 && gnorm > 1e-12; ++exact_steps) {
    auto g = problem.hypergradient(star);
    gnorm = 0;
    for (std::size_t i = 0; i < features; ++i) {
      g[i] += beta * star[i];
      gnorm += g[i] * g[i];
      star[i] -= g[i];
    }
    gnorm = std::sqrt(gnorm);
  }
  std::printf("ridge, %zu features, %zu training rows; lambda* after %zu exact steps (gradient norm %.1e)\n\n", features,
              rows, exact_steps, gnorm);
  std::printf("| method | settings | to 1e-1: iterations / ms | to 1e-2 | to 1e-3 | to 1e-4 | distance at the end |\n");
  std::printf("|---|---|---:|---:|---:|---:|---:|\n");
  const double lr = 0.3;  // the lower level's step (its Hessian's largest eigenvalue is about 2 here)
  const bilevel::optim::sgd<P> outer{.lr = 1.0, .weight_decay = beta};
  run("implicit_cg", "10 lower steps, k = 10", problem, star, hg::implicit_cg{.max_iterations = 10}, lr, 10, outer,
      iterations);
  run("nystrom", "10 lower steps, rank = features", problem, star, hg::nystrom{.rank = features}, lr, 10, outer,
      iterations);
  run("nystrom", "10 lower steps, rank = features / 4, damping 1", problem, star,
      hg::nystrom{.rank = features / 4, .damping = 1.0}, lr, 10, outer, iterations);
  run("soba", "single loop, step = lower step", problem, star, hg::soba{.step = lr}, lr, 1, outer, iterations);
  const hg::f2sa f{.step = lr, .penalty = 1.0, .penalty_growth = 0.1, .max_penalty = 1000.0};
  run("f2sa", "single loop, penalty 1 + 0.1k up to 1000, upper step min(0.5, 10/penalty)", problem, star, f, lr, 1,
      {.lr = 0.5, .weight_decay = beta, .schedule = [f](std::size_t k) { return std::min(0.5, 10.0 / f.penalty_at(k)); }},
      iterations);
  run("bome", "single loop, step 0.01 (upper too), eta 0.9", problem, star, hg::bome{.step = 0.01, .eta = 0.9}, lr, 1,
      {.lr = 0.01, .weight_decay = beta}, iterations);
  return 0;
}
