// SPDX-License-Identifier: MIT
// Runs dense_conv_checks.cpp, compiled for a wider SIMD instruction set than the rest of the
// suite (BILEVEL_SIMD_ISA), when this CPU has it; says SKIPPED otherwise. This file is compiled
// without those instructions, so that the check itself runs on any x86-64 CPU.
#include <cstdio>

int run_dense_conv_checks();

int main() {
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  if (!__builtin_cpu_supports(BILEVEL_SIMD_ISA)) {
    std::printf("SKIPPED: this CPU has no %s\n", BILEVEL_SIMD_ISA);
    return 0;
  }
  return run_dense_conv_checks();
#else
  std::printf("SKIPPED: not an x86-64 build with GCC or Clang\n");
  return 0;
#endif
}
