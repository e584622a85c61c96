#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Sets up the Python side of bench/benchopt: a virtual environment with benchopt and JAX
# (CPU), the packages benchopt's bilevel benchmark needs for the solvers compared here
# (SOBA, StocBiO, F2SA, BOME). Everything is downloaded here, once; run.sh downloads nothing.
#
#   bench/benchopt/setup.sh BENCHMARK_BILEVEL_CHECKOUT [VENV]
#
# BENCHMARK_BILEVEL_CHECKOUT: a checkout of the repository benchopt/benchmark_bilevel.
# VENV: where to create the environment (default: BENCHMARK_BILEVEL_CHECKOUT/.venv-bilevel-bench).
set -euo pipefail
if [[ $# -lt 1 ]]; then
  sed -n 3,10p "$0"
  exit 2
fi
bench=$(cd "$1" && pwd)
venv=${2:-$bench/.venv-bilevel-bench}
for f in objective.py datasets/simulated.py benchmark_utils/gen_matrices.py solvers/soba.py solvers/stocbio.py \
         solvers/f2sa.py solvers/bome.py; do
  [[ -f $bench/$f ]] || { echo "setup.sh: $bench is not a benchmark_bilevel checkout (no $f)" >&2; exit 1; }
done
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --upgrade pip
# The objective's requirements (objective.py: scikit-learn, jax, jaxlib) and benchopt itself.
"$venv/bin/pip" install --quiet benchopt "jax[cpu]" scikit-learn joblib numpy
"$venv/bin/python" - "$bench" <<'PY'
import sys, importlib.metadata as md
sys.path.insert(0, sys.argv[1])
import jax, benchmark_utils.gen_matrices  # noqa: F401  (the benchmark's own modules import)
print("venv ready:", ", ".join(f"{p} {md.version(p)}" for p in ("benchopt", "jax", "jaxlib", "numpy")))
PY
