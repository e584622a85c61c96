// SPDX-License-Identifier: MIT
// Reliability: checkpoints that resume bit-identically and reject bad files without touching
// the solver, determinism under a seed, and the failure policies (stop, skip, roll back) on
// injected NaNs and unconverged solves, checked at once or deferred (read every few
// iterations, so that a step reads nothing on the host).
#include <doctest/doctest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <random>
#include <set>
#include <unistd.h>
#include <string>
#include <vector>

#include <bilevel/eigen.hpp>
#include <bilevel/methods/meta_weight_net.hpp>
#include <bilevel/problems/ridge.hpp>

#include "recording_policy.hpp"
#include "support.hpp"
#include "toy_data.hpp"

namespace {

using P = test::P64;
namespace hg = bilevel::hypergrad;
using sgd = bilevel::optim::sgd<P>;

const auto train_set = test::toy_classes(200, 1).data;
const auto validation_set = test::toy_classes(30, 2).data;

template <class Policy = P>
auto small_mwn(std::uint64_t seed = 3, std::vector<std::size_t> widths = {8, 6, 3}) {
  return bilevel::methods::meta_weight_net<Policy>(
      train_set, validation_set,
      {.widths = std::move(widths), .batch = 10, .validation_batch = 10, .lr = 0.05, .hidden = 5, .seed = seed});
}

template <class Solver>
std::vector<std::vector<double>> everything(const Solver& s) {
  const auto& a = s.template level<0>();
  const auto& b = s.template level<1>();
  std::vector<std::vector<double>> out = {test::host<P>(a.theta), test::host<P>(b.theta)};
  for (const auto& buf : a.state.buffers) out.push_back(test::host<P>(buf));
  for (const auto& buf : b.state.buffers) out.push_back(test::host<P>(buf));
  out.push_back({double(a.state.step), double(b.state.step), double(s.iteration())});
  return out;
}

std::filesystem::path temp_file(const std::string& name) {
  return std::filesystem::temp_directory_path() / ("bilevel_test_" + std::to_string(::getpid()) + "_" + name);
}

/// SGD that writes a NaN into θ on the calls listed (counting from 0), to inject failures.
struct flaky_sgd {
  using policy = P;
  sgd inner;
  std::shared_ptr<std::size_t> calls = std::make_shared<std::size_t>(0);
  std::set<std::size_t> fail_at;
  bilevel::optimizer_state<P> init(const P::vector& theta) const { return inner.init(theta); }
  void step(P::vector& theta, bilevel::optimizer_state<P>& state, const P::vector& g) const {
    inner.step(theta, state, g);
    if (fail_at.count((*calls)++)) theta[0] = std::numeric_limits<double>::quiet_NaN();
  }
};

constexpr std::size_t d = 6;
const auto ridge = bilevel::problems::ridge_problem<P>::synthetic(30, 30, d, 2, 0.5, 5);

template <class Strategy = hg::implicit_cg>
auto ridge_with_flaky_outer(std::set<std::size_t> fail_at, Strategy cg = {}) {
  auto inner = bilevel::make_level("theta", bilevel::problems::ridge_training_loss<P>(ridge.train), sgd{.lr = 0.1},
                                   cg, P::zeros(d))
                   .reading({1})
                   .steps_per_iteration(5);
  auto outer = bilevel::make_level("lambda", bilevel::problems::validation_least_squares<P>(ridge.validation, d),
                                   flaky_sgd{sgd{.lr = 1.0}, std::make_shared<std::size_t>(0), std::move(fail_at)},
                                   hg::first_order{}, P::zeros(d))
                   .reading({0});
  return bilevel::solver(std::move(inner), std::move(outer));
}

}  // namespace

TEST_CASE("determinism: the same seed gives bit-identical runs, another seed does not") {
  auto a = small_mwn(), b = small_mwn(), c = small_mwn(4);
  a.run(6);
  b.run(6);
  c.run(6);
  CHECK(everything(a) == everything(b));
  CHECK(everything(a) != everything(c));
}

