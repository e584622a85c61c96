#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Creates build/compare-venv with the Python peers of the comparison (bench/compare/run.sh):
# PyTorch (used on the CPU), higher, TorchOpt, Betty, numpy, at the versions of requirements.txt,
# all from PyPI (and python3-venv from Debian's apt when missing).
# Idempotent: a venv whose packages already match is left alone (one with another torch is made afresh).
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

# A venv with another torch is made afresh: an upgrade in place would keep the old torch's CUDA
# runtime wheels (torch 2.1's cu12 packages next to 2.15's cu13 ones, some in the same folders).
have=$("$py" -c 'import importlib.metadata as md; print(md.version("torch"))' 2>/dev/null || true)
if [ -n "$have" ] && [ "$have" != "$(pin torch)" ]; then
  echo "compare-venv: torch $have installed, $(pin torch) pinned: making the venv afresh"
  rm -rf "$venv"
  /usr/bin/python3 -m venv "$venv"
fi

"$py" -m pip install -q --upgrade pip
# Everything comes from PyPI. PyPI's Linux torch wheel is its CUDA build (CUDA 13 for torch 2.15)
# and pulls the CUDA runtime wheels (about 3 GB to download, 5.4 GB installed); the comparison
# uses only its CPU side.
echo "compare-venv: torch from PyPI (pulls the CUDA runtime wheels, about 3 GB)"
"$py" -m pip install -q "torch==$(pin torch)"
"$py" -m pip install -q "numpy==$(pin numpy)" "higher==$(pin higher)" "torchopt==$(pin torchopt)"
"$py" -m pip install -q --ignore-requires-python "betty-ml==$(pin betty-ml)"
"$py" -c 'import torch, higher, torchopt, betty, numpy; print("compare-venv: torch", torch.__version__, "torchopt", torchopt.__version__, "numpy", numpy.__version__, "betty", betty.__file__)'
