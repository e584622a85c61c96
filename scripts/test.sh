#!/usr/bin/env bash
# Sets everything up and runs the whole test suite: unit tests, compile-fail tests, examples.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
start=$(date +%s)
./scripts/build.sh
built=$(date +%s)
echo "bilevel: build took $((built - start)) s"
ctest --test-dir build --output-on-failure -j"$(nproc)"
echo "bilevel: tests took $(($(date +%s) - built)) s"
