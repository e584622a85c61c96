// SPDX-License-Identifier: MIT
// 01 — Learning ridge penalties: the smallest bilevel problem, solved with every strategy.
//
// What it teaches: how a problem becomes levels (a learner, an optimizer, a hypergradient
// strategy, and which levels it reads), how the one solver runs them, and how far each
// strategy's hypergradient is from the truth.
//
// The problem: synthetic regression, 20 Gaussian features of which only the first 5 carry
// signal (targets = informative features · random weights + noise), 100 training and 100
// validation rows. The lower level fits ridge weights θ with one penalty e^{λ_i} per feature;
// the upper level learns λ to minimise the validation loss. Both the inner solution and the
// hypergradient have closed forms (bilevel/problems/ridge.hpp), so every number is checked.
//
// Options (--help lists them): --seed N picks the synthetic data set (default 1); --epochs N
// the outer iterations of the learning run in part 2 (default 60; each is 200 weight steps,
// then one penalty step); --quick makes that 15 unless --epochs is given (ctest runs
// `01_ridge_hyperparameters --quick --skip-without-data`); --data DIR and --skip-without-data
// are accepted like the other examples' but nothing is read: the data are synthetic, and the
// program says so.
//
// What it prints: the seed and number of outer iterations; each strategy's hypergradient
// error against the closed form; then the validation loss falling as λ is learned (every 5
// outer iterations and after the last), and the learned penalties (uninformative features end
// with larger ones). Exits non-zero if any exact strategy is off, if the loss did not fall or
// the uninformative features did not end with larger penalties; exits 2 on a bad argument
// (examples/support/options.hpp).
#include <bilevel/eigen.hpp>
#include <bilevel/problems/ridge.hpp>

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "support/options.hpp"

using P = bilevel::policy::eigen<double>;
namespace hg = bilevel::hypergrad;
using bilevel::problems::ridge_problem;

constexpr std::size_t features = 20, informative = 5;

// The two levels; the lower level's strategy is what varies.
template <class Strategy>
auto make_solver(const ridge_problem<P>& prob, Strategy strategy, const P::vector& theta0, const P::vector& lambda0,
                 std::size_t inner_steps) {
  auto weights = bilevel::make_level("weights", bilevel::problems::ridge_training_loss<P>(prob.train),
                                     bilevel::optim::sgd<P>{.lr = 0.05}, strategy, theta0)
                     .reading({1})  // the training loss reads the penalties (level 1)
                     .steps_per_iteration(inner_steps);
  auto penalties = bilevel::make_level("log_penalties",
                                       bilevel::problems::validation_least_squares<P>(prob.validation, features),
                                       bilevel::optim::sgd<P>{.lr = 2.0}, hg::first_order{}, lambda0)
                       .reading({0});  // the validation loss reads the weights' solution (level 0)
  return bilevel::solver(std::move(weights), std::move(penalties));
}

std::vector<double> host(const P::vector& v) { return P::to_host(v); }
double relative_error(const std::vector<double>& a, const std::vector<double>& b) {
  double d = 0, n = 0;
  for (std::size_t i = 0; i < a.size(); ++i) d += (a[i] - b[i]) * (a[i] - b[i]), n += b[i] * b[i];
  return std::sqrt(d / n);
}

