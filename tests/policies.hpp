// SPDX-License-Identifier: MIT
#pragma once
// The tensor policies every backend-typed test runs on: Eigen always, xtensor when CMake
// found it (BILEVEL_TEST_XTENSOR); the list grows with the back ends, the tests do not change.
//
// Two lists, because the sanitizer pass (scripts/test.sh) cannot afford every test on every
// policy within the suite's build-time budget:
//   - BILEVEL_DOUBLE_POLICIES / BILEVEL_FLOAT_POLICIES: the policies themselves and the layers
//     (test_policy, the layer and network tests). This is where a policy's own code runs, in
//     every primitive and shape, so it runs on every policy in both passes.
//   - BILEVEL_SOLVER_DOUBLE_POLICIES / BILEVEL_SOLVER_FLOAT_POLICIES: the strategies, methods and
//     optimizers, whose code is the same template source on every policy and reaches the policy
//     only through the primitives above. Every policy in the release pass; in the sanitizer
//     pass (BILEVEL_TEST_SOLVERS_ON_EIGEN_ONLY) Eigen alone, which instantiates each of them
//     once instead of once per policy: about a third of that pass's compile time.
//   - BILEVEL_NETWORK_DOUBLE_POLICIES: whole networks (a ResNet, the DARTS supernet) checked
//     product by product against central differences. Their layers run on every policy in the
//     layer tests of both passes, so what a whole network adds is the composition, which is
//     the same template source on every policy. Every policy in the release pass; Eigen alone
//     in the sanitizer pass, where the supernet's check took 99 s on Eigen and 88 s more on
//     xtensor (ASan at -O0), the longest tests of that pass by far.
#include <bilevel/policy/eigen.hpp>
#ifdef BILEVEL_TEST_XTENSOR
#include <bilevel/policy/xtensor.hpp>
#define BILEVEL_DOUBLE_POLICIES bilevel::policy::eigen<double>, bilevel::policy::xtensor<double>
#define BILEVEL_FLOAT_POLICIES bilevel::policy::eigen<float>, bilevel::policy::xtensor<float>
#else
#define BILEVEL_DOUBLE_POLICIES bilevel::policy::eigen<double>
#define BILEVEL_FLOAT_POLICIES bilevel::policy::eigen<float>
#endif
#ifdef BILEVEL_TEST_SOLVERS_ON_EIGEN_ONLY
#define BILEVEL_SOLVER_DOUBLE_POLICIES bilevel::policy::eigen<double>
#define BILEVEL_SOLVER_FLOAT_POLICIES bilevel::policy::eigen<float>
#define BILEVEL_NETWORK_DOUBLE_POLICIES bilevel::policy::eigen<double>
#else
#define BILEVEL_SOLVER_DOUBLE_POLICIES BILEVEL_DOUBLE_POLICIES
#define BILEVEL_SOLVER_FLOAT_POLICIES BILEVEL_FLOAT_POLICIES
#define BILEVEL_NETWORK_DOUBLE_POLICIES BILEVEL_DOUBLE_POLICIES
#endif
