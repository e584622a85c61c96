// SPDX-License-Identifier: MIT
#pragma once
/// \file
/// The one solver: any number (>= 2) of levels, each with its own learner, optimizer and
/// hypergradient strategy, chained through the edges their `reads` lists declare.
///
/// Schedule. One outer iteration runs every level's block of steps, lowest level first. A
/// level steps along the total derivative of its own objective: its plain gradient when no
/// level below depends on it, its hypergradient otherwise.
///
/// Hypergradient of level j. Let D be the levels below j that j's objective reads, directly
/// or through other levels below j. Each level in D is replaced by its strategy's response
/// (its best response as the strategy sees it), computed from the values it reads; j's
/// objective is evaluated on those; then adjoints flow back through D in reverse
/// topological order, each strategy's vjp() turning the adjoint of its level's solution
/// into adjoints of what it read: contributions to θ_j are summed, contributions to levels
/// in D flow on, contributions to levels above j are dropped (they are held fixed). This is
/// the chain rule over the composition of best-response maps, exact whenever they compose:
/// every method in bilevel/methods/ (LFM, LFM-CW, SGL, DARTS, reweighting) has that shape.
///
/// One shape does not compose: a level i that reads the *variable* of a level k which in
/// turn reads i's *solution* (a cycle i → k → i below j, the classic trilevel nesting). Then
/// k's best response depends on i's best response to k, whose derivative needs third-order
/// terms. The solver processes k first and drops i's adjoint on θ_k, the approximation
/// Betty and the LFM code also make, and sets `approximated` in the result.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <filesystem>
#include <functional>
#include <limits>
#include <optional>
#include <span>
#include <sstream>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "bilevel/core/checkpoint.hpp"
#include "bilevel/core/device_loss.hpp"
#include "bilevel/core/errors.hpp"
#include "bilevel/core/failure_policy.hpp"
#include "bilevel/core/hypergradient_report.hpp"
#include "bilevel/core/level.hpp"
#include "bilevel/core/policy_stream.hpp"
#include "bilevel/core/step_capture.hpp"
#include "bilevel/core/step_check_log.hpp"

namespace bilevel {

/// A hypergradient and what it cost, one report per strategy that took part.
template <tensor_policy P>
struct hypergradient_result {
  vector_t<P> gradient;   ///< dF_j/dθ_j, total
  double loss = 0.0;      ///< F_j at the responses of the levels below
  std::vector<hypergradient_report> reports;
  bool approximated = false;  ///< a cycle below j was cut (see solver.hpp)
};

/// Passed to `on_step` after every optimizer step of every level.
struct step_event {
  std::size_t iteration;   ///< outer iteration, from 0
  std::size_t level;       ///< level index, lowest = 0
  std::string_view level_name;
  std::size_t step;        ///< step within the level's block
  double loss;             ///< the level's objective before the step
  double gradient_norm;    ///< of the (hyper)gradient applied
  std::span<const hypergradient_report> reports;  ///< empty for a plain gradient step
};

/// Passed to `on_iteration` after every outer iteration; return false to stop early.
struct iteration_event {
  std::size_t iteration;  ///< the outer iteration just finished, from 0
  std::size_t total;      ///< iterations requested in this run()
};

/// Passed to `on_epoch` for every pass over its data set that a level's sampler completes;
/// return false to stop early.
struct epoch_event {
  std::size_t level;      ///< the level whose sampler it is (solver_callbacks::epoch_level)
  std::size_t epoch;      ///< the pass just completed, from 0
  std::size_t iteration;  ///< the outer iteration in which its last batch was taken, from 0
};

struct solver_callbacks {
  std::function<void(const step_event&)> on_step{};
  std::function<bool(const iteration_event&)> on_iteration{};
  std::function<void(const failure_event&)> on_failure{};  ///< a failure the policy recovered from
  /// Called at the end of an outer iteration once for each pass over its data set that level
  /// `epoch_level`'s sampler completed in it, so that per-epoch work (evaluation, logging)
  /// follows the sampler's real epochs; counting iterations by hand drifts from them as soon
  /// as a level takes several steps per iteration, skips the rows of a short last batch, or
  /// draws its batches ahead (peek_batch: a batch counts when it is used, not when drawn). A
  /// sampler that has no epochs (no `epochs_completed()`; with-replacement samplers report 0)
  /// never fires. Returning false ends run() after this iteration, like on_iteration.
  std::function<bool(const epoch_event&)> on_epoch{};
  std::size_t epoch_level = 0;  ///< the level whose sampler's epochs on_epoch reports
};

struct run_summary {
  std::size_t iterations = 0;
  bool stopped_early = false;
  std::size_t skipped_steps = 0;        ///< steps dropped by failure_action::skip_step
  std::size_t rollbacks = 0;            ///< iterations undone by failure_action::roll_back
  std::size_t checkpoints_written = 0;  ///< by checkpoint_every
};

template <class... Levels>
class solver {
  static_assert(sizeof...(Levels) >= 2, "bilevel::solver needs at least two levels");
  static_assert((level_like<Levels> && ...),
                "bilevel::solver: every argument must be a level (build them with bilevel::make_level)");
  using P = typename std::tuple_element_t<0, std::tuple<Levels...>>::policy;
  static_assert((std::is_same_v<typename Levels::policy, P> && ...),
                "bilevel::solver: every level must use the same tensor policy");
  using vector = vector_t<P>;
  static constexpr std::size_t N = sizeof...(Levels);

 public:
  using policy = P;

