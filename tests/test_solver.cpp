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
