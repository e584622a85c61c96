// SPDX-License-Identifier: MIT
#pragma once
// axpy_entry and add_dot_into, the operations whose scalar lives in a vector entry (a mixed
// operation's softmax weights and their adjoints), checked for any nn_tensor_policy against
// host loops: shared by the CPU suite (tests/test_policy.cpp) and the GPU suite
// (tests/cuda/test_policy.cu). The inputs are multiples of 1/4 of a few units, so every
// product and sum below is exact in float: the comparisons are exact.
#include <doctest/doctest.h>

#include <bilevel/core/tensor_policy.hpp>

#include <stdexcept>
#include <vector>

namespace test {

template <class P>
void check_entry_ops() {
  using S = bilevel::scalar_t<P>;
  constexpr std::size_t r = 3, c = 5;
  std::vector<S> xh(r * c), yh(r * c);
  for (std::size_t i = 0; i < r * c; ++i) {
    xh[i] = S(0.25 * double(int(i % 7) - 3));
    yh[i] = S(0.5 * double(int(i % 4) - 1));
  }
  const auto x = P::matrix_from_host(r, c, xh);
  const auto coefficients = P::from_host(std::vector<S>{S(2), S(-0.75), S(1.5)});

  auto y = P::matrix_from_host(r, c, yh);
  P::axpy_entry(S(0.5), coefficients, 1, x, y);  // y += 0.5 · (−0.75) · x
  const auto got = P::matrix_to_host(y);
  for (std::size_t i = 0; i < r * c; ++i) CHECK(got[i] == S(yh[i] + S(-0.375) * xh[i]));

  double dot = 0;
  for (std::size_t i = 0; i < r * c; ++i) dot += double(xh[i]) * double(yh[i]);
  auto out = P::from_host(std::vector<S>{S(1), S(10), S(100)});
  P::add_dot_into(x, P::matrix_from_host(r, c, yh), out, 2);
  P::add_dot_into(x, x, out, 0);
  double xx = 0;
  for (S v : xh) xx += double(v) * double(v);
  const auto outh = P::to_host(out);
  CHECK(outh[0] == S(1 + xx));
  CHECK(outh[1] == S(10));  // the other entries stay
  CHECK(outh[2] == S(100 + dot));

  // Wrong shapes and entries out of range are named, not read past.
  auto small = P::matrix_zeros(r, c - 1);
  CHECK_THROWS_AS(P::axpy_entry(S(1), coefficients, 0, x, small), std::invalid_argument);
  CHECK_THROWS_AS(P::axpy_entry(S(1), coefficients, 3, x, y), std::invalid_argument);
  CHECK_THROWS_AS(P::add_dot_into(x, small, out, 0), std::invalid_argument);
  CHECK_THROWS_AS(P::add_dot_into(x, x, out, 3), std::invalid_argument);
}

}  // namespace test