  explicit solver(Levels... levels) : levels_(std::move(levels)...) {
    for (std::size_t j = 0; j < N; ++j) {
      const auto reads = reads_of(j);
      for (std::size_t k : reads) {
        if (k >= N)
          throw std::invalid_argument("bilevel::solver: level '" + name_of(j) + "' reads level " +
                                      std::to_string(k) + " but there are only " + std::to_string(N) + " levels");
        if (k == j)
          throw std::invalid_argument("bilevel::solver: level '" + name_of(j) + "' reads itself");
        if (k < j && !input_differentiable(j))
          throw std::invalid_argument("bilevel::solver: level '" + name_of(j) + "' reads the solution of level '" +
                                      name_of(k) + "', so its learner needs input_gradient()");
      }
    }
    for (std::size_t j = 0; j < N; ++j) check_input_shapes(j);
    for (std::size_t j = 0; j < N; ++j) plan_[j] = make_plan(j);
    for (std::size_t j = 0; j < N; ++j) order_[j] = j;
  }

  /// Level i, typed.
  template <std::size_t I> auto& level() { return std::get<I>(levels_); }
  template <std::size_t I> const auto& level() const { return std::get<I>(levels_); }
  static constexpr std::size_t size() { return N; }

  /// Runs `iterations` outer iterations (or until on_iteration returns false).
  run_summary run(std::size_t iterations, const solver_callbacks& callbacks = {}) {
    const policy_stream_scope_t<P> on_own_stream(stream_);
    run_summary summary;
    const auto skipped0 = skipped_steps_, rollbacks0 = rollbacks_;
    for (std::size_t it = 0; it < iterations; ++it) {
      bool go_on = iterate_reporting_epochs(callbacks);
      summary.iterations = it + 1;
      summary.skipped_steps = skipped_steps_ - skipped0;
      summary.rollbacks = rollbacks_ - rollbacks0;
      const bool checkpoint_now = checkpoint_every_ > 0 && iteration_ % checkpoint_every_ == 0;
      // A checkpoint holds only checked steps; so does the end of a run.
      if (checkpoint_now || it + 1 == iterations) flush_checks(callbacks);
      if (checkpoint_now) {
        save_checkpoint(checkpoint_path_);
        ++summary.checkpoints_written;
      }
      if (callbacks.on_iteration && !callbacks.on_iteration({iteration_ - 1, iterations})) go_on = false;
      if (!go_on) {
        flush_checks(callbacks);
        summary.stopped_early = summary.iterations < iterations;
        break;
      }
    }
    return summary;
  }

  /// The order in which the levels take their blocks within an outer iteration; by default
  /// the lowest first. Meta-Weight-Net, L2RW and DARTS step the upper level first (with
  /// lookahead{.on_next_batch = true} its virtual step sees the batch the real step takes);
  /// LFM steps its top level, then W1, then W2. Must be a permutation of 0..N−1.
  solver& schedule(std::vector<std::size_t> order) {
    std::vector<char> seen(N, 0);
    if (order.size() != N)
      throw std::invalid_argument("bilevel::solver::schedule: " + std::to_string(order.size()) + " entries for " +
                                  std::to_string(N) + " levels");
    for (std::size_t j : order) {
      if (j >= N || seen[j])
        throw std::invalid_argument("bilevel::solver::schedule: not a permutation of the levels (entry " +
                                    std::to_string(j) + ")");
      seen[j] = 1;
    }
    std::copy(order.begin(), order.end(), order_.begin());
    return *this;
  }

  /// One outer iteration: every level's block, in schedule order (lowest first by default).
  /// on_epoch fires here too; what it returns matters only to run().
  void iterate(const solver_callbacks& callbacks = {}) { (void)iterate_reporting_epochs(callbacks); }

  /// Passes over its data set that level j's sampler has completed with the batches the level
  /// has used, or nothing when its sampler has no epochs (see solver_callbacks::on_epoch).
  [[nodiscard]] std::optional<std::size_t> epochs_completed(std::size_t j) const {
    if (j >= N)
      throw std::invalid_argument("bilevel::solver: no level " + std::to_string(j) + " (there are " +
                                  std::to_string(N) + ")");
    std::optional<std::size_t> n;
    visit(j, [&](const auto& lv) {
      using S = typename std::remove_cvref_t<decltype(lv)>::sampler_type;
      if constexpr (requires { { lv.epochs_completed() } -> std::convertible_to<std::size_t>; })
        n = lv.epochs_completed();
      else if constexpr (epoch_counting_sampler<S>)
        n = lv.sampler.epochs_completed();
    });
    return n;
  }

 private:
  /// iterate(), then on_epoch for the passes completed in it; false when on_epoch said stop.
  bool iterate_reporting_epochs(const solver_callbacks& callbacks) {
    std::optional<std::size_t> before;
    if (callbacks.on_epoch) {
      if (callbacks.epoch_level >= N)
        throw std::invalid_argument("bilevel::solver: on_epoch watches level " + std::to_string(callbacks.epoch_level) +
                                    " but there are only " + std::to_string(N) + " levels");
      before = epochs_completed(callbacks.epoch_level);
    }
    {
      // Entered before a capture begins: a stream change inside one would tie the captured
      // stream to work outside it.
      const policy_stream_scope_t<P> on_own_stream(stream_);
      capture_.run(stream_, [&] { iterate_levels(callbacks); });
    }
    if (iteration_ % policy_.check_every == 0) flush_checks(callbacks);
    if (!before) return true;
    const std::size_t after = epochs_completed(callbacks.epoch_level).value_or(*before);
    bool go_on = true;
    for (std::size_t e = *before; e < after && go_on; ++e)
      go_on = callbacks.on_epoch({callbacks.epoch_level, e, iteration_ - 1});
    return go_on;
  }

