// SPDX-License-Identifier: MIT
#pragma once
// The check every consumer program runs (tests/consumer/main.cpp, find_package_cuda/main.cu):
// a two-level problem (ridge training inside, validation loss outside) whose hypergradient by
// implicit CG must match the closed form (bilevel/problems/ridge.hpp) to 1e-8 relative (CG
// stops at a relative residual of 1e-10; the problem's condition number is small). Includes
// the library piece by piece, so that a CUDA translation unit can use it without Eigen.
#include <bilevel/core/level.hpp>
#include <bilevel/core/solver.hpp>
#include <bilevel/hypergrad/first_order.hpp>
#include <bilevel/hypergrad/implicit_cg.hpp>
#include <bilevel/optim/sgd.hpp>
#include <bilevel/problems/ridge.hpp>

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
