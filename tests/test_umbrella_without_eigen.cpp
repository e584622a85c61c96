// SPDX-License-Identifier: MIT
// bilevel/bilevel.hpp names no back end: a translation unit that uses only the CUDA (or
// xtensor) policy must be able to include it without Eigen coming along. This file is built
// with the other tests and fails to compile if any header of the umbrella pulls Eigen in;
// bilevel/eigen.hpp is the include that brings the Eigen policy.
#include <bilevel/bilevel.hpp>

#ifdef EIGEN_WORLD_VERSION
#error "bilevel/bilevel.hpp must not include Eigen (a CUDA-only translation unit could not use it); a header of the umbrella includes it"
#endif

#include <doctest/doctest.h>

TEST_CASE("bilevel.hpp is usable without a back end: the policy-free parts are there") {
  const bilevel::solver_callbacks callbacks;
  CHECK(callbacks.epoch_level == 0);
  CHECK_FALSE(bilevel::epoch_counting_sampler<bilevel::full_batch_sampler>);
}