  void iterate_levels(const solver_callbacks& callbacks) {
    const policy_stream_scope_t<P> on_own_stream(stream_);
    const bool may_roll_back = policy_.non_finite == failure_action::roll_back ||
                               policy_.unconverged_solve == failure_action::roll_back ||
                               policy_.non_stationary == failure_action::roll_back;
    std::vector<std::pair<vector, optimizer_state<P>>> snapshot;
    const std::size_t logged = log_.steps();
    if (may_roll_back)
      for (std::size_t j = 0; j < N; ++j) visit(j, [&](auto& lv) { snapshot.emplace_back(lv.theta, lv.state); });
    try {
      for (std::size_t j : order_) step_level(j, callbacks);
    } catch (const numerical_error& e) {
      if (action_for(e) != failure_action::roll_back) throw;
      log_.drop_steps_from(logged);  // the undone steps are not checked
      for (std::size_t j = 0; j < N; ++j)
        visit(j, [&](auto& lv) {
          P::copy(snapshot[j].first, lv.theta);
          lv.state = snapshot[j].second;
        });
      ++rollbacks_;
      recovered(e, failure_action::roll_back, callbacks);
    }
    ++iteration_;
  }

 public:
  /// What to do when a step fails numerically (see core/failure_policy.hpp). Default: stop
  /// on NaN/Inf, accept unconverged solves (their reports say so), check no stationarity.
  solver& on_failure(const failure_policy& policy) {
    if (policy.non_finite == failure_action::accept)
      throw std::invalid_argument("bilevel::solver: a NaN/Inf step cannot be accepted; choose stop, skip_step or roll_back");
    if (policy.check_every == 0)
      throw std::invalid_argument("bilevel::solver: check_every must be >= 1 (1: check every step as it is made)");
    if (policy.check_every > 1 && policy.non_finite != failure_action::stop)
      throw std::invalid_argument("bilevel::solver: deferred checks (check_every = " +
                                  std::to_string(policy.check_every) + ") find a NaN/Inf only after later steps "
                                  "were taken, so they can only stop: set non_finite = stop, or check_every = 1 "
                                  "to " + std::string(to_string(policy.non_finite)));
    if (!(policy.stationarity_tolerance >= 0.0))
      throw std::invalid_argument("bilevel::solver: stationarity_tolerance must be >= 0 (+Inf: no check), got " +
                                  std::to_string(policy.stationarity_tolerance));
    policy_ = policy;
    capture_.reprobe();  // what a step reads back may have changed with the checks
    return *this;
  }
  [[nodiscard]] const failure_policy& failure_handling() const { return policy_; }

  /// Captures each outer iteration of run() and iterate() as one device graph and launches it
  /// as one, on a back end that has graphs (the CUDA policy): the results are the plain
  /// launches' bit for bit, with one launch instead of one per kernel and cuBLAS call
  /// (core/step_capture.hpp says how, and what cannot be captured). The first iteration after
  /// this call runs plainly as a probe; an iteration that reads a value back on the host
  /// cannot be captured, so capture needs deferred checks (failure_policy::check_every > 1).
  /// Where capture is impossible the iterations run plainly and capture_report().fallback
  /// says why; the host policies have no graphs and say that. Off by default.
  solver& capture_steps(bool on = true) {
    capture_.request(on);
    return *this;
  }
  /// What capture_steps did: steps captured and plain, graphs made and updated, why not.
  [[nodiscard]] const step_capture_report& capture_report() const noexcept { return capture_.report(); }

  /// Saves the whole solver state after every `iterations` outer iterations of run() to
  /// `path` (atomically: the previous file survives a crash mid-write). 0 turns it off.
  solver& checkpoint_every(std::size_t iterations, std::filesystem::path path) {
    if (iterations > 0 && path.empty()) throw std::invalid_argument("bilevel::solver: checkpoint path is empty");
    checkpoint_every_ = iterations;
    checkpoint_path_ = std::move(path);
    return *this;
  }

  /// Saves every level's parameters and optimizer state, the samplers' generators and
  /// positions, and the iteration counter. Resuming from it with load_checkpoint continues
  /// bit-identically to a run that was never interrupted (same build, same back end).
  ///
  /// Data-parallel solvers (bilevel/distributed/data_parallel.hpp) write on rank 0 only: a
  /// level's learner that says `writes_checkpoints()` is false makes this a no-op here, so the
  /// ranks never write one file at once.
  void save_checkpoint(const std::filesystem::path& path) const {
    const policy_stream_scope_t<P> on_own_stream(stream_);
    bool writer = true;
    for (std::size_t j = 0; j < N; ++j)
      visit(j, [&](const auto& lv) {
        if constexpr (requires { { lv.learner.writes_checkpoints() } -> std::convertible_to<bool>; })
          writer = writer && lv.learner.writes_checkpoints();
      });
    for (std::size_t j = 0; j < N; ++j)
      visit(j, [&](const auto& lv) {
        if constexpr (requires { lv.has_peeked_batch(); })
          if (lv.has_peeked_batch())
            throw checkpoint_error("bilevel: level '" + lv.name + "' holds a peeked batch; save checkpoints between "
                                   "outer iterations");
      });
    if (!log_.empty())
      throw checkpoint_error("bilevel: " + std::to_string(log_.steps()) + " steps' deferred checks have not been "
                             "read; call flush_checks() before save_checkpoint");
    checkpoint_writer w;
    w.text("bilevel::solver");
    w.u64(N);
    w.u64(iteration_);
    for (std::size_t j = 0; j < N; ++j)
      visit(j, [&](const auto& lv) {
        w.text(lv.name);
        const auto theta = P::to_host(lv.theta);
        w.values(std::span<const scalar_t<P>>(theta));
        w.u64(lv.state.step);
        w.u64(lv.state.buffers.size());
        for (const auto& b : lv.state.buffers) {
          const auto host = P::to_host(b);
          w.values(std::span<const scalar_t<P>>(host));
        }
        // The learner's own state (batch normalization's running statistics, the dropout
        // step counter): empty for a learner without any.
        std::vector<double> learner_state;
        if constexpr (has_learner_state<typename std::remove_cvref_t<decltype(lv)>::learner_type>)
          learner_state = lv.learner.state();
        w.values(std::span<const double>(learner_state));
      });
    // Samplers last, in level order, as load_checkpoint reads them.
    for (std::size_t j = 0; j < N; ++j)
      visit(j, [&](const auto& lv) {
        using S = typename std::remove_cvref_t<decltype(lv)>::sampler_type;
        if constexpr (checkpointable_sampler<S>) {
          lv.sampler.save_state(w);
        } else {
          static_assert(std::is_empty_v<S>,
                        "bilevel::solver::save_checkpoint: a level's sampler has state but no "
                        "`save_state(checkpoint_writer&) const` / `load_state(checkpoint_reader&)`, so a resumed "
                        "run could not draw the same batches (see bilevel/core/checkpoint.hpp)");
        }
      });
    if (writer) write_checkpoint_file(path, w.bytes(), sizeof(scalar_t<P>));
  }

