// SPDX-License-Identifier: MIT
// The solver as a user meets it: a full run that improves the outer objective, callbacks and
// early stop, determinism, and a clear error for each kind of bad wiring or numerical failure.
#include <doctest/doctest.h>

#include <bilevel/eigen.hpp>
#include <bilevel/problems/quadratic.hpp>
#include <bilevel/problems/ridge.hpp>
#include <bilevel/learners/classification_batch.hpp>
#include <bilevel/optim/frozen.hpp>

#include "support.hpp"
#include "toy_data.hpp"

namespace {

using P = test::P64;
namespace hg = bilevel::hypergrad;
using bilevel::problems::quadratic_objective;
using bilevel::problems::quadratic_spec;
using bilevel::problems::ridge_problem;
using bilevel::problems::ridge_training_loss;
using bilevel::problems::validation_least_squares;
using sgd = bilevel::optim::sgd<P>;

constexpr std::size_t d = 10;
const auto ridge = ridge_problem<P>::synthetic(40, 40, d, 3, 0.5, 17);

auto ridge_solver(std::size_t inner_steps = 50) {
  auto inner = bilevel::make_level("theta", ridge_training_loss<P>(ridge.train), sgd{.lr = 0.1}, hg::implicit_cg{},
                                   P::zeros(d))
                   .reading({1})
                   .steps_per_iteration(inner_steps);
  auto outer = bilevel::make_level("log_penalty", validation_least_squares<P>(ridge.validation, d), sgd{.lr = 5.0},
                                   hg::first_order{}, P::zeros(d))
                   .reading({0});
  return bilevel::solver(std::move(inner), std::move(outer));
}

/// A 2-level quadratic with the lower Hessian given explicitly (to make it indefinite).
auto quadratic_with_hessian(std::vector<double> a, hg::implicit_cg cg) {
  auto spec = quadratic_spec::random(2, {1}, 5);
  spec.a_mat = std::move(a);
  auto low = bilevel::make_level("x", quadratic_objective<P>(spec), sgd{.lr = 0.1}, cg, P::zeros(2)).reading({1});
  auto top = bilevel::make_level("z", quadratic_objective<P>(quadratic_spec::random(1, {2}, 6)), sgd{.lr = 0.1},
                                 hg::first_order{}, P::zeros(1))
                 .reading({0});
  return bilevel::solver(std::move(low), std::move(top));
}

}  // namespace

TEST_CASE("solver: learning the penalties lowers the validation loss toward the closed-form optimum path") {
  auto s = ridge_solver();
  auto validation_at = [&](const P::vector& lam) { return ridge.validation_loss(ridge.solution(test::host<P>(lam))); };
  const double before = validation_at(s.level<1>().theta);
  s.run(40);
  const double after = validation_at(s.level<1>().theta);
  MESSAGE("validation loss at θ*(λ): " << before << " -> " << after);
  CHECK(after < 0.9 * before);
  // The 7 uninformative features should end with larger penalties than the 3 informative ones.
  const auto lam = test::host<P>(s.level<1>().theta);
  double informative = 0, other = 0;
  for (std::size_t i = 0; i < d; ++i) (i < 3 ? informative : other) += lam[i];
  CHECK(other / 7 > informative / 3);
}

namespace {
/// The ridge validation loss with a batch type of its own, so that the solver holds levels
/// whose batch types differ.
struct fold {
  std::size_t index = 0;
};
class validation_on_folds {
 public:
  using policy = P;
  using batch_type = fold;
  explicit validation_on_folds(validation_least_squares<P> inner) : inner_(std::move(inner)) {}
  [[nodiscard]] std::size_t num_parameters() const { return inner_.num_parameters(); }
  [[nodiscard]] std::size_t num_inputs() const { return inner_.num_inputs(); }
  [[nodiscard]] std::size_t input_size(std::size_t s) const { return inner_.input_size(s); }
  double loss(const P::vector& own, bilevel::input_list<P> in, const fold&) const { return inner_.loss(own, in, {}); }
  double gradient(const P::vector& own, bilevel::input_list<P> in, const fold&, P::vector& out) const {
    return inner_.gradient(own, in, {}, out);
  }
  void input_gradient(const P::vector& own, bilevel::input_list<P> in, const fold&, std::size_t s,
                      P::vector& out) const {
    inner_.input_gradient(own, in, {}, s, out);
  }

 private:
  validation_least_squares<P> inner_;
};
}  // namespace

TEST_CASE("solver: levels with different batch types share one solver and take the same steps") {
  auto inner = bilevel::make_level("theta", ridge_training_loss<P>(ridge.train), sgd{.lr = 0.1}, hg::implicit_cg{},
                                   P::zeros(d))
                   .reading({1})
                   .steps_per_iteration(50);
  auto outer = bilevel::make_level("log_penalty", validation_on_folds(validation_least_squares<P>(ridge.validation, d)),
                                   sgd{.lr = 5.0}, hg::first_order{}, P::zeros(d), [] { return fold{}; })
                   .reading({0});
  auto mixed = bilevel::solver(std::move(inner), std::move(outer));
  auto plain = ridge_solver();
  mixed.run(5);
  plain.run(5);
  // The batch type changes nothing but the type: the same steps as the full-batch set-up.
  CHECK(test::host<P>(mixed.level<1>().theta) == test::host<P>(plain.level<1>().theta));
}

