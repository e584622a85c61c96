// SPDX-License-Identifier: MIT
// The program every consumer project builds (tests/consumer/*: find_package on the installed
// package, with and without COMPONENTS xtensor; add_subdirectory; FetchContent): a two-level
// problem (ridge training inside, validation loss outside) whose hypergradient by implicit CG
// is checked against the closed form (ridge_check.hpp). With
// BILEVEL_CONSUMER_XTENSOR (bilevel::xtensor linked) it runs on the xtensor policy as well.
// Prints one line per back end; exits non-zero when any is off.
#include <bilevel/bilevel.hpp>
#ifdef BILEVEL_CONSUMER_XTENSOR
#include <bilevel/policy/xtensor.hpp>
#endif

#include "ridge_check.hpp"

int main() {
  bool ok = check<bilevel::policy::eigen<double>>("eigen");
#ifdef BILEVEL_CONSUMER_XTENSOR
  ok = check<bilevel::policy::xtensor<double>>("xtensor") && ok;
#endif
  return ok ? 0 : 1;
}