  /// Restores what save_checkpoint wrote. The file is checked in full (magic, version, scalar
  /// type, checksum, level names, parameter and buffer sizes, sampler shapes) before anything
  /// changes: on checkpoint_error the solver is exactly as it was.
  void load_checkpoint(const std::filesystem::path& path) {
    const policy_stream_scope_t<P> on_own_stream(stream_);
    const std::string payload = read_checkpoint_file(path, sizeof(scalar_t<P>));
    checkpoint_reader r(payload);
    const std::string where = "checkpoint '" + path.string() + "'";
    if (r.text("kind") != "bilevel::solver") throw checkpoint_error("bilevel: " + where + " was not written by a solver");
    if (const auto n = r.u64("level count"); n != N)
      throw checkpoint_error("bilevel: " + where + " has " + std::to_string(n) + " levels, this solver " + std::to_string(N));
    const std::size_t iteration = r.u64("iteration");
    std::vector<vector> thetas(N);
    std::vector<optimizer_state<P>> states(N);
    std::vector<std::vector<double>> learner_states(N);
    auto samplers = std::apply([](const auto&... lv) { return std::make_tuple(lv.sampler...); }, levels_);
    for (std::size_t j = 0; j < N; ++j)
      visit(j, [&](auto& lv) {
        const std::string name = r.text("level name");
        if (name != lv.name)
          throw checkpoint_error("bilevel: " + where + " level " + std::to_string(j) + " is '" + name +
                                 "', this solver's is '" + lv.name + "'");
        const auto theta = r.template values<scalar_t<P>>("parameters");
        if (theta.size() != P::size(lv.theta))
          throw checkpoint_error("bilevel: " + where + " level '" + name + "' has " + std::to_string(theta.size()) +
                                 " parameters, this solver's has " + std::to_string(P::size(lv.theta)));
        thetas[j] = P::from_host(theta);
        states[j].step = r.u64("optimizer step");
        const auto buffers = r.u64("optimizer buffer count");
        if (buffers != lv.state.buffers.size())
          throw checkpoint_error("bilevel: " + where + " level '" + name + "' has " + std::to_string(buffers) +
                                 " optimizer buffers, this solver's optimizer has " +
                                 std::to_string(lv.state.buffers.size()) + " (another optimizer?)");
        for (std::size_t b = 0; b < buffers; ++b) {
          const auto host = r.template values<scalar_t<P>>("optimizer buffer");
          if (host.size() != P::size(lv.state.buffers[b]))
            throw checkpoint_error("bilevel: " + where + " level '" + name + "' optimizer buffer " + std::to_string(b) +
                                   " has the wrong size");
          states[j].buffers.push_back(P::from_host(host));
        }
        learner_states[j] = r.template values<double>("learner state");
        std::size_t expected = 0;
        if constexpr (has_learner_state<typename std::remove_cvref_t<decltype(lv)>::learner_type>)
          expected = lv.learner.state().size();
        if (learner_states[j].size() != expected)
          throw checkpoint_error("bilevel: " + where + " level '" + name + "' has " +
                                 std::to_string(learner_states[j].size()) + " learner state values, this solver's "
                                 "learner keeps " + std::to_string(expected) + " (another network?)");
        // A learner that can tell a state it cannot take (a data-parallel learner: one written
        // with another number of ranks) says so now, before anything changes.
        if constexpr (requires(std::span<const double> st) { lv.learner.check_state(st); })
          lv.learner.check_state(std::span<const double>(learner_states[j]));
      });
    load_samplers(r, samplers, std::make_index_sequence<N>{});
    if (!r.at_end()) throw checkpoint_error("bilevel: " + where + " has trailing data (written by another solver?)");
    // Everything parsed and checked: commit (nothing below throws). Steps logged for
    // deferred checks belong to the trajectory left behind.
    log_.drop_steps_from(0);
    for (std::size_t j = 0; j < N; ++j)
      visit(j, [&](auto& lv) {
        lv.theta = std::move(thetas[j]);
        lv.state = std::move(states[j]);
        if constexpr (has_learner_state<typename std::remove_cvref_t<decltype(lv)>::learner_type>)
          lv.learner.restore(learner_states[j]);  // sizes checked above
      });
    [&]<std::size_t... I>(std::index_sequence<I...>) {
      (commit_sampler(std::get<I>(levels_).sampler, std::get<I>(samplers)), ...);
    }(std::make_index_sequence<N>{});
    iteration_ = iteration;
  }

