#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Creates build/compare-venv with the Python peers of the comparison (bench/compare/run.sh):
# PyTorch (CPU), higher, TorchOpt, Betty, numpy, at the versions of requirements.txt.
# Idempotent: a venv whose packages already match is left alone.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
venv=$root/build/compare-venv
req=$here/requirements.txt
pin() { grep -E "^$1==" "$req" | cut -d= -f3; }

if ! /usr/bin/python3 -c 'import venv, ensurepip' 2>/dev/null; then
  apt-get update -qq && apt-get install -y -qq python3-venv
fi
[ -x "$venv/bin/python" ] || /usr/bin/python3 -m venv "$venv"
py=$venv/bin/python

if "$py" - "$req" <<'PY' 2>/dev/null; then echo "compare-venv: up to date ($venv)"; exit 0; fi
import sys, importlib.metadata as md
for line in open(sys.argv[1]):
    line = line.split('#')[0].strip()
    if line:
        name, version = line.split('==')
        if md.version(name) != version: sys.exit(1)
PY

"$py" -m pip install -q --upgrade pip
torch_args=()
# The CPU-only wheels are much smaller; use them when their index answers.
if curl -fsS -m 15 -o /dev/null https://download.pytorch.org/whl/cpu/torch/ 2>/dev/null; then
  torch_args=(--index-url https://download.pytorch.org/whl/cpu)
  echo "compare-venv: torch from the CPU-only index"
else
  echo "compare-venv: CPU-only index unreachable; torch from PyPI (pulls the CUDA runtime wheels, ~2.5 GB)"
fi
"$py" -m pip install -q "${torch_args[@]}" "torch==$(pin torch)"
"$py" -m pip install -q "numpy==$(pin numpy)" "higher==$(pin higher)" "torchopt==$(pin torchopt)"
"$py" -m pip install -q --ignore-requires-python "betty-ml==$(pin betty-ml)"
"$py" -c 'import torch, higher, torchopt, betty, numpy; print("compare-venv: torch", torch.__version__, "torchopt", torchopt.__version__, "numpy", numpy.__version__, "betty", betty.__file__)'
