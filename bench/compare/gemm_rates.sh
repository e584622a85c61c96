#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The SGEMM kernels behind the comparison, side by side on one core: Eigen's own, OpenBLAS's
# (Eigen with EIGEN_USE_BLAS) and PyTorch's (the wheel's), on the MLP's first-layer shapes,
# ROUNDS (3) alternations. Needs bench/compare/setup.sh's venv and libopenblas-dev.
#
#   bench/compare/gemm_rates.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=$root/build/compare/gemm
mkdir -p "$out"
c++ -O3 -march=native -DNDEBUG -std=c++20 -isystem /usr/include/eigen3 "$here/gemm_rates.cpp" -o "$out/gemm_eigen"
c++ -O3 -march=native -DNDEBUG -std=c++20 -DEIGEN_USE_BLAS -isystem /usr/include/eigen3 "$here/gemm_rates.cpp" \
  -o "$out/gemm_openblas" -lopenblas
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
for _ in $(seq 1 "${ROUNDS:-3}"); do
  "$out/gemm_eigen"
  "$out/gemm_openblas"
  "$root/build/compare-venv/bin/python" "$here/gemm_rates.py"
done | sort