  /// Level j's block of steps (its `steps` optimizer steps).
  void step_level(std::size_t j, const solver_callbacks& callbacks = {}) {
    const policy_stream_scope_t<P> on_own_stream(stream_);
    const bool may_skip = policy_.non_finite == failure_action::skip_step ||
                          policy_.unconverged_solve == failure_action::skip_step ||
                          policy_.non_stationary == failure_action::skip_step;
    const bool deferred = policy_.check_every > 1;
    visit(j, [&](auto& lv) {
      const auto in_ptrs = current_inputs(lv);
      const input_list<P> in(in_ptrs);
      lv.engine.begin_block(lv, in);
      for (std::size_t t = 0; t < lv.steps; ++t) {
        const auto batch = lv.next_batch();
        hypergradient_result<P> hg;
        const std::size_t logged = log_.steps();
        // Deferred checks: this step's loss and flags go to entries of the log (by index: a
        // reference would not survive the next step's entries).
        const std::size_t first =
            deferred ? log_.begin_step(iteration_, j, t, plan_[j].order.size()).first : std::size_t(0);
        auto require_finite_parameters_now = [&](const vector& theta) {
          if (deferred) log_.mark_nonfinite(theta, first + log_.parameters_flag);
          else require_finite_parameters(j, t, theta);
        };
        try {
          if (plan_[j].below.empty()) {
            if (deferred)
              gradient_into(lv.learner, lv.theta, in, batch, hg.gradient, {&log_.values(), first + log_.loss_entry});
            else
              hg.loss = lv.learner.gradient(lv.theta, in, batch, hg.gradient);
          } else {
            hg = hypergradient(j, batch, t, deferred ? &first : nullptr);
          }
          if (deferred) log_.mark_nonfinite(hg.gradient, first + log_.gradient_flag);
          else require_finite(j, t, hg);
          require_converged(j, t, hg);
          require_stationary(j, t, hg);
          if (may_skip) {
            // Take the step on copies, so a failure leaves the level (and its engine's
            // record of steps) as if the step had never been tried.
            vector theta = lv.theta;
            auto state = lv.state;
            lv.optimizer.step(theta, state, hg.gradient);
            require_finite_parameters_now(theta);
            lv.engine.on_step(lv, in, batch, hg.gradient);
            if constexpr (has_real_step_hook<typename std::decay_t<decltype(lv)>::learner_type>)
              lv.learner.on_real_step(lv.theta, in, batch);
            lv.theta = std::move(theta);
            lv.state = std::move(state);
          } else {
            lv.engine.on_step(lv, in, batch, hg.gradient);
            if constexpr (has_real_step_hook<typename std::decay_t<decltype(lv)>::learner_type>)
              lv.learner.on_real_step(lv.theta, in, batch);
            lv.optimizer.step(lv.theta, lv.state, hg.gradient);
            require_finite_parameters_now(lv.theta);
          }
        } catch (const numerical_error& e) {
          log_.drop_steps_from(logged);  // not taken: nothing to check
          if (action_for(e) != failure_action::skip_step) throw;
          ++skipped_steps_;
          recovered(e, failure_action::skip_step, callbacks);
          continue;
        }
        consecutive_failures_[j] = 0;
        if (callbacks.on_step) {
          if (deferred) log_.hold_event(hg.gradient, hg.reports);
          else callbacks.on_step({iteration_, j, lv.name, t, hg.loss, P::norm(hg.gradient), hg.reports});
        }
      }
    });
  }

  /// The total derivative of level j's objective with respect to its own variables, through
  /// the responses of the levels below it, on a fresh batch of level j's data.
  hypergradient_result<P> hypergradient(std::size_t j) {
    const policy_stream_scope_t<P> on_own_stream(stream_);
    hypergradient_result<P> result;
    visit(j, [&](auto& lv) { result = hypergradient(j, lv.next_batch(), numerical_error::no_step, nullptr); });
    return result;
  }

  /// Reads the deferred checks (failure_policy::check_every) of the steps taken since the last
  /// read: one host read, none when nothing is pending (always so with immediate checks).
  /// Delivers the step events held back for them, in order, to `callbacks.on_step`, and
  /// throws numerical_error for the first step that went non-finite, after the events of the
  /// steps before it. run() and iterate() call it on their schedule; call it yourself after
  /// driving step_level() by hand, and before save_checkpoint().
  void flush_checks(const solver_callbacks& callbacks = {}) {
    if (log_.empty()) return;
    const policy_stream_scope_t<P> on_own_stream(stream_);
    const auto r = log_.read();
    using log = step_check_log<P>;
    const std::string found =
        " [found by the deferred check read after " + std::to_string(iteration_) + " outer iterations]";
    for (const auto& s : r.steps) {
      const double* e = r.values.data() + s.first;
      for (std::size_t k = 0; k < s.responses.size(); ++k)
        if (e[log::first_response_flag + k] != 0.0)
          throw numerical_error(nonfinite_response(s.responses[k], s.level, s.iteration, s.index) + found,
                                s.responses[k], s.iteration, s.index);
      const double loss = e[log::loss_entry];
      const bool loss_ok = loss == loss && loss - loss == 0.0;
      if (!loss_ok || e[log::gradient_flag] != 0.0)
        throw numerical_error(nonfinite_step(s.level, s.iteration, s.index, loss_ok, loss, s.reports) + found, s.level,
                              s.iteration, s.index);
      if (e[log::parameters_flag] != 0.0)
        throw numerical_error(nonfinite_parameters(s.level, s.iteration, s.index) + found, s.level, s.iteration,
                              s.index);
      if (s.wants_event && callbacks.on_step) {
        const std::string name = name_of(s.level);
        callbacks.on_step({s.iteration, s.level, name, s.index, loss, std::sqrt(e[log::norm_entry]), s.reports});
      }
    }
  }

