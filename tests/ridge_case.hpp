// SPDX-License-Identifier: MIT
#pragma once
// The ridge problem the strategy tests share (bilevel/problems/ridge.hpp): 60 training and 40
// validation rows of 8 features, 3 of them informative, and a starting log-penalty per feature.
#include <cstddef>
#include <vector>

#include <bilevel/problems/ridge.hpp>

namespace test::ridge {

inline constexpr std::size_t d = 8;
template <class P>
inline const auto problem = bilevel::problems::ridge_problem<P>::synthetic(60, 40, d, 3, 0.5, 7);
inline const std::vector<double> log_penalty = {-1.0, -0.5, -1.5, 0.0, -1.0, -2.0, -0.3, -1.2};

}  // namespace test::ridge
