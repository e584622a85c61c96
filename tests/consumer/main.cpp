// SPDX-License-Identifier: MIT
// The program every consumer project builds (tests/consumer/*: find_package on the installed
// package, with and without COMPONENTS xtensor; add_subdirectory; FetchContent): a two-level
// problem (ridge training inside, validation loss outside) whose hypergradient by implicit CG
// is checked against the closed form (ridge_check.hpp). With
// BILEVEL_CONSUMER_XTENSOR (bilevel::xtensor linked) it runs on the xtensor policy as well;
// with BILEVEL_CONSUMER_EIGEN_BLAS (bilevel::eigen_blas linked) the Eigen policy's products
// go to OpenBLAS, which the target must have switched on.
// Prints one line per back end; exits non-zero when any is off.
#include <bilevel/eigen.hpp>
#ifdef BILEVEL_CONSUMER_XTENSOR
#include <bilevel/policy/xtensor.hpp>
#endif

#include "ridge_check.hpp"

#if defined(BILEVEL_CONSUMER_EIGEN_BLAS) && !defined(EIGEN_USE_BLAS)
#error "bilevel::eigen_blas is linked but EIGEN_USE_BLAS is not defined"
#endif

int main() {
#ifdef EIGEN_USE_BLAS
  bool ok = check<bilevel::policy::eigen<double>>("eigen (EIGEN_USE_BLAS, OpenBLAS)");
#else
  bool ok = check<bilevel::policy::eigen<double>>("eigen");
#endif
#ifdef BILEVEL_CONSUMER_XTENSOR
  ok = check<bilevel::policy::xtensor<double>>("xtensor") && ok;
#endif
  return ok ? 0 : 1;
}
