// SPDX-License-Identifier: MIT
// Positive and negative fixtures for each concept: the library's own types satisfy them,
// deliberately incomplete types do not, and each refinement separates what it should. All of
// it is decided at compile time, so this file's compilation is the test (ctest's
// compile_pass.concepts, and every build): a doctest case around these would pass whether or
// not they held. What a concept lets through at run time is tests/test_concepts.cpp;
// tests/compile_fail/ shows the messages a user gets from make_level on such types.
#include <bilevel/eigen.hpp>
#include <bilevel/problems/quadratic.hpp>
#include <bilevel/problems/ridge.hpp>
#include <bilevel/problems/weighted_logistic.hpp>

#include "../concept_fixtures.hpp"

namespace {

using namespace concept_fixtures;

struct no_policy {
  double loss(const V&, In, const B&) const { return 0; }
};
struct no_gradient {
  using policy = P;
  using batch_type = B;
  std::size_t num_parameters() const { return 1; }
  double loss(const V&, In, const B&) const { return 0; }
};
struct with_hvp_only : with_inputs {
  void hvp(const V&, In, const B&, const V& v, V& out) const { out = v; }
};

struct step_only_optimizer {
  using policy = P;
  bilevel::optimizer_state<P> init(const V&) const { return {}; }
  void step(V&, bilevel::optimizer_state<P>&, const V&) const {}
};

struct not_a_strategy {};

// tensor_policy: the Eigen policies satisfy it, other types do not.
static_assert(bilevel::tensor_policy<bilevel::policy::eigen<double>>);
static_assert(bilevel::tensor_policy<bilevel::policy::eigen<float>>);
static_assert(!bilevel::tensor_policy<int>);
static_assert(!bilevel::tensor_policy<no_policy>);

// learner refinements separate what they should.
static_assert(!bilevel::learner<no_policy>);
static_assert(!bilevel::learner<no_gradient>);
static_assert(bilevel::learner<first_order_only>);
static_assert(!bilevel::input_differentiable_learner<first_order_only>);
static_assert(bilevel::input_differentiable_learner<with_inputs>);
static_assert(!bilevel::has_exact_hvp<with_inputs>);
static_assert(bilevel::has_exact_hvp<with_hvp_only>);
static_assert(!bilevel::twice_differentiable_learner<with_hvp_only>);
static_assert(!bilevel::declares_inputs<with_inputs>);

static_assert(bilevel::twice_differentiable_learner<bilevel::problems::ridge_training_loss<P>>);
static_assert(bilevel::twice_differentiable_learner<bilevel::problems::quadratic_objective<P>>);
static_assert(bilevel::twice_differentiable_learner<bilevel::problems::weighted_logistic_loss<P>>);
static_assert(bilevel::declares_inputs<bilevel::problems::weighted_logistic_loss<P>>);
// The validation objectives read a solution but have no second-order members: they are
// top-level objectives, never differentiated through.
static_assert(bilevel::input_differentiable_learner<bilevel::problems::validation_least_squares<P>>);
static_assert(!bilevel::has_exact_hvp<bilevel::problems::validation_least_squares<P>>);

// optimizer concepts: SGD is differentiable, a step-only optimizer is not.
static_assert(bilevel::differentiable_optimizer<bilevel::optim::sgd<P>>);
static_assert(bilevel::optimizer<step_only_optimizer>);
static_assert(!bilevel::differentiable_optimizer<step_only_optimizer>);
static_assert(!bilevel::optimizer<not_a_strategy>);

// hypergradient_strategy: every shipped strategy fits a level; other types do not.
using L = bilevel::problems::quadratic_objective<P>;
using O = bilevel::optim::sgd<P>;
namespace hg = bilevel::hypergrad;
using S = bilevel::full_batch_sampler;
static_assert(bilevel::hypergradient_strategy<hg::first_order, bilevel::level<L, O, hg::first_order, S>>);
static_assert(bilevel::hypergradient_strategy<hg::unrolled, bilevel::level<L, O, hg::unrolled, S>>);
static_assert(bilevel::hypergradient_strategy<hg::lookahead, bilevel::level<L, O, hg::lookahead, S>>);
static_assert(bilevel::hypergradient_strategy<hg::implicit_cg, bilevel::level<L, O, hg::implicit_cg, S>>);
static_assert(bilevel::hypergradient_strategy<hg::neumann, bilevel::level<L, O, hg::neumann, S>>);
static_assert(bilevel::hypergradient_strategy<hg::fixed_point, bilevel::level<L, O, hg::fixed_point, S>>);
static_assert(bilevel::hypergradient_strategy<hg::forward_mode, bilevel::level<L, O, hg::forward_mode, S>>);
static_assert(bilevel::hypergradient_strategy<hg::finite_difference, bilevel::level<L, O, hg::finite_difference, S>>);
static_assert(!bilevel::hypergradient_strategy<not_a_strategy, bilevel::level<L, O, hg::first_order, S>>);
static_assert(bilevel::level_like<bilevel::level<L, O, hg::implicit_cg, S>>);
static_assert(!bilevel::level_like<L>);

}  // namespace