TEST_CASE("solver: callbacks see every step, and on_iteration stops the run") {
  auto s = ridge_solver(3);
  std::size_t lower_steps = 0, upper_steps = 0, hypergradient_reports = 0;
  bilevel::solver_callbacks cb;
  cb.on_step = [&](const bilevel::step_event& e) {
    (e.level == 0 ? lower_steps : upper_steps) += 1;
    hypergradient_reports += e.reports.size();
    CHECK(std::isfinite(e.loss));
    if (e.level == 1) CHECK(e.level_name == "log_penalty");
  };
  cb.on_iteration = [&](const bilevel::iteration_event& e) { return e.iteration < 2; };  // stop after the 3rd
  const auto summary = s.run(10, cb);
  CHECK(summary.iterations == 3);
  CHECK(summary.stopped_early);
  CHECK(lower_steps == 9);
  CHECK(upper_steps == 3);
  CHECK(hypergradient_reports == 3);  // one CG report per upper step
  CHECK(s.iteration() == 3);
}

TEST_CASE("solver: the same set-up gives bit-identical results") {
  auto a = ridge_solver(), b = ridge_solver();
  a.run(5);
  b.run(5);
  CHECK(test::host<P>(a.level<1>().theta) == test::host<P>(b.level<1>().theta));
  CHECK(test::host<P>(a.level<0>().theta) == test::host<P>(b.level<0>().theta));
}