  [[nodiscard]] std::size_t iteration() const { return iteration_; }
  /// Steps skipped and iterations rolled back by the failure policy, over the solver's life.
  [[nodiscard]] std::size_t skipped_steps() const { return skipped_steps_; }
  [[nodiscard]] std::size_t rollbacks() const { return rollbacks_; }

  /// The stream this solver's device work is queued on, on a back end that has streams (the
  /// CUDA policy: a stream of the solver's own, made at first use; a copied solver makes
  /// another). Every call above enters it (core/policy_stream.hpp), callbacks included. Enter
  /// it yourself (`P::stream_scope`) to queue your own work, such as metrics, behind the
  /// solver's without a wait, or assign a borrowed one (`policy::cuda_stream::borrow(s)`) to
  /// run the solver on your application's stream. A `detail::no_stream` on other back ends.
  policy_stream_t<P>& stream() { return stream_; }

 private:
  struct plan {
    std::vector<std::size_t> below;  ///< D: levels below j that j depends on
    std::vector<std::size_t> order;  ///< adjoint order (reverse topological)
    bool cut_cycle = false;
  };

  /// With `logged` (the first log entry of this step: deferred checks), the loss and the
  /// responses' flags go to the log instead of being read here.
  template <class Batch>
  hypergradient_result<P> hypergradient(std::size_t j, const Batch& batch_j, std::size_t step,
                                        const std::size_t* logged) {
    const plan& pl = plan_[j];
    hypergradient_result<P> result;
    result.approximated = pl.cut_cycle;
    std::vector<char> in_d(N, 0), done(N, 0);
    for (std::size_t i : pl.below) in_d[i] = 1;
    std::vector<const vector*> response(N, nullptr);
    std::vector<std::vector<const vector*>> inputs(N);
    auto input_ptrs = [&](std::size_t i) {
      std::vector<const vector*> ptrs;
      for (std::size_t k : reads_of(i)) ptrs.push_back(response[k] ? response[k] : &theta_of(k));
      return ptrs;
    };
    // Forward: responses in topological order (the reverse of the adjoint order).
    std::size_t flag = logged ? *logged + log_.first_response_flag : 0;
    for (auto it = pl.order.rbegin(); it != pl.order.rend(); ++it) {
      const std::size_t i = *it;
      inputs[i] = input_ptrs(i);
      visit(i, [&](auto& lv) { response[i] = &lv.engine.response(lv, input_list<P>(inputs[i])); });
      if (logged) {
        log_.set_response_level(flag - *logged - log_.first_response_flag, i);
        log_.mark_nonfinite(*response[i], flag++);
      } else if (!P::all_finite(*response[i])) {
        throw numerical_error(nonfinite_response(i, j, iteration_, step), i, iteration_, step);
      }
    }
    // Level j's own objective at those responses.
    std::vector<vector> adjoint(N);
    visit(j, [&](auto& lv) {
      using L = typename std::remove_cvref_t<decltype(lv)>::learner_type;
      // visit instantiates this for every level; only level j's (whose batch this is) runs it,
      // and the other levels may have other batch types.
      if constexpr (std::is_same_v<typename L::batch_type, Batch>) {
        inputs[j] = input_ptrs(j);
        const input_list<P> in(inputs[j]);
        if (logged)
          gradient_into(lv.learner, lv.theta, in, batch_j, result.gradient, {&log_.values(), *logged + log_.loss_entry});
        else
          result.loss = lv.learner.gradient(lv.theta, in, batch_j, result.gradient);
        if constexpr (input_differentiable_learner<L>) {
          vector g;
          for (std::size_t s = 0; s < lv.reads.size(); ++s) {
            const std::size_t k = lv.reads[s];
            if (!in_d[k]) continue;
            lv.learner.input_gradient(lv.theta, in, batch_j, s, g);
            accumulate(adjoint[k], std::move(g));
          }
        }
      }
    });
    // Reverse: each level's strategy turns the adjoint of its solution into adjoints of its reads.
    for (std::size_t i : pl.order) {
      done[i] = 1;
      if (P::size(adjoint[i]) == 0) continue;
      visit(i, [&](auto& lv) {
        using Lv = std::remove_cvref_t<decltype(lv)>;
        // A strategy that perturbs the inputs rather than differentiating the loss in them
        // (hypergrad::zero_order) says so, and then any learner will do.
        if constexpr (input_differentiable_learner<typename Lv::learner_type> ||
                      requires { requires !Lv::engine_type::needs_input_gradient; }) {
          std::vector<vector> out(lv.reads.size());
          auto report = lv.engine.vjp(lv, input_list<P>(inputs[i]), adjoint[i], std::span<vector>(out));
          report.level = i;
          result.reports.push_back(report);
          for (std::size_t s = 0; s < out.size(); ++s) {
            const std::size_t k = lv.reads[s];
            if (k == j) accumulate(result.gradient, std::move(out[s]));
            else if (in_d[k] && !done[k]) accumulate(adjoint[k], std::move(out[s]));
            else if (in_d[k]) result.approximated = true;
          }
        } else {
          throw std::invalid_argument("bilevel::solver: a hypergradient passes through level '" + lv.name +
                                      "', whose learner has no input_gradient() (hypergrad::zero_order needs none)");
        }
      });
    }
    return result;
  }

