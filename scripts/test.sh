#!/usr/bin/env bash
# Sets everything up and runs the whole test suite: unit tests, compile-fail tests, examples,
# the package consumers (find_package, add_subdirectory, FetchContent, Conan); then the same
# suite built with AddressSanitizer and
# UndefinedBehaviorSanitizer (set BILEVEL_SANITIZERS=0 to skip that second pass locally).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
start=$(date +%s)
./scripts/build.sh
built=$(date +%s)
echo "bilevel: build took $((built - start)) s"
ctest --test-dir build --output-on-failure -j"$(nproc)"
echo "bilevel: tests took $(($(date +%s) - built)) s"

# The Conan 2 package, created offline from Debian's packages (pip fetches Conan itself).
start=$(date +%s)
./scripts/conan_check.sh
echo "bilevel: Conan package check took $(($(date +%s) - start)) s"

if [ "${BILEVEL_SANITIZERS:-1}" != "0" ]; then
  start=$(date +%s)
  cmake -S . -B build-sanitize -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBILEVEL_SANITIZE=ON \
        -DBILEVEL_BUILD_BENCHMARKS=OFF -DBILEVEL_WITH_CUDA=OFF >/dev/null
  cmake --build build-sanitize -j"$(nproc)"
  built=$(date +%s)
  echo "bilevel: sanitizer build took $((built - start)) s"
  # Any sanitizer report fails the test that produced it (halt_on_error, exit code). The
  # examples' runs on a ResNet and on the DARTS cell space (label `networks`) are left to the
  # first pass: at -O1 under ASan they take minutes, and the unit tests run the same network
  # code under the sanitizers on small shapes.
  ASAN_OPTIONS=halt_on_error=1:detect_leaks=1:abort_on_error=0 \
  UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    ctest --test-dir build-sanitize --output-on-failure -j"$(nproc)" -E '^(package|compile_fail)\.' -LE networks
  echo "bilevel: sanitizer tests took $(($(date +%s) - built)) s"
fi