TEST_CASE("checkpoint: a resumed run continues bit-identically to one never interrupted") {
  const auto path = temp_file("resume.ckpt");
  auto uninterrupted = small_mwn();
  uninterrupted.run(9);

  auto first = small_mwn();
  first.run(4);
  first.save_checkpoint(path);
  CHECK_FALSE(std::filesystem::exists(path.string() + ".tmp"));  // renamed into place
  first.run(2);  // the first process goes on a little, then "crashes"

  auto resumed = small_mwn();  // a fresh process builds the same solver and loads
  resumed.load_checkpoint(path);
  CHECK(resumed.iteration() == 4);
  resumed.run(5);
  CHECK(everything(resumed) == everything(uninterrupted));
  std::filesystem::remove(path);
}

TEST_CASE("checkpoint: checkpoint_every writes during run() and the file resumes") {
  const auto path = temp_file("every.ckpt");
  auto s = small_mwn();
  const auto summary = s.checkpoint_every(3, path).run(7);
  CHECK(summary.checkpoints_written == 2);  // after iterations 3 and 6
  auto resumed = small_mwn();
  resumed.load_checkpoint(path);
  CHECK(resumed.iteration() == 6);
  resumed.run(1);
  CHECK(everything(resumed) == everything(s));
  std::filesystem::remove(path);
}