  /// into += v; the first contribution is taken over rather than copied (v is spent either way).
  static void accumulate(vector& into, vector&& v) {
    if (P::size(into) == 0) into = std::move(v);
    else P::axpy(scalar_t<P>(1), v, into);
  }

  static std::string where(std::size_t step) {
    return step == numerical_error::no_step ? std::string() : ", step " + std::to_string(step);
  }

  void require_finite(std::size_t j, std::size_t step, const hypergradient_result<P>& hg) const {
    const bool loss_ok = hg.loss == hg.loss && hg.loss - hg.loss == 0.0;
    if (loss_ok && P::all_finite(hg.gradient)) return;
    throw numerical_error(nonfinite_step(j, iteration_, step, loss_ok, hg.loss, hg.reports), j, iteration_, step);
  }

  void require_finite_parameters(std::size_t j, std::size_t step, const vector& theta) const {
    if (P::all_finite(theta)) return;
    throw numerical_error(nonfinite_parameters(j, iteration_, step), j, iteration_, step);
  }

  // What a failed finiteness check says, the same whether it ran at once or deferred.
  std::string nonfinite_response(std::size_t i, std::size_t j, std::size_t iteration, std::size_t step) const {
    return "bilevel: level '" + name_of(i) + "''s response has NaN/Inf (computing the hypergradient of '" +
           name_of(j) + "' at outer iteration " + std::to_string(iteration) + where(step) + ")";
  }
  std::string nonfinite_step(std::size_t j, std::size_t iteration, std::size_t step, bool loss_ok, double loss,
                             std::span<const hypergradient_report> reports) const {
    const std::string kind = plan_[j].below.empty() ? "gradient" : "hypergradient";
    const std::string detail = loss_ok ? kind + " has NaN/Inf" : "loss is " + std::to_string(loss);
    std::string strategies;
    for (const auto& r : reports) strategies += std::string(strategies.empty() ? "" : ", ") + std::string(r.strategy);
    return "bilevel: level '" + name_of(j) + "' at outer iteration " + std::to_string(iteration) + where(step) + ": " +
           detail + (strategies.empty() ? "" : " (strategies: " + strategies + ")");
  }
  std::string nonfinite_parameters(std::size_t j, std::size_t iteration, std::size_t step) const {
    return "bilevel: level '" + name_of(j) + "' parameters became NaN/Inf at outer iteration " +
           std::to_string(iteration) + where(step) + " (learning rate too large?)";
  }

  /// Unconverged solves are errors only when the policy says so; otherwise the report carries it.
  void require_converged(std::size_t j, std::size_t step, const hypergradient_result<P>& hg) const {
    if (policy_.unconverged_solve == failure_action::accept) return;
    for (const auto& r : hg.reports) {
      if (r.converged) continue;
      throw convergence_error("bilevel: level '" + name_of(j) + "' at outer iteration " + std::to_string(iteration_) +
                                  where(step) + ": the " + std::string(r.strategy) + " solve for level '" +
                                  name_of(r.level) + "' did not converge: relative residual " +
                                  std::to_string(r.residual) + " after " + std::to_string(r.iterations) + " iterations",
                              j, iteration_, step, r.residual);
    }
  }

  /// Implicit hypergradients taken where a level below was not stationary are errors only
  /// when a tolerance is set; the report carries the measurement either way.
  void require_stationary(std::size_t j, std::size_t step, const hypergradient_result<P>& hg) const {
    const double tol = policy_.stationarity_tolerance;
    if (tol == std::numeric_limits<double>::infinity() || policy_.non_stationary == failure_action::accept) return;
    for (const auto& r : hg.reports) {
      if (!r.assumes_stationarity || !(r.stationarity > tol)) continue;  // NaN: undefined, not failed
      std::ostringstream m;
      m.precision(3);
      m << "bilevel: level '" << name_of(j) << "' at outer iteration " << iteration_ << where(step) << ": the "
        << r.strategy << " hypergradient assumes level '" << name_of(r.level)
        << "' is at a stationary point, but its gradient norm there is " << r.gradient_norm
        << ": relative stationarity " << r.stationarity << " (against the norm at its first step), above the "
        << "tolerance " << tol << ". The linear solve's residual (" << r.residual
        << ") cannot show this; train that level longer or with a smaller step";
      throw stationarity_error(m.str(), j, iteration_, step, r.residual, r.stationarity, tol);
    }
  }

  [[nodiscard]] failure_action action_for(const numerical_error& e) const {
    if (dynamic_cast<const stationarity_error*>(&e)) return policy_.non_stationary;
    return dynamic_cast<const convergence_error*>(&e) ? policy_.unconverged_solve : policy_.non_finite;
  }

  /// Counts a recovered failure, tells the callback, and gives up after too many in a row.
  void recovered(const numerical_error& e, failure_action action, const solver_callbacks& callbacks) {
    const std::size_t in_a_row = ++consecutive_failures_[e.level() < N ? e.level() : 0];
    if (in_a_row > policy_.max_consecutive_failures)
      throw numerical_error("bilevel: giving up after " + std::to_string(in_a_row) +
                                " consecutive failures of level '" + name_of(e.level()) + "'; the last: " + e.what(),
                            e.level(), e.iteration(), e.step());
    if (callbacks.on_failure) callbacks.on_failure({e.iteration(), e.level(), e.step(), e.what(), action});
  }

