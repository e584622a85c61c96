// SPDX-License-Identifier: MIT
#pragma once
// Helpers shared by the CPU test files: host_math.hpp's, and the Eigen policies they use most.
#include <bilevel/eigen.hpp>

#include "host_math.hpp"

namespace test {

using P64 = bilevel::policy::eigen<double>;
using P32 = bilevel::policy::eigen<float>;

}  // namespace test
