// SPDX-License-Identifier: MIT
// Must NOT compile: a learner with no gradient() handed to make_level. The test passes when
// the compiler's message names the missing requirement, so a user sees what to add.
// expected-error: learner requirement 5 missing: add `double gradient
#include <bilevel/eigen.hpp>

using P = bilevel::policy::eigen<double>;

struct incomplete_learner {
  using policy = P;
  using batch_type = bilevel::full_batch;
  std::size_t num_parameters() const { return 1; }
  double loss(const P::vector&, bilevel::input_list<P>, const batch_type&) const { return 0.0; }
  // no gradient()
};

int main() {
  auto lv = bilevel::make_level("w", incomplete_learner{}, bilevel::optim::sgd<P>{}, bilevel::hypergrad::first_order{},
                                P::zeros(1));
  (void)lv;
}