TEST_CASE("solver: wiring mistakes are named") {
  auto inner = [] {
    return bilevel::make_level("theta", ridge_training_loss<P>(ridge.train), sgd{.lr = 0.1}, hg::implicit_cg{},
                               P::zeros(d));
  };
  auto outer = [] {
    return bilevel::make_level("lambda", validation_least_squares<P>(ridge.validation, d), sgd{.lr = 0.1},
                               hg::first_order{}, P::zeros(d));
  };
  CHECK_THROWS_WITH_AS(bilevel::solver(inner().reading({1}), outer()),
                       doctest::Contains("level 'lambda' has a learner that reads 1 input(s) but the level lists 0"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(bilevel::solver(inner().reading({5}), outer().reading({0})),
                       doctest::Contains("reads level 5 but there are only 2 levels"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(bilevel::solver(inner().reading({0}), outer().reading({0})),
                       doctest::Contains("'theta' reads itself"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(bilevel::make_level("theta", ridge_training_loss<P>(ridge.train), sgd{}, hg::implicit_cg{},
                                           P::zeros(d + 1)),
                       doctest::Contains("initial parameters have 11 elements but the learner has 10"),
                       std::invalid_argument);
  // An upper level of the wrong size for what the lower learner reads.
  auto small_outer = bilevel::make_level("lambda", validation_least_squares<P>(ridge.validation, d - 1), sgd{.lr = 0.1},
                                         hg::first_order{}, P::zeros(d - 1));
  CHECK_THROWS_WITH_AS(bilevel::solver(inner().reading({1}), small_outer.reading({0})),
                       doctest::Contains("input 0 expects 10 values but level 'lambda' has 9"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(inner().steps_per_iteration(0), doctest::Contains("steps per iteration must be >= 1"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(sgd{.lr = -1.0}.init(P::zeros(1)), doctest::Contains("learning rate must be finite and > 0"),
                       std::invalid_argument);
}

TEST_CASE("solver: a NaN is reported with its level and iteration, not carried on") {
  auto s = ridge_solver(5);
  s.level<1>().theta[2] = std::numeric_limits<double>::quiet_NaN();
  try {
    s.run(3);
    FAIL("expected bilevel::numerical_error");
  } catch (const bilevel::numerical_error& e) {
    // λ enters the inner loss, so the first NaN appears in the lowest level's gradient.
    CHECK(std::string(e.what()).find("level 'theta' at outer iteration 0") != std::string::npos);
    CHECK(e.level() == 0);
    CHECK(e.iteration() == 0);
  }
}

TEST_CASE("solver: divergence from a too-large learning rate is caught at the step it happens") {
  auto inner = bilevel::make_level("theta", ridge_training_loss<P>(ridge.train), sgd{.lr = 50.0}, hg::implicit_cg{},
                                   P::zeros(d))
                   .reading({1})
                   .steps_per_iteration(2000);
  auto outer = bilevel::make_level("lambda", validation_least_squares<P>(ridge.validation, d), sgd{.lr = 0.1},
                                   hg::first_order{}, P::zeros(d))
                   .reading({0});
  bilevel::solver s(std::move(inner), std::move(outer));
  CHECK_THROWS_AS(s.run(1), bilevel::numerical_error);
}

TEST_CASE("CG: negative curvature is detected and reported instead of diverging; damping cures it") {
  // Hessian diag(1, −0.5): indefinite.
  auto s = quadratic_with_hessian({1.0, 0.0, 0.0, -0.5}, hg::implicit_cg{});
  const auto r = s.hypergradient(1);
  REQUIRE(r.reports.size() == 1);
  CHECK(r.reports[0].negative_curvature);
  CHECK_FALSE(r.reports[0].converged);
  CHECK(P::all_finite(r.gradient));
  // μ = 1 makes H + μI = diag(2, 0.5) positive definite.
  auto damped = quadratic_with_hessian({1.0, 0.0, 0.0, -0.5}, hg::implicit_cg{.damping = 1.0});
  const auto rd = damped.hypergradient(1);
  CHECK_FALSE(rd.reports[0].negative_curvature);
  CHECK(rd.reports[0].converged);
  CHECK(rd.reports[0].residual <= 1e-10);
}

TEST_CASE("CG: an exhausted iteration budget is reported with its residual") {
  auto inner = bilevel::make_level("theta", ridge_training_loss<P>(ridge.train), sgd{.lr = 0.1},
                                   hg::implicit_cg{.max_iterations = 2}, test::device<P>(ridge.solution(std::vector<double>(d, 0.0))))
                   .reading({1});
  auto outer = bilevel::make_level("lambda", validation_least_squares<P>(ridge.validation, d), sgd{.lr = 0.1},
                                   hg::first_order{}, P::zeros(d))
                   .reading({0});
  bilevel::solver s(std::move(inner), std::move(outer));
  const auto r = s.hypergradient(1);
  CHECK(r.reports[0].iterations == 2);
  CHECK_FALSE(r.reports[0].converged);
  CHECK(r.reports[0].residual > 1e-6);  // 2 of 10 Krylov directions cannot solve a 10-dim system
}

TEST_CASE("forward mode refuses an input too large for it, naming the level") {
  auto inner = bilevel::make_level("theta", ridge_training_loss<P>(ridge.train), sgd{.lr = 0.1},
                                   hg::forward_mode{.max_components = 4}, P::zeros(d))
                   .reading({1});
  auto outer = bilevel::make_level("lambda", validation_least_squares<P>(ridge.validation, d), sgd{.lr = 0.1},
                                   hg::first_order{}, P::zeros(d))
                   .reading({0});
  bilevel::solver s(std::move(inner), std::move(outer));
  CHECK_THROWS_WITH_AS(s.step_level(0), doctest::Contains("level 'theta' input 0 has 10 components, above max_components = 4"),
                       std::invalid_argument);
}

TEST_CASE("solver: a middle level steps along its hypergradient in a full three-level run") {
  // LFM shape: x reads z; y reads x*, z; z reads y*, x*. One full iteration must move every level.
  const auto q0 = quadratic_spec::random(3, {2}, 31), q1 = quadratic_spec::random(3, {3, 2}, 32),
             q2 = quadratic_spec::random(2, {3, 3}, 33);
  auto l0 = bilevel::make_level("x", quadratic_objective<P>(q0), sgd{.lr = 0.5}, hg::implicit_cg{}, P::zeros(3)).reading({2});
  auto l1 = bilevel::make_level("y", quadratic_objective<P>(q1), sgd{.lr = 0.5}, hg::unrolled{}, P::zeros(3))
                .reading({0, 2})
                .steps_per_iteration(5);
  auto l2 = bilevel::make_level("z", quadratic_objective<P>(q2), sgd{.lr = 0.05}, hg::first_order{}, P::zeros(2)).reading({1, 0});
  bilevel::solver s(std::move(l0), std::move(l1), std::move(l2));
  std::size_t top_reports = 0;
  s.run(2, {.on_step = [&](const bilevel::step_event& e) { if (e.level == 2) top_reports = e.reports.size(); }});
  CHECK(top_reports == 2);  // y's unrolled vjp, then x's CG
  CHECK(test::norm(test::host<P>(s.level<2>().theta)) > 0.0);
}

TEST_CASE("solver: a copy taken mid-run continues exactly like the original") {
  // Unrolled strategies keep a tape and a snapshot of their inputs; a copy must own its own.
  auto inner = bilevel::make_level("theta", ridge_training_loss<P>(ridge.train), sgd{.lr = 0.1, .momentum = 0.5},
                                   hg::unrolled{.keep_last = 4}, P::zeros(d))
                   .reading({1})
                   .steps_per_iteration(6);
  auto outer = bilevel::make_level("lambda", validation_least_squares<P>(ridge.validation, d), sgd{.lr = 1.0},
                                   hg::first_order{}, P::zeros(d))
                   .reading({0});
  bilevel::solver a(std::move(inner), std::move(outer));
  a.run(2);
  a.step_level(0);  // mid-iteration: the tape holds this block
  auto b = a;
  const auto ga = test::host<P>(a.hypergradient(1).gradient);
  a.run(2);  // the original moves on and overwrites its own tape
  const auto gb = test::host<P>(b.hypergradient(1).gradient);
  CHECK(ga == gb);
  b.run(2);  // the same two iterations from the same state
  CHECK(test::host<P>(a.level<1>().theta) == test::host<P>(b.level<1>().theta));
}

TEST_CASE("solver: a frozen level never moves, and the level above gets the hypergradient it would get anyway") {
  auto plain = ridge_solver(50);
  plain.run(3);
  const auto theta_a = plain.level<0>().theta, lambda_a = plain.level<1>().theta;
  auto outer = [&] {
    return bilevel::make_level("log_penalty", validation_least_squares<P>(ridge.validation, d), sgd{.lr = 5.0},
                               hg::first_order{}, lambda_a)
        .reading({0});
  };
  // The inner level frozen at θ_a: it takes its 50 steps, but they leave θ as it is.
  auto frozen_inner = bilevel::make_level("theta", ridge_training_loss<P>(ridge.train), bilevel::optim::frozen<P>{},
                                          hg::implicit_cg{}, theta_a)
                          .reading({1})
                          .steps_per_iteration(50);
  bilevel::solver frozen(std::move(frozen_inner), outer());
  // Freezing changes nothing in how the level above differentiates through it.
  CHECK(test::host<P>(frozen.hypergradient(1).gradient) == test::host<P>(plain.hypergradient(1).gradient));
  std::size_t inner_steps = 0;
  frozen.run(2, {.on_step = [&](const bilevel::step_event& e) { inner_steps += e.level == 0; }});
  CHECK(inner_steps == 100);
  CHECK(frozen.level<0>().state.step == 100);
  CHECK(test::host<P>(frozen.level<0>().theta) == test::host<P>(theta_a));
  CHECK(test::host<P>(frozen.level<1>().theta) != test::host<P>(lambda_a));  // the outer level learns
  // Evaluate-only: no steps at all (no gradient computed, nothing drawn); the outer level
  // takes exactly the same steps.
  auto idle_inner = bilevel::make_level("theta", ridge_training_loss<P>(ridge.train), sgd{.lr = 0.1},
                                        hg::implicit_cg{}, theta_a)
                        .reading({1})
                        .evaluate_only();
  bilevel::solver idle(std::move(idle_inner), outer());
  inner_steps = 0;
  idle.run(2, {.on_step = [&](const bilevel::step_event& e) { inner_steps += e.level == 0; }});
  CHECK(inner_steps == 0);
  CHECK(test::host<P>(idle.level<0>().theta) == test::host<P>(theta_a));
  CHECK(test::host<P>(idle.level<1>().theta) == test::host<P>(frozen.level<1>().theta));
  CHECK_THROWS_WITH_AS(idle.level<0>().steps_per_iteration(0), doctest::Contains("call evaluate_only()"),
                       std::invalid_argument);
}

namespace {
/// The ridge training loss on batches of a classification data set, which it does not read:
/// a level whose sampler walks a data set in epochs.
class ridge_on_batches {
 public:
  using policy = P;
  using batch_type = bilevel::learners::classification_batch<P>;
  explicit ridge_on_batches(ridge_training_loss<P> inner) : inner_(std::move(inner)) {}
  [[nodiscard]] std::size_t num_parameters() const { return inner_.num_parameters(); }
  [[nodiscard]] std::size_t num_inputs() const { return inner_.num_inputs(); }
  [[nodiscard]] std::size_t input_size(std::size_t s) const { return inner_.input_size(s); }
  double loss(const P::vector& own, bilevel::input_list<P> in, const batch_type&) const { return inner_.loss(own, in, {}); }
  double gradient(const P::vector& own, bilevel::input_list<P> in, const batch_type&, P::vector& out) const {
    return inner_.gradient(own, in, {}, out);
  }
  void input_gradient(const P::vector& own, bilevel::input_list<P> in, const batch_type&, std::size_t s,
                      P::vector& out) const {
    inner_.input_gradient(own, in, {}, s, out);
  }

 private:
  ridge_training_loss<P> inner_;
};

auto epoch_solver(std::size_t inner_steps) {
  // 10 rows in batches of 3: an epoch is 3 batches (the row left over is not drawn).
  auto inner = bilevel::make_level("theta", ridge_on_batches(ridge_training_loss<P>(ridge.train)), sgd{.lr = 0.1},
                                   hg::first_order{}, P::zeros(d),
                                   bilevel::learners::dataset_batches<P>(test::toy_classes(10, 3).data, 3, 5))
                   .reading({1})
                   .steps_per_iteration(inner_steps);
  auto outer = bilevel::make_level("log_penalty", validation_least_squares<P>(ridge.validation, d), sgd{.lr = 1.0},
                                   hg::first_order{}, P::zeros(d))
                   .reading({0});
  return bilevel::solver(std::move(inner), std::move(outer));
}

/// (epoch, iteration) of every on_epoch event of `iterations` iterations.
std::vector<std::pair<std::size_t, std::size_t>> epochs_seen(std::size_t inner_steps, std::size_t iterations) {
  auto s = epoch_solver(inner_steps);
  std::vector<std::pair<std::size_t, std::size_t>> seen;
  s.run(iterations, {.on_epoch = [&](const bilevel::epoch_event& e) {
                       CHECK(e.level == 0);
                       seen.emplace_back(e.epoch, e.iteration);
                       return true;
                     }});
  return seen;
}
using epochs = std::vector<std::pair<std::size_t, std::size_t>>;
}  // namespace

TEST_CASE("solver: on_epoch fires where the sampler completes a pass, however many steps an iteration takes") {
  // Batches 3, 6, 9, ... end the epochs.
  CHECK(epochs_seen(1, 10) == epochs{{0, 2}, {1, 5}, {2, 8}});
  CHECK(epochs_seen(2, 6) == epochs{{0, 1}, {1, 2}, {2, 4}, {3, 5}});
  CHECK(epochs_seen(4, 3) == epochs{{0, 0}, {1, 1}, {2, 2}, {3, 2}});  // two passes end in iteration 2
  // Returning false stops the run after the iteration that completed the pass.
  auto s = epoch_solver(1);
  const auto summary = s.run(20, {.on_epoch = [](const bilevel::epoch_event& e) { return e.epoch < 1; }});
  CHECK(summary.iterations == 6);
  CHECK(summary.stopped_early);
  CHECK(s.epochs_completed(0) == 2u);
  // A full-batch level has no epochs: watching it never fires.
  CHECK_FALSE(s.epochs_completed(1).has_value());
  bool fired = false;
  s.run(5, {.on_epoch = [&](const bilevel::epoch_event&) { return fired = true; }, .epoch_level = 1});
  CHECK_FALSE(fired);
  CHECK_THROWS_WITH_AS(s.run(1, {.on_epoch = [](const bilevel::epoch_event&) { return true; }, .epoch_level = 2}),
                       doctest::Contains("on_epoch watches level 2 but there are only 2 levels"), std::invalid_argument);
}

TEST_CASE("level: a batch drawn ahead by peek_batch counts toward an epoch only once it is used") {
  auto lv = epoch_solver(1).level<0>();
  (void)lv.next_batch();
  (void)lv.next_batch();
  CHECK(lv.epochs_completed() == 0);
  (void)lv.peek_batch();  // the epoch's last batch, drawn but not yet used
  CHECK(lv.sampler.epochs_completed() == 1);
  CHECK(lv.epochs_completed() == 0);
  (void)lv.next_batch();
  CHECK(lv.epochs_completed() == 1);
}

TEST_CASE("level: peek_batch(ahead) shows the batches the next real steps take, in order") {
  auto lv = epoch_solver(1).level<0>();
  const auto third = lv.peek_batch(2);  // draws three batches ahead
  const auto first = lv.peek_batch(0), second = lv.peek_batch(1);
  CHECK(lv.sampler.epochs_completed() == 1);  // all three of the epoch's batches drawn
  CHECK(lv.epochs_completed() == 0);
  CHECK(P::equal(lv.next_batch().x, first.x));
  CHECK(P::equal(lv.next_batch().x, second.x));
  CHECK(lv.has_peeked_batch());
  CHECK(lv.epochs_completed() == 0);
  CHECK(P::equal(lv.next_batch().x, third.x));
  CHECK_FALSE(lv.has_peeked_batch());
  CHECK(lv.epochs_completed() == 1);
  CHECK_FALSE(P::equal(lv.next_batch().x, third.x));  // a new draw
}

// ---------------------------------------------------------------------------------------------
// Stationarity of implicit hypergradients, and divergence of unrolled ones.

#include <algorithm>
#include <limits>
#include <sstream>

#include <bilevel/problems/weighted_logistic.hpp>

namespace {
using bilevel::problems::logistic_problem;
using bilevel::problems::validation_logistic_loss;
using bilevel::problems::weighted_logistic_loss;

// L2-regularised logistic regression with learned per-sample weights. Its curvature falls
// away from the optimum, so gradient descent with a step above 2/λ_max neither converges nor
// diverges: it settles into an oscillation around θ* whose gradient never vanishes (a
// quadratic such as ridge would diverge instead).
constexpr std::size_t logistic_rows = 40, logistic_features = 5;
constexpr double logistic_l2 = 0.05;
const auto logistic = logistic_problem<P>::synthetic(logistic_rows, 30, logistic_features, 0.2, 3);

struct logistic_optimum {
  std::vector<double> theta;  ///< θ* at unit weights
  double lambda_max;          ///< the Hessian's largest eigenvalue there
};

/// By Newton's method with the learner's own products, so no step size is involved.
logistic_optimum logistic_solution() {
  const weighted_logistic_loss<P> loss(logistic.train, logistic_l2);
  const P::vector weights = P::from_host(std::vector<double>(logistic_rows, 1.0));
  const std::vector<const P::vector*> in_ptrs{&weights};
  const bilevel::input_list<P> in(in_ptrs);
  constexpr std::size_t f = logistic_features;
  auto hessian_times = [&](const std::vector<double>& theta, const std::vector<double>& v) {
    P::vector hv;
    loss.hvp(test::device<P>(theta), in, {}, test::device<P>(v), hv);
    return test::host<P>(hv);
  };
  std::vector<double> theta(f, 0.0);
  for (int it = 0; it < 30; ++it) {
    P::vector g;
    loss.gradient(test::device<P>(theta), in, {}, g);
    bilevel::detail::dense_matrix h{f, std::vector<double>(f * f)};
    for (std::size_t j = 0; j < f; ++j) {
      std::vector<double> e(f, 0.0);
      e[j] = 1.0;
      const auto column = hessian_times(theta, e);
      for (std::size_t i = 0; i < f; ++i) h(i, j) = column[i];
    }
    auto newton = test::host<P>(g);
    bilevel::detail::cholesky_solve(h, newton);
    for (std::size_t i = 0; i < f; ++i) theta[i] -= newton[i];
  }
  std::vector<double> v(f, 1.0);
  double lambda = 0.0;
  for (int k = 0; k < 500; ++k) {
    const double nv = test::norm(v);
    for (double& x : v) x /= nv;
    const auto hv = hessian_times(theta, v);
    lambda = 0.0;
    for (std::size_t i = 0; i < f; ++i) lambda += v[i] * hv[i];
    v = hv;
  }
  return {theta, lambda};
}
const logistic_optimum logistic_star = logistic_solution();

/// Weights (upper, first order) over θ (lower, implicit CG), θ taking `steps` SGD steps of `lr`
/// per outer iteration from 0.
auto logistic_solver(double lr, std::size_t steps) {
  auto inner = bilevel::make_level("theta", weighted_logistic_loss<P>(logistic.train, logistic_l2), sgd{.lr = lr},
                                   hg::implicit_cg{}, P::zeros(logistic_features))
                   .reading({1})
                   .steps_per_iteration(steps);
  auto outer = bilevel::make_level("weights", validation_logistic_loss<P>(logistic.validation, logistic_rows),
                                   sgd{.lr = 1.0}, hg::first_order{}, P::from_host(std::vector<double>(logistic_rows, 1.0)))
                   .reading({0});
  return bilevel::solver(std::move(inner), std::move(outer));
}

/// The step past 2/λ_max that oscillates, and a safe one.
const double oscillating_lr = 1.5 * 2.0 / logistic_star.lambda_max;
const double safe_lr = 1.0 / logistic_star.lambda_max;
constexpr std::size_t logistic_steps = 2000;

/// The exact hypergradient: CG at θ* itself.
std::vector<double> exact_logistic_hypergradient() {
  auto s = logistic_solver(safe_lr, 1);
  s.level<0>().theta = test::device<P>(logistic_star.theta);
  return test::host<P>(s.hypergradient(1).gradient);
}
}  // namespace

TEST_CASE("stationarity: SGD past 2/λ_max oscillates, and CG's clean residual hides it; the report does not") {
  REQUIRE(oscillating_lr > 2.0 / logistic_star.lambda_max);
  REQUIRE(oscillating_lr * logistic_l2 < 2.0);  // the regulariser alone would contract: bounded iterates
  auto s = logistic_solver(oscillating_lr, logistic_steps);
  double largest_norm = 0.0, first_gradient = 0.0, last_gradient = 0.0;
  s.step_level(0, {.on_step = [&](const bilevel::step_event& e) {
    largest_norm = std::max(largest_norm, test::norm(test::host<P>(s.level<0>().theta)));
    (e.step == 0 ? first_gradient : last_gradient) = e.gradient_norm;
  }});
  const auto result = s.hypergradient(1);
  REQUIRE(result.reports.size() == 1);
  const auto& r = result.reports[0];
  const double error = test::relative_error(test::host<P>(result.gradient), exact_logistic_hypergradient());
  MESSAGE("lr " << oscillating_lr << " = " << oscillating_lr * logistic_star.lambda_max / 2.0 << " x 2/lambda_max; |theta*| "
                << test::norm(logistic_star.theta) << ", largest |theta| " << largest_norm << "; gradient norm "
                << first_gradient << " at the first step, " << last_gradient << " at the last; " << r
                << "; relative error against the exact hypergradient " << error);
  CHECK(largest_norm < 10.0 * test::norm(logistic_star.theta));  // bounded ...
  CHECK(last_gradient > 0.5 * first_gradient);                     // ... but not converging
  CHECK(r.converged);
  CHECK(r.residual < 1e-12);  // the solve is fine
  CHECK(r.assumes_stationarity);
  CHECK(r.gradient_norm > 0.1);
  CHECK(r.stationarity > 0.5);  // the point is not
  CHECK(r.gradient_evals == 1);
  CHECK(error > 0.5);
  std::ostringstream printed;
  printed << r;
  CHECK(printed.str().find("stationarity ") != std::string::npos);
}

TEST_CASE("stationarity: a well-converged lower level reports a tiny stationarity and no policy fails on it") {
  auto s = logistic_solver(safe_lr, logistic_steps);
  s.on_failure({.stationarity_tolerance = 1e-6});
  double worst = 0.0;
  std::size_t reports = 0;
  s.run(3, {.on_step = [&](const bilevel::step_event& e) {
    for (const auto& r : e.reports) {
      ++reports;
      CHECK(r.assumes_stationarity);
      worst = std::max(worst, r.stationarity);
    }
  }});
  MESSAGE("converged lower level (lr = 1/lambda_max, " << logistic_steps << " steps): largest stationarity " << worst);
  CHECK(reports == 3);
  CHECK(worst < 1e-6);
  // At θ* of the current weights the hypergradient is the exact one (first iteration: unit weights).
  auto fresh = logistic_solver(safe_lr, logistic_steps);
  fresh.step_level(0);
  CHECK(test::relative_error(test::host<P>(fresh.hypergradient(1).gradient), exact_logistic_hypergradient()) < 1e-8);
}

TEST_CASE("stationarity: the failure policy stops, skips or rolls back a step at a non-stationary lower level") {
  const bilevel::failure_policy strict{.stationarity_tolerance = 1e-3};
  auto stopping = logistic_solver(oscillating_lr, logistic_steps);
  stopping.on_failure(strict);
  try {
    stopping.run(2);
    FAIL("expected bilevel::stationarity_error");
  } catch (const bilevel::stationarity_error& e) {
    const std::string what = e.what();
    MESSAGE(what);
    CHECK(what.find("level 'weights' at outer iteration 0, step 0") != std::string::npos);
    CHECK(what.find("assumes level 'theta' is at a stationary point") != std::string::npos);
    CHECK(what.find("relative stationarity ") != std::string::npos);
    CHECK(what.find("tolerance 0.001") != std::string::npos);
    CHECK(e.level() == 1);
    CHECK(e.iteration() == 0);
    CHECK(e.step() == 0);
    CHECK(e.stationarity() > 0.5);
    CHECK(e.tolerance() == 1e-3);
    CHECK(e.residual() < 1e-12);
  }
  // It is a convergence_error too, so code that handles unconverged solves handles it.
  auto as_convergence = logistic_solver(oscillating_lr, logistic_steps);
  as_convergence.on_failure(strict);
  CHECK_THROWS_AS(as_convergence.run(1), bilevel::convergence_error);

  // skip_step: the weights never move, every skipped step is reported with its stationarity.
  auto skipping = logistic_solver(oscillating_lr, logistic_steps);
  skipping.on_failure({.stationarity_tolerance = 1e-3, .non_stationary = bilevel::failure_action::skip_step});
  std::vector<bilevel::failure_event> events;
  const auto summary = skipping.run(2, {.on_failure = [&](const bilevel::failure_event& e) { events.push_back(e); }});
  CHECK(summary.skipped_steps == 2);
  REQUIRE(events.size() == 2);
  CHECK(events[0].level == 1);
  CHECK(events[0].action == bilevel::failure_action::skip_step);
  CHECK(events[1].what.find("relative stationarity") != std::string::npos);
  CHECK(test::host<P>(skipping.level<1>().theta) == std::vector<double>(logistic_rows, 1.0));

  // roll_back: θ's block is undone with the weights' step.
  auto rolling = logistic_solver(oscillating_lr, logistic_steps);
  rolling.on_failure({.stationarity_tolerance = 1e-3, .non_stationary = bilevel::failure_action::roll_back});
  CHECK(rolling.run(1).rollbacks == 1);
  CHECK(test::host<P>(rolling.level<0>().theta) == std::vector<double>(logistic_features, 0.0));

  // accept: the run goes on, and the reports say what was accepted.
  auto accepting = logistic_solver(oscillating_lr, logistic_steps);
  accepting.on_failure({.stationarity_tolerance = 1e-3, .non_stationary = bilevel::failure_action::accept});
  double seen = 0.0;
  accepting.run(2, {.on_step = [&](const bilevel::step_event& e) {
    for (const auto& r : e.reports) seen = std::max(seen, r.stationarity);
  }});
  CHECK(seen > 0.5);

  // The default checks nothing: the same run goes through.
  auto by_default = logistic_solver(oscillating_lr, logistic_steps);
  CHECK(by_default.failure_handling().stationarity_tolerance == std::numeric_limits<double>::infinity());
  CHECK_NOTHROW(by_default.run(2));
  CHECK_THROWS_WITH_AS(by_default.on_failure({.stationarity_tolerance = -1.0}),
                       doctest::Contains("stationarity_tolerance must be >= 0"), std::invalid_argument);
}

TEST_CASE("stationarity: undefined (NaN) before the lower level's first step, and then not a failure") {
  // The weights step first, so their first hypergradient comes before θ has stepped at all.
  auto s = logistic_solver(oscillating_lr, logistic_steps);
  s.schedule({1, 0}).on_failure({.stationarity_tolerance = 1e-3});
  std::vector<double> seen;
  const auto record = [&](const bilevel::step_event& e) {
    for (const auto& r : e.reports) seen.push_back(r.stationarity);
  };
  CHECK_NOTHROW(s.run(1, {.on_step = record}));
  REQUIRE(seen.size() == 1);
  CHECK(std::isnan(seen[0]));
  // The next one sees the block θ took in between: oscillating, so it stops.
  CHECK_THROWS_AS(s.run(1, {.on_step = record}), bilevel::stationarity_error);
  std::ostringstream printed;
  auto fresh = logistic_solver(oscillating_lr, logistic_steps);
  printed << fresh.hypergradient(1).reports.at(0);
  CHECK(printed.str().find("stationarity undefined") != std::string::npos);
}

TEST_CASE("stationarity: every implicit strategy reports it; the step-based ones do not") {
  auto with = [](auto strategy) {
    auto inner = bilevel::make_level("theta", weighted_logistic_loss<P>(logistic.train, logistic_l2),
                                     sgd{.lr = oscillating_lr}, strategy, P::zeros(logistic_features))
                     .reading({1})
                     .steps_per_iteration(logistic_steps);
    auto outer = bilevel::make_level("weights", validation_logistic_loss<P>(logistic.validation, logistic_rows),
                                     sgd{.lr = 1.0}, hg::first_order{},
                                     P::from_host(std::vector<double>(logistic_rows, 1.0)))
                     .reading({0});
    bilevel::solver s(std::move(inner), std::move(outer));
    s.step_level(0);
    return s.hypergradient(1).reports.at(0);
  };
  const auto cg = with(hg::implicit_cg{});
  for (const auto& r : {cg, with(hg::neumann{.iterations = 200}), with(hg::nystrom{.rank = logistic_features}),
                        with(hg::fixed_point{})}) {
    MESSAGE(r);
    CHECK(r.assumes_stationarity);
    CHECK(r.gradient_norm == doctest::Approx(cg.gradient_norm).epsilon(1e-12));
    CHECK(r.stationarity == doctest::Approx(cg.stationarity).epsilon(1e-12));
    CHECK(r.stationarity > 0.5);
  }
  const auto unrolled = with(hg::unrolled{});
  MESSAGE(unrolled << "; gradient growth over the block " << unrolled.gradient_growth);
  CHECK_FALSE(unrolled.assumes_stationarity);
  CHECK(std::isnan(unrolled.stationarity));
  CHECK_FALSE(unrolled.diverged);  // oscillating is not diverging: unrolled differentiates it as it is
  CHECK(unrolled.gradient_growth < 3.0);
}

TEST_CASE("unrolled: the report flags inner iterates that diverged, and only those") {
  auto ridge_unrolled = [](double lr, std::size_t steps) {
    auto inner = bilevel::make_level("theta", ridge_training_loss<P>(ridge.train), sgd{.lr = lr}, hg::unrolled{},
                                     P::zeros(d))
                     .reading({1})
                     .steps_per_iteration(steps);
    auto outer = bilevel::make_level("lambda", validation_least_squares<P>(ridge.validation, d), sgd{.lr = 0.1},
                                     hg::first_order{}, P::zeros(d))
                     .reading({0});
    bilevel::solver s(std::move(inner), std::move(outer));
    s.step_level(0);
    return s.hypergradient(1).reports.at(0);
  };
  // ridge is quadratic: a step of 50 multiplies the top mode by |1 − 50·λ_max| > 100 per step.
  const auto blown = ridge_unrolled(50.0, 10);
  MESSAGE(blown);
  CHECK(blown.diverged);
  CHECK(blown.gradient_growth > 1e10);
  CHECK(blown.steps_kept == 10);
  const auto fine = ridge_unrolled(0.1, 50);
  MESSAGE(fine);
  CHECK_FALSE(fine.diverged);
  CHECK(fine.gradient_growth <= 1.0);
  std::ostringstream printed;
  printed << blown;
  CHECK(printed.str().find("DIVERGED") != std::string::npos);
  CHECK_THROWS_WITH_AS(bilevel::make_level("theta", ridge_training_loss<P>(ridge.train), sgd{.lr = 0.1},
                                           hg::unrolled{.divergence_factor = 1.0}, P::zeros(d)),
                       doctest::Contains("divergence_factor must be > 1"), std::invalid_argument);
}
