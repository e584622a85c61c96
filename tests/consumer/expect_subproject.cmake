# SPDX-License-Identifier: MIT
# Included by the add_subdirectory and FetchContent consumers right after bilevel was added:
# as a subproject, bilevel defines bilevel::bilevel (and bilevel::xtensor where xtensor and
# OpenBLAS are found) and nothing of its own development: its BILEVEL_BUILD_* options
# default to OFF, so no test, example or benchmark targets.
include(${CMAKE_CURRENT_LIST_DIR}/expect.cmake)
expect("TARGET bilevel::bilevel")
expect("DEFINED BILEVEL_BUILD_TESTS AND NOT BILEVEL_BUILD_TESTS")
expect("DEFINED BILEVEL_BUILD_EXAMPLES AND NOT BILEVEL_BUILD_EXAMPLES")
expect("DEFINED BILEVEL_BUILD_BENCHMARKS AND NOT BILEVEL_BUILD_BENCHMARKS")
expect("NOT TARGET bilevel_tests AND NOT TARGET bilevel_dev_flags AND NOT TARGET 01_ridge_hyperparameters")