  /// Learners that declare their inputs get their wiring checked here, once.
  void check_input_shapes(std::size_t j) const {
    visit(j, [&](const auto& lv) {
      using L = typename std::remove_cvref_t<decltype(lv)>::learner_type;
      if constexpr (declares_inputs<L>) {
        if (lv.learner.num_inputs() != lv.reads.size())
          throw std::invalid_argument("bilevel::solver: level '" + lv.name + "' has a learner that reads " +
                                      std::to_string(lv.learner.num_inputs()) + " input(s) but the level lists " +
                                      std::to_string(lv.reads.size()) + " (set them with .reading({...}))");
        for (std::size_t s = 0; s < lv.reads.size(); ++s) {
          const std::size_t have = P::size(theta_of(lv.reads[s]));
          if (lv.learner.input_size(s) != have)
            throw std::invalid_argument("bilevel::solver: level '" + lv.name + "' input " + std::to_string(s) +
                                        " expects " + std::to_string(lv.learner.input_size(s)) +
                                        " values but level '" + name_of(lv.reads[s]) + "' has " +
                                        std::to_string(have) + " parameters");
        }
      }
    });
  }

  plan make_plan(std::size_t j) const {
    plan pl;
    std::vector<char> in_d(N, 0);
    std::vector<std::size_t> stack;
    for (std::size_t k : reads_of(j)) if (k < j) stack.push_back(k);
    while (!stack.empty()) {
      const std::size_t i = stack.back();
      stack.pop_back();
      if (in_d[i]) continue;
      in_d[i] = 1;
      for (std::size_t k : reads_of(i)) if (k < j && !in_d[k]) stack.push_back(k);
    }
    for (std::size_t i = 0; i < j; ++i) if (in_d[i]) pl.below.push_back(i);
    // Kahn: a level is processed once every level in D that reads it has been.
    std::vector<std::size_t> pending(N, 0);
    for (std::size_t i : pl.below)
      for (std::size_t k : reads_of(i)) if (in_d[k] && k != i) ++pending[k];
    std::vector<char> taken(N, 0);
    for (std::size_t n = 0; n < pl.below.size(); ++n) {
      std::size_t pick = N;
      for (auto it = pl.below.rbegin(); it != pl.below.rend(); ++it)
        if (!taken[*it] && pending[*it] == 0) { pick = *it; break; }
      if (pick == N) {  // a cycle: take the highest remaining level and cut its back edges
        pl.cut_cycle = true;
        for (auto it = pl.below.rbegin(); it != pl.below.rend(); ++it)
          if (!taken[*it]) { pick = *it; break; }
      }
      taken[pick] = 1;
      pl.order.push_back(pick);
      for (std::size_t k : reads_of(pick)) if (in_d[k] && pending[k] > 0) --pending[k];
    }
    return pl;
  }

  template <class F>
  void visit(std::size_t i, F&& f) {
    [&]<std::size_t... I>(std::index_sequence<I...>) {
      ((i == I ? (void)f(std::get<I>(levels_)) : void()), ...);
    }(std::make_index_sequence<N>{});
  }
  template <class F>
  void visit(std::size_t i, F&& f) const {
    [&]<std::size_t... I>(std::index_sequence<I...>) {
      ((i == I ? (void)f(std::get<I>(levels_)) : void()), ...);
    }(std::make_index_sequence<N>{});
  }

  std::vector<std::size_t> reads_of(std::size_t i) const {
    std::vector<std::size_t> r;
    visit(i, [&](const auto& lv) { r = lv.reads; });
    return r;
  }
  std::string name_of(std::size_t i) const {
    std::string n;
    visit(i, [&](const auto& lv) { n = lv.name; });
    return n;
  }
  bool input_differentiable(std::size_t i) const {
    bool yes = false;
    visit(i, [&](const auto& lv) {
      yes = input_differentiable_learner<typename std::remove_cvref_t<decltype(lv)>::learner_type>;
    });
    return yes;
  }
  const vector& theta_of(std::size_t i) const {
    const vector* t = nullptr;
    visit(i, [&](const auto& lv) { t = &lv.theta; });
    return *t;
  }
  template <class Level>
  std::vector<const vector*> current_inputs(const Level& lv) const {
    std::vector<const vector*> ptrs;
    for (std::size_t k : lv.reads) ptrs.push_back(&theta_of(k));
    return ptrs;
  }

  template <class Samplers, std::size_t... I>
  static void load_samplers(checkpoint_reader& r, Samplers& samplers, std::index_sequence<I...>) {
    (load_sampler(r, std::get<I>(samplers)), ...);
  }
  template <class S>
  static void load_sampler(checkpoint_reader& r, S& s) {
    if constexpr (checkpointable_sampler<S>) s.load_state(r);
  }
  template <class S>
  static void commit_sampler(S& into, S& loaded) {
    if constexpr (checkpointable_sampler<S>) into = std::move(loaded);
  }

  std::tuple<Levels...> levels_;
  mutable policy_stream_t<P> stream_{};  ///< entered by const calls too (save_checkpoint)
  std::array<plan, N> plan_{};
  std::array<std::size_t, N> order_{};
  std::size_t iteration_ = 0;
  failure_policy policy_{};
  std::array<std::size_t, N> consecutive_failures_{};  ///< per level, reset by a good step
  std::size_t skipped_steps_ = 0, rollbacks_ = 0;
  std::size_t checkpoint_every_ = 0;
  std::filesystem::path checkpoint_path_{};
  step_check_log<P> log_{};  ///< deferred checks (failure_policy::check_every > 1) not yet read
  step_capture<P> capture_{};  ///< outer steps as device graphs (capture_steps)
};

}  // namespace bilevel
