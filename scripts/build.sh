#!/usr/bin/env bash
# Configures and builds bilevel into build/ (Release). Arguments are extra build targets.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
./scripts/install_deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DBILEVEL_BUILD_BENCHMARKS="${BILEVEL_BENCHMARKS:-ON}" >/dev/null
if [ $# -gt 0 ]; then
  cmake --build build -j"$(nproc)" --target "$@"
else
  cmake --build build -j"$(nproc)"
fi
