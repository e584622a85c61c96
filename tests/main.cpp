// SPDX-License-Identifier: MIT
// The doctest runner: every other tests/*.cpp is its own translation unit, linked here.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
