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
/// every method of our papers (LFM, LFM-CW, SGL, DARTS, reweighting) has that shape.
///
/// One shape does not compose: a level i that reads the *variable* of a level k which in
/// turn reads i's *solution* (a cycle i → k → i below j, the classic trilevel nesting). Then
/// k's best response depends on i's best response to k, whose derivative needs third-order
/// terms. The solver processes k first and drops i's adjoint on θ_k, the approximation
/// Betty and the LFM code also make, and sets `approximated` in the result.
#include <algorithm>
#include <array>
#include <cstddef>
#include <functional>
#include <span>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "bilevel/core/errors.hpp"
#include "bilevel/core/hypergradient_report.hpp"
#include "bilevel/core/level.hpp"

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

struct solver_callbacks {
  std::function<void(const step_event&)> on_step{};
  std::function<bool(const iteration_event&)> on_iteration{};
};

struct run_summary {
  std::size_t iterations = 0;
  bool stopped_early = false;
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
  }

  /// Level i, typed.
  template <std::size_t I> auto& level() { return std::get<I>(levels_); }
  template <std::size_t I> const auto& level() const { return std::get<I>(levels_); }
  static constexpr std::size_t size() { return N; }

  /// Runs `iterations` outer iterations (or until on_iteration returns false).
  run_summary run(std::size_t iterations, const solver_callbacks& callbacks = {}) {
    run_summary summary;
    for (std::size_t it = 0; it < iterations; ++it) {
      iterate(callbacks);
      summary.iterations = it + 1;
      if (callbacks.on_iteration && !callbacks.on_iteration({iteration_ - 1, iterations})) {
        summary.stopped_early = summary.iterations < iterations;
        break;
      }
    }
    return summary;
  }

  /// One outer iteration: every level's block, lowest first.
  void iterate(const solver_callbacks& callbacks = {}) {
    for (std::size_t j = 0; j < N; ++j) step_level(j, callbacks);
    ++iteration_;
  }

  /// Level j's block of steps (its `steps` optimizer steps).
  void step_level(std::size_t j, const solver_callbacks& callbacks = {}) {
    visit(j, [&](auto& lv) {
      const auto in_ptrs = current_inputs(lv);
      const input_list<P> in(in_ptrs);
      lv.engine.begin_block(lv, in);
      for (std::size_t t = 0; t < lv.steps; ++t) {
        const auto batch = lv.next_batch();
        hypergradient_result<P> hg;
        if (plan_[j].below.empty()) {
          hg.loss = lv.learner.gradient(lv.theta, in, batch, hg.gradient);
        } else {
          hg = hypergradient(j, batch);
        }
        require_finite(j, hg, "gradient");
        lv.engine.on_step(lv, in, batch, hg.gradient);
        lv.optimizer.step(lv.theta, lv.state, hg.gradient);
        if (!P::all_finite(lv.theta))
          throw numerical_error("bilevel: level '" + lv.name + "' parameters became NaN/Inf at outer iteration " +
                                    std::to_string(iteration_) + ", step " + std::to_string(t) +
                                    " (learning rate too large?)", j, iteration_);
        if (callbacks.on_step)
          callbacks.on_step({iteration_, j, lv.name, t, hg.loss, P::norm(hg.gradient), hg.reports});
      }
    });
  }

  /// The total derivative of level j's objective with respect to its own variables, through
  /// the responses of the levels below it, on a fresh batch of level j's data.
  hypergradient_result<P> hypergradient(std::size_t j) {
    hypergradient_result<P> result;
    visit(j, [&](auto& lv) { result = hypergradient(j, lv.next_batch()); });
    return result;
  }

  [[nodiscard]] std::size_t iteration() const { return iteration_; }

 private:
  struct plan {
    std::vector<std::size_t> below;  ///< D: levels below j that j depends on
    std::vector<std::size_t> order;  ///< adjoint order (reverse topological)
    bool cut_cycle = false;
  };

  template <class Batch>
  hypergradient_result<P> hypergradient(std::size_t j, const Batch& batch_j) {
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
    for (auto it = pl.order.rbegin(); it != pl.order.rend(); ++it) {
      const std::size_t i = *it;
      inputs[i] = input_ptrs(i);
      visit(i, [&](auto& lv) { response[i] = &lv.engine.response(lv, input_list<P>(inputs[i])); });
    }
    // Level j's own objective at those responses.
    std::vector<vector> adjoint(N);
    visit(j, [&](auto& lv) {
      using L = typename std::remove_cvref_t<decltype(lv)>::learner_type;
      inputs[j] = input_ptrs(j);
      const input_list<P> in(inputs[j]);
      result.loss = lv.learner.gradient(lv.theta, in, batch_j, result.gradient);
      if constexpr (input_differentiable_learner<L>) {
        vector g;
        for (std::size_t s = 0; s < lv.reads.size(); ++s) {
          const std::size_t k = lv.reads[s];
          if (!in_d[k]) continue;
          lv.learner.input_gradient(lv.theta, in, batch_j, s, g);
          accumulate(adjoint[k], g);
        }
      }
    });
    // Reverse: each level's strategy turns the adjoint of its solution into adjoints of its reads.
    for (std::size_t i : pl.order) {
      done[i] = 1;
      if (P::size(adjoint[i]) == 0) continue;
      visit(i, [&](auto& lv) {
        using L = typename std::remove_cvref_t<decltype(lv)>::learner_type;
        if constexpr (input_differentiable_learner<L>) {
          std::vector<vector> out(lv.reads.size());
          auto report = lv.engine.vjp(lv, input_list<P>(inputs[i]), adjoint[i], std::span<vector>(out));
          report.level = i;
          result.reports.push_back(report);
          for (std::size_t s = 0; s < out.size(); ++s) {
            const std::size_t k = lv.reads[s];
            if (k == j) accumulate(result.gradient, out[s]);
            else if (in_d[k] && !done[k]) accumulate(adjoint[k], out[s]);
            else if (in_d[k]) result.approximated = true;
          }
        } else {
          throw std::invalid_argument("bilevel::solver: a hypergradient passes through level '" + lv.name +
                                      "', whose learner has no input_gradient()");
        }
      });
    }
    return result;
  }

  static void accumulate(vector& into, const vector& v) {
    if (P::size(into) == 0) P::copy(v, into);
    else P::axpy(scalar_t<P>(1), v, into);
  }

  void require_finite(std::size_t j, const hypergradient_result<P>& hg, const char* what) const {
    const bool loss_ok = hg.loss == hg.loss && hg.loss - hg.loss == 0.0;
    if (loss_ok && P::all_finite(hg.gradient)) return;
    std::string detail = loss_ok ? std::string(what) + " has NaN/Inf" : "loss is " + std::to_string(hg.loss);
    std::string strategies;
    for (const auto& r : hg.reports) strategies += std::string(strategies.empty() ? "" : ", ") + std::string(r.strategy);
    throw numerical_error("bilevel: level '" + name_of(j) + "' at outer iteration " + std::to_string(iteration_) +
                              ": " + detail + (strategies.empty() ? "" : " (strategies: " + strategies + ")"),
                          j, iteration_);
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

  std::tuple<Levels...> levels_;
  std::array<plan, N> plan_{};
  std::size_t iteration_ = 0;
};

}  // namespace bilevel
