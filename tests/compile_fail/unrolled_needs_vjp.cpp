// SPDX-License-Identifier: MIT
// Must NOT compile: unrolling through an optimizer that has no vector-Jacobian product.
// expected-error: reverse-mode strategies go back through the optimizer's update: it needs vjp
#include <bilevel/eigen.hpp>
#include <bilevel/problems/quadratic.hpp>

using P = bilevel::policy::eigen<double>;

struct step_only_sgd {
  using policy = P;
  bilevel::optimizer_state<P> init(const P::vector&) const { return {}; }
  void step(P::vector& theta, bilevel::optimizer_state<P>&, const P::vector& g) const { theta -= 0.1 * g; }
};

int main() {
  const auto spec = bilevel::problems::quadratic_spec::random(2, {1}, 1);
  auto low = bilevel::make_level("x", bilevel::problems::quadratic_objective<P>(spec), step_only_sgd{},
                                 bilevel::hypergrad::unrolled{}, P::zeros(2)).reading({1});
  auto top = bilevel::make_level("z", bilevel::problems::quadratic_objective<P>(bilevel::problems::quadratic_spec::random(1, {2}, 2)),
                                 bilevel::optim::sgd<P>{}, bilevel::hypergrad::first_order{}, P::zeros(1)).reading({0});
  bilevel::solver s(low, top);
  s.hypergradient(1);
}
