// SPDX-License-Identifier: MIT
// Built against the installed package: learns ridge penalties' hypergradient by CG and
// checks it against the closed form; exits non-zero when off.
#include <bilevel/bilevel.hpp>
#include <bilevel/problems/ridge.hpp>

#include <cmath>
#include <cstdio>

int main() {
  using P = bilevel::policy::eigen<double>;
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
  double err = 0, norm = 0;
  for (std::size_t i = 0; i < 6; ++i) err += (got[i] - want[i]) * (got[i] - want[i]), norm += want[i] * want[i];
  std::printf("consumer: hypergradient relative error %.2e\n", std::sqrt(err / norm));
  return std::sqrt(err / norm) <= 1e-8 ? 0 : 1;
}
