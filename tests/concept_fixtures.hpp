// SPDX-License-Identifier: MIT
#pragma once
// Deliberately minimal learners for the concept tests: one with first-order members only,
// and one that also differentiates in its inputs. Shared by tests/compile_pass/concepts.cpp
// (which concepts they satisfy) and tests/test_concepts.cpp (what they still get at run time).
#include <bilevel/eigen.hpp>

namespace concept_fixtures {

using P = bilevel::policy::eigen<double>;
using V = P::vector;
using In = bilevel::input_list<P>;
using B = bilevel::full_batch;

struct first_order_only {
  using policy = P;
  using batch_type = B;
  std::size_t num_parameters() const { return 1; }
  double loss(const V&, In, const B&) const { return 0; }
  double gradient(const V&, In, const B&, V& out) const { out = V::Zero(1); return 0; }
};
struct with_inputs : first_order_only {
  void input_gradient(const V&, In, const B&, std::size_t, V& out) const { out = V::Zero(1); }
};

}  // namespace concept_fixtures