int run(int argc, char** argv) {
  example::options o;
  example::command_line cli("01_ridge_hyperparameters",
                            "Learns one ridge penalty per feature by bilevel optimization and checks every "
                            "hypergradient strategy against the closed form.",
                            o);
  o.epochs = 60;
  cli.seed("seed of the synthetic data set")
      .epochs("outer iterations of the solver, each 200 weight steps then one penalty step")
      .data("accepted like the other examples' but read nothing: this example's data are synthetic, generated "
            "from --seed",
            "accepted like the other examples'; nothing to skip, as no data set is read")
      .quick("15 outer iterations unless --epochs says otherwise (what ctest runs)");
  if (const auto status = cli.parse(argc, argv)) return *status;
  const unsigned seed = o.seeds.front();
  const bool quick = o.quick;
  const std::string& data = o.data;
  const std::size_t epochs = quick && !o.was_given("--epochs") ? 15 : o.epochs;
  std::printf("seed %u, %zu outer iterations%s\n", seed, epochs, quick ? " (--quick)" : "");
  if (!data.empty()) std::printf("--data %s ignored: this example's data are synthetic\n", data.c_str());
  std::puts("");

  const auto prob = ridge_problem<P>::synthetic(100, 100, features, informative, 0.5, seed);
  const std::vector<double> lam0(features, -2.0);
  const P::vector lambda0 = P::from_host(lam0);
  const auto closed = prob.hypergradient(lam0);
  const P::vector theta_star = P::from_host(prob.solution(lam0));  // the exact inner solution

  std::puts("1. Hypergradient dF/dλ at λ = -2 by each strategy, against the closed form");
  bool ok = true;
  auto report = [&](const char* name, auto strategy, const P::vector& theta0, std::size_t steps, double must_be_below) {
    auto s = make_solver(prob, strategy, theta0, lambda0, steps);
    if (steps > 1) s.step_level(0);  // recorded strategies differentiate the steps actually taken
    const auto r = s.hypergradient(1);
    const double err = relative_error(host(r.gradient), closed);
    std::printf("   %-22s relative error %.2e   (%zu HVPs)\n", name, err, r.reports.at(0).hvp_evals);
    if (!(err <= must_be_below)) ok = false, std::printf("   ^ expected below %.0e\n", must_be_below);
  };
  const P::vector zero = P::zeros(features);
  report("implicit CG", hg::implicit_cg{}, theta_star, 1, 1e-8);
  report("Neumann (100 terms)", hg::neumann{.iterations = 100}, theta_star, 1, 1e-3);
  report("fixed point", hg::fixed_point{.max_iterations = 5000}, theta_star, 1, 1e-6);
  report("unrolled, 2000 steps", hg::unrolled{}, zero, 2000, 1e-6);
  report("forward mode, 2000 st.", hg::forward_mode{}, zero, 2000, 1e-6);
  // Approximations: printed for comparison, not held to the closed form.
  report("unrolled, last 50", hg::unrolled{.keep_last = 50}, zero, 2000, 1.0);
  report("finite diff. (DARTS)", hg::finite_difference{}, theta_star, 1, 1.0);
  report("first order", hg::first_order{}, theta_star, 1, 1.0);

  std::puts("\n2. Learning λ: 200 weight steps per penalty step, implicit CG hypergradients");
  auto s = make_solver(prob, hg::implicit_cg{}, zero, lambda0, 200);
  // A solver assembled by hand reaches its levels by position, in the order make_solver
  // passed them (the methods' solvers name theirs); name them once here. The references
  // stay valid while `s` is not moved.
  auto& weights = s.level<0>();
  auto& penalties = s.level<1>();
  auto validation = [&] { return prob.validation_loss(host(weights.theta)); };
  s.step_level(0);  // fit the weights once before the first penalty step
  const double first = validation();
  std::printf("   epoch  0  validation loss %.4f\n", first);
  s.step_level(1);
  s.run(epochs, {.on_iteration = [&](const bilevel::iteration_event& e) {
                   if ((e.iteration + 1) % 5 == 0 || e.iteration + 1 == epochs)
                     std::printf("   epoch %2zu  validation loss %.4f\n", e.iteration + 1, validation());
                   return true;
                 }});
  const double last = validation();
  const auto lam = host(penalties.theta);
  double mean_informative = 0, mean_other = 0;
  for (std::size_t i = 0; i < features; ++i) (i < informative ? mean_informative : mean_other) += lam[i];
  mean_informative /= informative, mean_other /= features - informative;
  std::printf("\n   mean learned log-penalty: informative features %.2f, uninformative %.2f\n", mean_informative, mean_other);
  if (!(last < first)) ok = false, std::puts("   the validation loss did not fall");
  if (!(mean_other > mean_informative)) ok = false, std::puts("   uninformative features did not get larger penalties");
  std::puts(ok ? "\nOK" : "\nFAILED");
  return ok ? 0 : 1;
}

int main(int argc, char** argv) {
  return example::guarded_main("01_ridge_hyperparameters", [&] { return run(argc, argv); });
}
