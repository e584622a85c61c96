// SPDX-License-Identifier: MIT
#pragma once
// The eight cases every GEMM-like policy operation is checked in (tests/test_policy.cpp and
// tests/cuda/test_policy.cu): A and B each stored as themselves or transposed, and β zero or
// not. f(ta, tb, with_beta) runs once per case, with the case captured for failure messages.
#include <doctest/doctest.h>

namespace test {

template <class F>
void for_each_gemm_case(F&& f) {
  for (bool ta : {false, true})
    for (bool tb : {false, true})
      for (bool with_beta : {false, true}) {
        CAPTURE(ta);
        CAPTURE(tb);
        CAPTURE(with_beta);
        f(ta, tb, with_beta);
      }
}

}  // namespace test
