// SPDX-License-Identifier: MIT
// Must NOT compile: a learner that does not name its back end.
// expected-error: learner requirement 1 missing: add `using policy
#include <bilevel/eigen.hpp>

using P = bilevel::policy::eigen<double>;

struct learner_without_policy {
  using batch_type = bilevel::full_batch;
};

int main() { static_assert(bilevel::check_learner<learner_without_policy>()); }
