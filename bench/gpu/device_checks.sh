#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Every GPU check in one go, for a machine with an NVIDIA GPU that need not have the build
# tools or the Debian packages: the programs are built on a machine that has them, gathered
# into one folder, and run from it.
#
#   bench/gpu/device_checks.sh stage DIR      on the build machine, after ./scripts/build.sh:
#                                             copies the GPU programs and the Fashion-MNIST files
#                                             into DIR (about 45 MB)
#   bench/gpu/device_checks.sh run DIR OUT    on the GPU machine, from the repository's root:
#                                             runs them, writing OUT/*.log and OUT/networks.jsonl
#
# What `run` does, each step bounded in time so that one hung step cannot take the others'
# time, in the order of what is most often needed:
#   1. the CUDA test suite (tests/cuda: primitives, learners, networks, methods against the
#      Eigen policy, streams, checkpoints);
#   2. the papers' networks against PyTorch on the same GPU, alternating bilevel and PyTorch
#      for 3 rounds: ResNet-20 gradient and gradient + HVP at batch 256, the DARTS supernet's
#      gradient and one second-order DARTS iteration at batch 64 (bench/gpu/networks_gpu.cu,
#      bench/compare/networks.py --device cuda); one JSON line per run;
#   3. the learners' benchmark (bench/gpu/learners_gpu.cu: the CUDA policy against Eigen and
#      cuBLAS; the look-ahead step and each method's outer iteration plain and as one CUDA
#      graph), then PyTorch's Meta-Weight-Net look-ahead step (bench/compare/peers.py --device
#      cuda, on the problem exported at staging);
#   4. the policy's kernels against CUB and Thrust on the same work (bench/gpu/primitives_gpu.cu);
#   5. example 05, Meta-Weight-Net on the GPU, one epoch.
# PyTorch is taken from the machine's python3. Exits non-zero if the test suite fails.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

programs=(tests/cuda/bilevel_cuda_tests bench/bench_gpu_networks bench/bench_gpu_learners bench/bench_gpu_primitives
          examples/05_label_noise_gpu)

case "${1:-}" in
  stage)
    dir=${2:?usage: device_checks.sh stage DIR}
    mkdir -p "$dir/data"
    for p in "${programs[@]}"; do
      [ -x "build/$p" ] || { echo "device_checks.sh: build/$p is missing: run ./scripts/build.sh first" >&2; exit 1; }
      cp "build/$p" "$dir/"
    done
    data=${BILEVEL_FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}
    cp "$data"/*-ubyte.gz "$dir/data/"
    # The Meta-Weight-Net problem PyTorch's side of the step comparison reads (bench/compare).
    [ -x build/bench/bench_compare_mwn_step ] || { echo "device_checks.sh: build/bench/bench_compare_mwn_step is missing" >&2; exit 1; }
    build/bench/bench_compare_mwn_step --export "$dir/mwn_problem" --width 256 --seed 1 --data "$data" > /dev/null
    du -sh "$dir"
    ;;
  run)
    dir=${2:?usage: device_checks.sh run DIR OUT}
    out=${3:?usage: device_checks.sh run DIR OUT}
    mkdir -p "$out"
    export LD_LIBRARY_PATH="/usr/local/cuda/lib64:/usr/local/cuda/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    export PYTHONUNBUFFERED=1
    nvidia-smi -L | tee "$out/device.log"
    step() {  # step NAME SECONDS COMMAND...: runs it with a time limit, logs to OUT/NAME.log
      local name=$1 limit=$2
      shift 2
      local t0=$SECONDS
      timeout "$limit" "$@" > "$out/$name.log" 2>&1
      local rc=$?
      echo "device_checks: $name exit $rc in $((SECONDS - t0)) s" | tee -a "$out/steps.log"
      return $rc
    }
    step cuda_tests 240 "$dir/bilevel_cuda_tests"
    tests_rc=$?
    : > "$out/networks.jsonl"
    for round in 1 2 3; do
      for spec in "resnet20-grad 256" "resnet20-hvp 256" "darts-grad 64" "darts-step 64"; do
        set -- $spec
        timeout 60 "$dir/bench_gpu_networks" --case "$1" --batch "$2" --warmup 3 --timed 10 >> "$out/networks.jsonl" 2>> "$out/networks.log"
        timeout 60 python3 bench/compare/networks.py --device cuda --case "$1" --batch "$2" --warmup 3 --timed 10 \
          >> "$out/networks.jsonl" 2>> "$out/networks.log"
      done
      echo "device_checks: networks round $round done at $SECONDS s" | tee -a "$out/steps.log"
    done
    step learners 240 "$dir/bench_gpu_learners" --out "$out/learners.md"
    # PyTorch's Meta-Weight-Net look-ahead step on the same GPU, right after bilevel's.
    step peers_torch 90 python3 bench/compare/peers.py --impl torch --device cuda --problem "$dir/mwn_problem" \
      --data "$dir/data" --warmup 20 --timed 200
    step primitives 60 "$dir/bench_gpu_primitives" --out "$out/primitives.md"
    step example05 120 "$dir/05_label_noise_gpu" --epochs 1 --data "$dir/data"
    # The policy's kernels under memcheck (the primitives' cases: a minute or two).
    sanitizer=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
    if [ -x "$sanitizer" ]; then
      step memcheck_policy 150 "$sanitizer" --tool memcheck "$dir/bilevel_cuda_tests" -tc="cuda policy*"
    else
      echo "device_checks: compute-sanitizer not found, memcheck skipped" | tee -a "$out/steps.log"
    fi
    exit $tests_rc
    ;;
  *)
    echo "usage: bench/gpu/device_checks.sh stage DIR | run DIR OUT" >&2
    exit 2
    ;;
esac