TEST_CASE("checkpoint: corrupted, truncated, foreign or mismatched files are rejected and nothing is loaded") {
  const auto path = temp_file("bad.ckpt");
  auto s = small_mwn();
  s.run(2);
  s.save_checkpoint(path);
  std::string bytes;
  {
    std::ifstream in(path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  auto write = [&](const std::string& b) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(b.data(), std::streamsize(b.size()));
  };
  auto target = small_mwn(9);
  target.run(1);
  const auto before = everything(target);
  auto rejects = [&](const std::string& message) {
    CHECK_THROWS_WITH_AS(target.load_checkpoint(path), doctest::Contains(message.c_str()), bilevel::checkpoint_error);
    CHECK(everything(target) == before);  // never half-loaded
  };

  std::string flipped = bytes;
  flipped[flipped.size() / 2] = char(flipped[flipped.size() / 2] ^ 0x10);
  write(flipped);
  rejects("checksum mismatch");

  write(bytes.substr(0, bytes.size() - 100));
  rejects("truncated");

  std::string magic = bytes;
  magic[0] = 'X';
  write(magic);
  rejects("not a bilevel checkpoint");

  std::filesystem::remove(path);
  rejects("cannot open");

  // A solver of another shape (a wider hidden layer) reads a well-formed file and refuses it.
  auto wider = small_mwn(3, {8, 7, 3});
  wider.save_checkpoint(path);
  rejects("level 'classifier' has 87 parameters, this solver's has 75");

  // Another scalar type.
  auto single = bilevel::methods::meta_weight_net<test::P32>(train_set, validation_set,
                                                            {.widths = {8, 6, 3}, .batch = 10, .validation_batch = 10, .hidden = 5});
  single.save_checkpoint(path);
  rejects("4-byte scalars, this solver uses 8-byte scalars");
  std::filesystem::remove(path);
}

TEST_CASE("failure policy: stop (the default) names level, iteration and step") {
  auto s = ridge_with_flaky_outer({2});
  try {
    s.run(5);
    FAIL("expected bilevel::numerical_error");
  } catch (const bilevel::numerical_error& e) {
    CHECK(std::string(e.what()).find("level 'lambda' parameters became NaN/Inf at outer iteration 2, step 0") !=
          std::string::npos);
    CHECK(e.level() == 1);
    CHECK(e.iteration() == 2);
    CHECK(e.step() == 0);
  }
}

TEST_CASE("deferred checks: the same run as immediate checks, bit for bit, with the same step events") {
  using R = test::recording_policy;
  struct event {
    std::size_t iteration, level, step;
    double loss, norm;
  };
  auto record = [](std::vector<event>& to) {
    return [&to](const bilevel::step_event& e) { to.push_back({e.iteration, e.level, e.step, e.loss, e.gradient_norm}); };
  };
  // By value on the Eigen policy, checked at once; by stamp on the recording policy, deferred.
  auto a = small_mwn<P>();
  auto b = small_mwn<R>();
  b.on_failure({.check_every = 4});
  std::vector<event> ea, eb;
  a.run(7, {.on_step = record(ea)});
  std::size_t held = 0;
  b.run(7, {.on_step = record(eb), .on_iteration = [&](const bilevel::iteration_event& e) {
              if (e.iteration == 2) held = eb.size();  // none delivered before the read after iteration 3
              return true;
            }});
  CHECK(held == 0);
  CHECK(everything(a) == everything(b));
  REQUIRE(ea.size() == eb.size());
  REQUIRE(ea.size() == 14);
  for (std::size_t k = 0; k < ea.size(); ++k) {
    CAPTURE(k);
    CHECK(ea[k].iteration == eb[k].iteration);
    CHECK(ea[k].level == eb[k].level);
    CHECK(ea[k].step == eb[k].step);
    // Reduced in another order on the policy's storage (add_dot_into against dot): round-off.
    CHECK(eb[k].loss == doctest::Approx(ea[k].loss).epsilon(1e-13));
    CHECK(eb[k].norm == doctest::Approx(ea[k].norm).epsilon(1e-13));
  }
}

TEST_CASE("deferred checks: the first step that went non-finite is named, at the next read") {
  // Immediate: λ's NaN at outer iteration 2 stops the run there.
  auto now = ridge_with_flaky_outer({2});
  CHECK_THROWS_WITH_AS(now.run(8), doctest::Contains("level 'lambda' parameters became NaN/Inf at outer iteration 2, step 0"),
                       bilevel::numerical_error);
  CHECK(now.iteration() == 2);
  // Deferred by 4: the read after iteration 3 (the fourth) finds it, though θ's steps of iteration 3 went
  // non-finite too (they read λ): the first failure is the one named.
  auto later = ridge_with_flaky_outer({2});
  later.on_failure({.check_every = 4});
  try {
    later.run(8);
    FAIL("expected bilevel::numerical_error");
  } catch (const bilevel::numerical_error& e) {
    const std::string what = e.what();
    CHECK(what.find("level 'lambda' parameters became NaN/Inf at outer iteration 2, step 0") != std::string::npos);
    CHECK(what.find("read after 4 outer iterations") != std::string::npos);
    CHECK(e.level() == 1);
    CHECK(e.iteration() == 2);
    CHECK(e.step() == 0);
  }
  CHECK(later.iteration() == 4);
  CHECK_FALSE(P::all_finite(later.level<0>().theta));  // the steps after the failure were taken
}

TEST_CASE("deferred checks: settings that cannot work are refused; checkpoints hold only checked steps") {
  auto s = ridge_with_flaky_outer({});
  CHECK_THROWS_WITH_AS(s.on_failure({.check_every = 0}), doctest::Contains("check_every must be >= 1"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(s.on_failure({.non_finite = bilevel::failure_action::skip_step, .check_every = 3}),
                       doctest::Contains("can only stop"), std::invalid_argument);
  s.on_failure({.check_every = 3});
  s.step_level(0);
  const auto path = temp_file("deferred.ckpt");
  CHECK_THROWS_WITH_AS(s.save_checkpoint(path), doctest::Contains("call flush_checks() before save_checkpoint"),
                       bilevel::checkpoint_error);
  s.flush_checks();
  s.save_checkpoint(path);
  // run() reads before each checkpoint it writes, whatever the two periods.
  auto t = ridge_with_flaky_outer({});
  t.on_failure({.check_every = 3}).checkpoint_every(2, path);
  CHECK(t.run(5).checkpoints_written == 2);
  std::filesystem::remove(path);
}

TEST_CASE("failure policy: skip_step drops the failing step and goes on") {
  auto s = ridge_with_flaky_outer({1, 3});
  s.on_failure({.non_finite = bilevel::failure_action::skip_step});
  std::vector<bilevel::failure_event> events;
  std::vector<std::vector<double>> lambda_after;
  const auto summary = s.run(5, {.on_iteration = [&](const bilevel::iteration_event&) {
                                   lambda_after.push_back(test::host<P>(s.level<1>().theta));
                                   return true;
                                 },
                                 .on_failure = [&](const bilevel::failure_event& e) { events.push_back(e); }});
  CHECK(summary.iterations == 5);
  CHECK(summary.skipped_steps == 2);
  REQUIRE(events.size() == 2);
  CHECK(events[0].level == 1);
  CHECK(events[0].iteration == 1);
  CHECK(events[1].iteration == 3);
  CHECK(events[0].action == bilevel::failure_action::skip_step);
  CHECK(P::all_finite(s.level<1>().theta));
  // The skipped iterations left λ exactly where the previous one put it; the others moved it.
  CHECK(lambda_after[1] == lambda_after[0]);
  CHECK(lambda_after[2] != lambda_after[1]);
  CHECK(lambda_after[3] == lambda_after[2]);
}

TEST_CASE("failure policy: roll_back restores every level to the start of the failing iteration") {
  auto s = ridge_with_flaky_outer({1});
  s.on_failure({.non_finite = bilevel::failure_action::roll_back});
  std::vector<std::vector<std::vector<double>>> after;
  const auto summary = s.run(3, {.on_iteration = [&](const bilevel::iteration_event&) {
    after.push_back({test::host<P>(s.level<0>().theta), test::host<P>(s.level<1>().theta)});
    return true;
  }});
  CHECK(summary.rollbacks == 1);
  CHECK(after[1] == after[0]);  // θ took 5 good steps in iteration 1, then was rolled back with λ
  CHECK(after[2] != after[1]);
}

TEST_CASE("failure policy: recovery gives up after too many failures in a row") {
  auto s = ridge_with_flaky_outer({0, 1, 2, 3, 4, 5});
  s.on_failure({.non_finite = bilevel::failure_action::skip_step, .max_consecutive_failures = 3});
  CHECK_THROWS_WITH_AS(s.run(10), doctest::Contains("giving up after 4 consecutive failures"), bilevel::numerical_error);
  CHECK_THROWS_WITH_AS(s.on_failure({.non_finite = bilevel::failure_action::accept}),
                       doctest::Contains("cannot be accepted"), std::invalid_argument);
}

TEST_CASE("failure policy: an unconverged CG solve is reported with its residual, or stops the run") {
  // One CG iteration cannot solve a 6-dimensional system to 1e-10.
  const hg::implicit_cg one_step{.max_iterations = 1};
  auto accepting = ridge_with_flaky_outer({}, one_step);
  bool saw_unconverged = false;
  accepting.run(2, {.on_step = [&](const bilevel::step_event& e) {
    for (const auto& r : e.reports) saw_unconverged |= !r.converged && r.residual > 1e-6;
  }});
  CHECK(saw_unconverged);

  auto strict = ridge_with_flaky_outer({}, one_step);
  strict.on_failure({.unconverged_solve = bilevel::failure_action::stop});
  try {
    strict.run(2);
    FAIL("expected bilevel::convergence_error");
  } catch (const bilevel::convergence_error& e) {
    CHECK(std::string(e.what()).find("the implicit_cg solve for level 'theta' did not converge: relative residual") !=
          std::string::npos);
    CHECK(e.residual() > 1e-6);
    CHECK(e.level() == 1);
  }

  // Deferred checks with unconverged solves skipped or rolled back: the undone steps leave the
  // log with the rest, their events are not delivered, and the run goes on.
  for (const auto action : {bilevel::failure_action::skip_step, bilevel::failure_action::roll_back}) {
    CAPTURE(std::string(bilevel::to_string(action)));
    auto deferred = ridge_with_flaky_outer({}, one_step);
    deferred.on_failure({.unconverged_solve = action, .max_consecutive_failures = 100, .check_every = 3});
    std::size_t events = 0, lambda_events = 0;
    const auto summary = deferred.run(5, {.on_step = [&](const bilevel::step_event& e) {
                                            ++events;
                                            lambda_events += e.level == 1;
                                          }});
    CHECK(summary.iterations == 5);
    CHECK(lambda_events == 0);  // every λ step's solve was unconverged: none was taken
    if (action == bilevel::failure_action::skip_step) {
      CHECK(summary.skipped_steps == 5);
      CHECK(events == 5 * 5);  // θ's five steps per iteration were kept
    } else {
      CHECK(summary.rollbacks == 5);
      CHECK(events == 0);  // rolled back with their iteration
    }
  }
}

TEST_CASE("bad input: data sets with NaN, bad labels or no rows are named before training") {
  bilevel::data::dataset bad = *train_set;
  bad.features[8 * 5 + 2] = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_WITH_AS(bad.validate("train"), doctest::Contains("train row 5 column 2 is nan"), std::invalid_argument);
  auto shared_bad = std::make_shared<const bilevel::data::dataset>(bad);
  CHECK_THROWS_WITH_AS(bilevel::learners::dataset_batches<P>(shared_bad, 10, 1), doctest::Contains("NaN/Inf in the inputs"),
                       std::invalid_argument);
  bilevel::data::dataset empty;
  empty.num_classes = 3;
  CHECK_THROWS_WITH_AS(empty.validate("validation"), doctest::Contains("validation is empty"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(bilevel::methods::meta_weight_net<P>(train_set, validation_set, {.widths = {8, 6, 3}, .validation_batch = 100}),
                       doctest::Contains("batch size 100 exceeds the 30 rows"), std::invalid_argument);
}

TEST_CASE("bad input: strategy settings that make no sense are refused when the level is built") {
  auto with = [](auto strategy) {
    return bilevel::make_level("theta", bilevel::problems::ridge_training_loss<P>(ridge.train), sgd{.lr = 0.1}, strategy,
                               P::zeros(d));
  };
  CHECK_THROWS_WITH_AS(with(hg::implicit_cg{.max_iterations = 0}), doctest::Contains("max_iterations 0"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(with(hg::implicit_cg{.damping = -1.0}), doctest::Contains("damping -1"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(with(hg::neumann{.step = std::numeric_limits<double>::quiet_NaN()}),
                       doctest::Contains("step nan"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(with(hg::fixed_point{.max_iterations = 0}), doctest::Contains("max_iterations >= 1"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(with(hg::unrolled{.keep_last = 0}), doctest::Contains("keep_last must be >= 1"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(with(hg::lookahead{.steps = 0}), doctest::Contains("steps must be >= 1"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(with(hg::finite_difference{.scale = -1e-3}), doctest::Contains("scale must be finite"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(sgd{.lr = std::numeric_limits<double>::infinity()}.init(P::zeros(1)),
                       doctest::Contains("learning rate"), std::invalid_argument);
}

TEST_CASE("bad input: a schedule that is not a permutation of the levels is refused") {
  auto s = small_mwn();
  CHECK_THROWS_WITH_AS(s.schedule({0, 0}), doctest::Contains("not a permutation"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(s.schedule({0}), doctest::Contains("1 entries for 2 levels"), std::invalid_argument);
}

// ---------------------------------------------------------------------------------------------
// A finite-difference hypergradient perturbs θ by ±εv to take its differences. A peer library
// once left the perturbed weights in its model; here every level's parameters and optimizer
// state must be, bit for bit, what they were before the hypergradient was taken.

#include <cstring>

namespace {
/// The ridge training loss with its first-order members only, so that every product falls
/// back to central differences.
class ridge_without_products {
 public:
  using policy = P;
  using batch_type = bilevel::full_batch;
  explicit ridge_without_products(bilevel::problems::ridge_training_loss<P> inner) : inner_(std::move(inner)) {}
  [[nodiscard]] std::size_t num_parameters() const { return inner_.num_parameters(); }
  [[nodiscard]] std::size_t num_inputs() const { return inner_.num_inputs(); }
  [[nodiscard]] std::size_t input_size(std::size_t s) const { return inner_.input_size(s); }
  double loss(const P::vector& theta, bilevel::input_list<P> in, const batch_type& b) const {
    return inner_.loss(theta, in, b);
  }
  double gradient(const P::vector& theta, bilevel::input_list<P> in, const batch_type& b, P::vector& out) const {
    return inner_.gradient(theta, in, b, out);
  }
  void input_gradient(const P::vector& theta, bilevel::input_list<P> in, const batch_type& b, std::size_t s,
                      P::vector& out) const {
    inner_.input_gradient(theta, in, b, s, out);
  }

 private:
  bilevel::problems::ridge_training_loss<P> inner_;
};

/// Momentum (and weight decay) on both levels, so that each has an optimizer buffer to keep.
template <class Learner, class Strategy>
auto ridge_with_momentum(Learner learner, Strategy strategy, bool force_finite_differences) {
  auto inner = bilevel::make_level("theta", std::move(learner), sgd{.lr = 0.1, .momentum = 0.9, .weight_decay = 0.01},
                                   strategy, P::zeros(d))
                   .reading({1})
                   .steps_per_iteration(4);
  inner.second_order.force_finite_differences = force_finite_differences;
  auto outer = bilevel::make_level("lambda", bilevel::problems::validation_least_squares<P>(ridge.validation, d),
                                   sgd{.lr = 0.5, .momentum = 0.5}, hg::first_order{}, P::zeros(d))
                   .reading({0});
  return bilevel::solver(std::move(inner), std::move(outer));
}


/// Takes a few steps, then two hypergradients; checks that neither moved anything and that
/// both are the same bits (a perturbation left behind would shift the second).
template <class Solver>
void check_restored(Solver s, const char* what) {
  CAPTURE(what);
  s.run(3);
  s.step_level(0);  // mid-iteration too: the lower level's block is the latest thing it did
  const auto before = test::state_bits(s);
  auto untouched = s;
  REQUIRE(s.template level<0>().state.buffers.size() == 1);
  REQUIRE(s.template level<1>().state.buffers.size() == 1);
  REQUIRE(test::norm(test::host<P>(s.template level<0>().state.buffers[0])) > 0.0);
  const auto first = s.hypergradient(1);
  CHECK(test::state_bits(s) == before);
  const auto second = s.hypergradient(1);
  CHECK(test::state_bits(s) == before);
  REQUIRE(first.reports.size() == 1);
  CHECK_FALSE(first.reports[0].exact_second_order);  // central differences did run
  const auto g1 = test::host<P>(first.gradient), g2 = test::host<P>(second.gradient);
  REQUIRE(g1.size() == g2.size());
  CHECK(std::memcmp(g1.data(), g2.data(), g1.size() * sizeof(double)) == 0);
  CHECK(test::norm(g1) > 0.0);
  // And the run goes on from exactly where it was: as a copy that never took them does.
  s.run(1);
  untouched.run(1);
  CHECK(test::state_bits(s) != before);
  CHECK(test::state_bits(s) == test::state_bits(untouched));
}
}  // namespace

TEST_CASE("finite differences leave every level's parameters and optimizer state exactly as they were") {
  using bilevel::problems::ridge_training_loss;
  // DARTS's strategy: a virtual step, then differences of the input gradient around θ.
  check_restored(ridge_with_momentum(ridge_training_loss<P>(ridge.train), hg::finite_difference{}, false),
                 "finite_difference");
  check_restored(ridge_with_momentum(ridge_training_loss<P>(ridge.train), hg::finite_difference{.scale = 1e-1}, false),
                 "finite_difference, large scale");
  // Exact products available but central differences forced (second_order_options).
  check_restored(ridge_with_momentum(ridge_training_loss<P>(ridge.train), hg::unrolled{}, true), "unrolled, forced");
  check_restored(ridge_with_momentum(ridge_training_loss<P>(ridge.train), hg::implicit_cg{}, true),
                 "implicit_cg, forced");
  check_restored(ridge_with_momentum(ridge_training_loss<P>(ridge.train), hg::lookahead{.steps = 2}, true),
                 "lookahead, forced");
  check_restored(ridge_with_momentum(ridge_training_loss<P>(ridge.train), hg::fixed_point{.max_iterations = 20}, true),
                 "fixed_point, forced");
  // No exact products at all: every product is the fallback.
  check_restored(ridge_with_momentum(ridge_without_products(ridge_training_loss<P>(ridge.train)), hg::unrolled{}, false),
                 "unrolled, fallback");
  check_restored(ridge_with_momentum(ridge_without_products(ridge_training_loss<P>(ridge.train)), hg::neumann{}, false),
                 "neumann, fallback");
  check_restored(ridge_with_momentum(ridge_without_products(ridge_training_loss<P>(ridge.train)), hg::forward_mode{},
                                     false),
                 "forward_mode, fallback");
}
