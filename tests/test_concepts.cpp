// SPDX-License-Identifier: MIT
// What a concept lets through at run time: a learner with first-order members only still gets
// second-order products, by finite differences. Which types satisfy which concept is checked
// at compile time, in tests/compile_pass/concepts.cpp (its compilation is the test), and
// tests/compile_fail/ shows the messages a user gets from make_level on such types.
#include <doctest/doctest.h>

#include "concept_fixtures.hpp"

using namespace concept_fixtures;

TEST_CASE("a first-order-only learner still gets every strategy, through finite differences") {
  // with_inputs has no second-order members; check_learner accepts it.
  static_assert(bilevel::check_input_differentiable_learner<with_inputs>());
  const with_inputs l;
  const V theta = V::Zero(1), v = V::Ones(1);
  const V* in_ptr[] = {&theta};
  V out;
  CHECK_FALSE(bilevel::hvp(l, theta, In(in_ptr), B{}, v, out, {}));
  CHECK(out.size() == 1);
}
