// SPDX-License-Identifier: MIT
// The solver's stream hook (core/policy_stream.hpp) without a GPU: a policy that declares
// `stream` and `stream_scope` (here the Eigen policy with a recording stand-in) has every
// solver call entered on the solver's own stream; copies get their own; policies without
// streams get the empty stand-ins. The CUDA policy's real streams are tested on the GPU
// (tests/cuda/test_streams.cu).
#include <doctest/doctest.h>

#include <bilevel/eigen.hpp>
#include <bilevel/problems/ridge.hpp>

#include <filesystem>
#include <type_traits>
#include <vector>

#include "support.hpp"

namespace {

/// The Eigen policy, plus a stream type that records which stream each scope entered.
struct recording_policy : bilevel::policy::eigen<double> {
  struct stream {
    stream() : id(++made) {}
    stream(const stream&) : id(++made) {}  // a copy is a new stream, as the concept asks
    stream& operator=(const stream&) { return *this; }
    int id;
    static inline int made = 0;
  };
  struct stream_scope {
    explicit stream_scope(stream& s) {
      entered.push_back(s.id);
      ++depth;
    }
    ~stream_scope() { --depth; }
    stream_scope(const stream_scope&) = delete;
    stream_scope& operator=(const stream_scope&) = delete;
    static inline std::vector<int> entered;
    static inline int depth = 0;
  };
};
using P = recording_policy;
static_assert(bilevel::tensor_policy<P>);
static_assert(std::is_same_v<bilevel::policy_stream_t<P>, P::stream>);
static_assert(std::is_same_v<bilevel::policy_stream_t<bilevel::policy::eigen<double>>, bilevel::detail::no_stream>);
static_assert(std::is_same_v<bilevel::policy_stream_t<bilevel::policy::eigen<float>>, bilevel::detail::no_stream>);

auto ridge_solver() {
  using namespace bilevel::problems;
  namespace hg = bilevel::hypergrad;
  static const auto ridge = ridge_problem<P>::synthetic(20, 20, 4, 3, 0.5, 17);
  auto inner = bilevel::make_level("theta", ridge_training_loss<P>(ridge.train), bilevel::optim::sgd<P>{.lr = 0.1},
                                   hg::implicit_cg{}, P::zeros(4))
                   .reading({1})
                   .steps_per_iteration(5);
  auto outer = bilevel::make_level("log_penalty", validation_least_squares<P>(ridge.validation, 4),
                                   bilevel::optim::sgd<P>{.lr = 1.0}, hg::first_order{}, P::zeros(4))
                   .reading({0});
  return bilevel::solver(std::move(inner), std::move(outer));
}

}  // namespace

TEST_CASE("solver: every call runs inside the solver's own stream, callbacks included") {
  auto a = ridge_solver();
  auto b = a;
  const int own_a = a.stream().id, own_b = b.stream().id;
  CHECK(own_a != own_b);
  auto& entered = P::stream_scope::entered;

  entered.clear();
  int depth_in_callback = 0;
  a.run(2, {.on_step = [&](const bilevel::step_event&) { depth_in_callback = P::stream_scope::depth; }});
  CHECK(depth_in_callback >= 1);
  CHECK(P::stream_scope::depth == 0);
  REQUIRE_FALSE(entered.empty());
  for (int id : entered) CHECK(id == own_a);

  entered.clear();
  b.step_level(0);
  (void)b.hypergradient(1);
  const auto path = std::filesystem::temp_directory_path() / "bilevel_policy_stream_test.ckpt";
  b.save_checkpoint(path);
  const std::size_t before_load = entered.size();
  b.load_checkpoint(path);
  std::filesystem::remove(path);
  CHECK(entered.size() > before_load);
  REQUIRE(entered.size() >= 4);  // step_level, hypergradient, save_checkpoint, load_checkpoint
  for (int id : entered) CHECK(id == own_b);
  CHECK(P::stream_scope::depth == 0);
}
