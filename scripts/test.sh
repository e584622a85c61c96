#!/usr/bin/env bash
# Sets everything up and runs the whole test suite: unit tests, compile-fail tests, examples,
# the package consumers (find_package, add_subdirectory, FetchContent, Conan); then the same
# suite built with AddressSanitizer and
# UndefinedBehaviorSanitizer (set BILEVEL_SANITIZERS=0 to skip that second pass locally).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
start=$(date +%s)
# The tests and examples (the benchmarks are checked below; ./scripts/build.sh builds them).
# CUDA code is compiled for one GPU architecture here (90): where no GPU is present its tests
# are compiled and skipped, and one architecture checks that they compile in about a seventh
# less time; ./scripts/build.sh, which the GPU checks use, compiles for 80 and 90. Where no GPU
# is present the host side of CUDA code is compiled at -O0 too (device code stays optimised):
# what cannot run needs only to compile, and the CUDA test units take 40% less time so.
cuda_host_flags="-O3 -DNDEBUG"
if ! nvidia-smi -L >/dev/null 2>&1; then cuda_host_flags="-O0 -DNDEBUG"; fi
BILEVEL_BENCHMARKS=OFF BILEVEL_CUDA_ARCHITECTURES=90 BILEVEL_CUDA_FLAGS_RELEASE="$cuda_host_flags" ./scripts/build.sh
built=$(date +%s)
echo "bilevel: build took $((built - start)) s"
ctest --test-dir build --output-on-failure -j"$(nproc)"
echo "bilevel: tests took $(($(date +%s) - built)) s"

# The Conan 2 package, created offline from Debian's packages (pip fetches Conan itself), in
# the background while the benchmarks compile: most of its time is pip, Conan and CMake
# configuring (one core at most), and its one small consumer does not hold up the compiler.
# Its output is shown once it has finished, and a failure fails the script.
start=$(date +%s)
conan_log=$(mktemp)
./scripts/conan_check.sh >"$conan_log" 2>&1 &
conan_pid=$!

# The benchmark programs must compile; no test runs them, so here their host C++ units go
# through the compiler's semantic analysis only (-fsyntax-only: every template they use is
# instantiated and checked, no code is generated, and the programs are not linked: the link
# rules only touch the target), 94 s instead of 185 s at -O0 on 2 cores (2026-12-07); their
# CUDA units compile fully, at -O0 (nvcc has no such mode). The OpenMP and OpenBLAS builds of
# the MWN step comparison (the same source again) are left out. ./scripts/build.sh builds and
# links every benchmark program at -O3 in build/, for timing.
cmake -S . -B build-bench-check -DCMAKE_BUILD_TYPE=Release -DBILEVEL_BUILD_TESTS=OFF \
      -DBILEVEL_BUILD_EXAMPLES=OFF "-DBILEVEL_BENCHMARK_FLAGS=-O0;-fsyntax-only" -DBILEVEL_BENCHMARK_VARIANTS=OFF \
      "-DBILEVEL_GPU_BENCHMARK_HOST_FLAGS=-O0;-fsyntax-only" "-DCMAKE_CUDA_FLAGS_RELEASE=-O0 -DNDEBUG" \
      "-DCMAKE_CXX_LINK_EXECUTABLE=<CMAKE_COMMAND> -E touch <TARGET>" \
      "-DCMAKE_CUDA_LINK_EXECUTABLE=<CMAKE_COMMAND> -E touch <TARGET>" \
      -DCMAKE_CUDA_ARCHITECTURES=90 >/dev/null
cmake --build build-bench-check -j"$(nproc)"
echo "bilevel: benchmark compile check took $(($(date +%s) - start)) s"
conan_status=0
wait "$conan_pid" || conan_status=$?
cat "$conan_log"
rm -f "$conan_log"
if [ "$conan_status" -ne 0 ]; then
  echo "bilevel: the Conan package check failed (exit $conan_status)" >&2
  exit "$conan_status"
fi
echo "bilevel: benchmark compile check and Conan package check took $(($(date +%s) - start)) s together"

if [ "${BILEVEL_SANITIZERS:-1}" != "0" ]; then
  start=$(date +%s)
  cmake -S . -B build-sanitize -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBILEVEL_SANITIZE=ON \
        -DBILEVEL_BUILD_BENCHMARKS=OFF -DBILEVEL_WITH_CUDA=OFF >/dev/null
  # The second pass builds the test programs only: the unit tests, the SIMD-width checks, the
  # README's quick start, the concept checks and example 01. Examples 02-04 cost a third of the instrumented build
  # (each is a whole training program, 100 s of CPU under the sanitizers) and their code is
  # the library's, which the unit tests run under the sanitizers on small shapes; the first
  # pass runs them, with their bad-input rows. The MPI tests run in the first pass only: MPI's
  # own libraries are not built with the sanitizers, and their one-time allocations would be
  # reported as leaks.
  cmake --build build-sanitize -j"$(nproc)" \
        --target bilevel_tests bilevel_simd_tests_avx2 bilevel_simd_tests_avx512f readme_quick_start \
                 compile_pass_concepts 01_ridge_hyperparameters
  built=$(date +%s)
  echo "bilevel: sanitizer build took $((built - start)) s"
  # Any sanitizer report fails the test that produced it (halt_on_error, exit code).
  ASAN_OPTIONS=halt_on_error=1:detect_leaks=1:abort_on_error=0 \
  UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    ctest --test-dir build-sanitize --output-on-failure -j"$(nproc)" \
          -E '^(package|compile_fail)\.|^example\.0[2-9]_' -LE 'networks|mpi'
  echo "bilevel: sanitizer tests took $(($(date +%s) - built)) s"
fi
