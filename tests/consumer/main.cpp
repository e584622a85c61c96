// SPDX-License-Identifier: MIT
// The program every consumer project builds (tests/consumer/*: find_package on the installed
// package, with and without COMPONENTS xtensor; add_subdirectory; FetchContent): a two-level
// problem (ridge training inside, validation loss outside) whose hypergradient by implicit CG
// is checked against the closed form (bilevel/problems/ridge.hpp). With
// BILEVEL_CONSUMER_XTENSOR (bilevel::xtensor linked) it runs on the xtensor policy as well.
// Prints one line per back end; exits non-zero when any is off.
#include <bilevel/bilevel.hpp>
#include <bilevel/problems/ridge.hpp>
#ifdef BILEVEL_CONSUMER_XTENSOR
#include <bilevel/policy/xtensor.hpp>
#endif

#include <cmath>
#include <cstdio>
#include <vector>

template <class P>
bool check(const char* backend) {
  const auto prob = bilevel::problems::ridge_problem<P>::synthetic(50, 30, 6, 2, 0.5, 3);
  const std::vector<double> lam(6, -1.0);
  auto inner = bilevel::make_level("w", bilevel::problems::ridge_training_loss<P>(prob.train), bilevel::optim::sgd<P>{},
                                   bilevel::hypergrad::implicit_cg{}, P::from_host(prob.solution(lam)))
                   .reading({1});
  auto outer = bilevel::make_level("lambda", bilevel::problems::validation_least_squares<P>(prob.validation, 6),
                                   bilevel::optim::sgd<P>{}, bilevel::hypergrad::first_order{}, P::from_host(lam))
                   .reading({0});
  bilevel::solver s(std::move(inner), std::move(outer));
  const auto got = P::to_host(s.hypergradient(1).gradient);
  const auto want = prob.hypergradient(lam);
  if (got.size() != want.size()) {
    std::printf("consumer (%s): hypergradient has %zu entries, want %zu\n", backend, got.size(), want.size());
    return false;
  }
  double err = 0, norm = 0;
  for (std::size_t i = 0; i < want.size(); ++i) err += (got[i] - want[i]) * (got[i] - want[i]), norm += want[i] * want[i];
  const double rel = std::sqrt(err / norm);
  const bool ok = norm > 0 && rel <= 1e-8;
  std::printf("consumer (%s): hypergradient relative error %.2e %s\n", backend, rel, ok ? "ok" : "FAILED");
  return ok;
}

int main() {
  bool ok = check<bilevel::policy::eigen<double>>("eigen");
#ifdef BILEVEL_CONSUMER_XTENSOR
  ok = check<bilevel::policy::xtensor<double>>("xtensor") && ok;
#endif
  return ok ? 0 : 1;
}
