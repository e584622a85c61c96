// SPDX-License-Identifier: MIT
#pragma once
// The tensor policies every backend-typed test runs on: Eigen always, xtensor when CMake
// found it (BILEVEL_TEST_XTENSOR); the list grows with the back ends, the tests do not change.
#include <bilevel/policy/eigen.hpp>
#ifdef BILEVEL_TEST_XTENSOR
#include <bilevel/policy/xtensor.hpp>
#define BILEVEL_DOUBLE_POLICIES bilevel::policy::eigen<double>, bilevel::policy::xtensor<double>
#define BILEVEL_FLOAT_POLICIES bilevel::policy::eigen<float>, bilevel::policy::xtensor<float>
#else
#define BILEVEL_DOUBLE_POLICIES bilevel::policy::eigen<double>
#define BILEVEL_FLOAT_POLICIES bilevel::policy::eigen<float>
#endif
