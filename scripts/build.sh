#!/usr/bin/env bash
# Configures and builds bilevel into build/ (Release). Arguments are extra build targets.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
./scripts/install_deps.sh
# GPU architectures of the CUDA code (80: A100, 90: H100/H200), given at every configure so
# that a build after ./scripts/test.sh's (which compiles for 90 alone) has both again.
# The same for the host side of CUDA code (nvcc's -O; ./scripts/test.sh lowers it where no GPU
# can run what it compiles).
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DBILEVEL_BUILD_BENCHMARKS="${BILEVEL_BENCHMARKS:-ON}" \
      "-DCMAKE_CUDA_ARCHITECTURES=${BILEVEL_CUDA_ARCHITECTURES:-80;90}" \
      "-DCMAKE_CUDA_FLAGS_RELEASE=${BILEVEL_CUDA_FLAGS_RELEASE:--O3 -DNDEBUG}" >/dev/null
if [ $# -gt 0 ]; then
  cmake --build build -j"$(nproc)" --target "$@"
else
  cmake --build build -j"$(nproc)"
fi
