#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Every GPU check in one go, for a machine with an NVIDIA GPU that need not have the build
# tools or the Debian packages: the programs are built on a machine that has them, gathered
# into one folder, and run from it.
#
#   bench/gpu/device_checks.sh stage DIR             on the build machine: builds the GPU
#                                                    programs (./scripts/build.sh: -O3, sm_80 and
#                                                    sm_90) and copies them and the Fashion-MNIST
#                                                    files into DIR (about 55 MB)
#   bench/gpu/device_checks.sh run DIR OUT [STEP...] on the GPU machine, from the repository's
#                                                    root: runs the steps (all, in the order below,
#                                                    when none is named), writing OUT/*.log
#
# The steps, each bounded in time so that one hung step cannot take the others' time, in the
# order of what is most often needed:
#   cuda_tests       the CUDA test suite (tests/cuda: primitives, learners, networks, methods
#                    against the Eigen policy, streams, checkpoints, graph capture);
#   primitives       the policy's kernels against CUB and Thrust on the same work
#                    (bench/gpu/primitives_gpu.cu);
#   learners         the learners' benchmark (bench/gpu/learners_gpu.cu: the CUDA policy against
#                    Eigen and cuBLAS; the look-ahead step and each method's outer iteration plain
#                    and as one CUDA graph), then PyTorch's Meta-Weight-Net look-ahead step
#                    (bench/compare/peers.py --device cuda, on the problem exported at staging);
#   networks         the papers' networks against PyTorch on the same GPU, alternating bilevel and
#                    PyTorch for NETWORK_ROUNDS rounds (default 3): ResNet-20 gradient and
#                    gradient + HVP at batch 256, the DARTS supernet's gradient and one
#                    second-order DARTS iteration at batch 64 (bench/gpu/networks_gpu.cu,
#                    bench/compare/networks.py --device cuda); one JSON line per run in
#                    OUT/networks.jsonl;
#   example05        example 05, Meta-Weight-Net on the GPU, one epoch;
#   memcheck_policy  the policy's primitives under compute-sanitizer's memcheck.
# BUDGET (seconds, default 540) bounds the whole run: a step whose time limit would pass it is
# skipped, and says so in OUT/steps.log. PyTorch is taken from the machine's python3. Exits
# non-zero if the test suite ran and failed.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

targets=(bilevel_cuda_tests bench_gpu_networks bench_gpu_learners bench_gpu_primitives 05_label_noise_gpu
         bench_compare_mwn_step)
programs=(tests/cuda/bilevel_cuda_tests bench/bench_gpu_networks bench/bench_gpu_learners bench/bench_gpu_primitives
          examples/05_label_noise_gpu)

case "${1:-}" in
  stage)
    dir=${2:?usage: device_checks.sh stage DIR}
    # Built now, so that what is staged is this tree at full optimisation, whatever an earlier
    # ./scripts/test.sh left in build/ (one architecture, host code at -O0 without a GPU).
    ./scripts/build.sh "${targets[@]}" || exit 1
    mkdir -p "$dir/data"
    for p in "${programs[@]}"; do cp "build/$p" "$dir/"; done
    data=${BILEVEL_FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}
    cp "$data"/*-ubyte.gz "$dir/data/"
    # The Meta-Weight-Net problem PyTorch's side of the step comparison reads (bench/compare).
    build/bench/bench_compare_mwn_step --export "$dir/mwn_problem" --width 256 --seed 1 --data "$data" > /dev/null
    du -sh "$dir"
    ;;
  run)
    dir=${2:?usage: device_checks.sh run DIR OUT [STEP...]}
    out=${3:?usage: device_checks.sh run DIR OUT [STEP...]}
    shift 3
    steps=("$@")
    [ ${#steps[@]} -gt 0 ] || steps=(cuda_tests primitives learners networks example05 memcheck_policy)
    budget=${BUDGET:-540}
    rounds=${NETWORK_ROUNDS:-3}
    mkdir -p "$out"
    export LD_LIBRARY_PATH="/usr/local/cuda/lib64:/usr/local/cuda/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    export PYTHONUNBUFFERED=1
    nvidia-smi -L | tee "$out/device.log"
    fits() {  # fits SECONDS: whether a step of that limit ends within the budget
      if [ $((SECONDS + $1)) -le "$budget" ]; then return 0; fi
      echo "device_checks: $2 skipped at $SECONDS s: its $1 s would pass the budget of $budget s" | tee -a "$out/steps.log"
      return 1
    }
    step() {  # step NAME SECONDS COMMAND...: runs it with a time limit, logs to OUT/NAME.log
      local name=$1 limit=$2
      shift 2
      fits "$limit" "$name" || return 0
      local t0=$SECONDS
      timeout -k 10 "$limit" "$@" > "$out/$name.log" 2>&1
      local rc=$?
      echo "device_checks: $name exit $rc in $((SECONDS - t0)) s" | tee -a "$out/steps.log"
      return $rc
    }
    tests_rc=0
    for s in "${steps[@]}"; do
      case "$s" in
        cuda_tests)
          step cuda_tests 240 "$dir/bilevel_cuda_tests"
          tests_rc=$?
          ;;
        primitives)
          step primitives 60 "$dir/bench_gpu_primitives" --out "$out/primitives.md"
          ;;
        learners)
          step learners 240 "$dir/bench_gpu_learners" --out "$out/learners.md"
          # PyTorch's Meta-Weight-Net look-ahead step on the same GPU, right after bilevel's.
          step peers_torch 90 python3 bench/compare/peers.py --impl torch --device cuda --problem "$dir/mwn_problem" \
            --data "$dir/data" --warmup 20 --timed 200
          ;;
        networks)
          [ -f "$out/networks.jsonl" ] || : > "$out/networks.jsonl"
          for round in $(seq 1 "$rounds"); do
            fits 120 "networks round $round" || break
            for spec in "resnet20-grad 256" "resnet20-hvp 256" "darts-grad 64" "darts-step 64"; do
              set -- $spec
              timeout -k 10 60 "$dir/bench_gpu_networks" --case "$1" --batch "$2" --warmup 3 --timed 10 \
                >> "$out/networks.jsonl" 2>> "$out/networks.log"
              timeout -k 10 60 python3 bench/compare/networks.py --device cuda --case "$1" --batch "$2" --warmup 3 \
                --timed 10 >> "$out/networks.jsonl" 2>> "$out/networks.log"
            done
            echo "device_checks: networks round $round done at $SECONDS s" | tee -a "$out/steps.log"
          done
          ;;
        example05)
          step example05 120 "$dir/05_label_noise_gpu" --epochs 1 --data "$dir/data"
          ;;
        memcheck_policy)
          # The policy's kernels under memcheck (the primitives' cases: a minute or two).
          sanitizer=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
          if [ -x "$sanitizer" ]; then
            step memcheck_policy 150 "$sanitizer" --tool memcheck "$dir/bilevel_cuda_tests" -tc="cuda policy*"
          else
            echo "device_checks: compute-sanitizer not found, memcheck skipped" | tee -a "$out/steps.log"
          fi
          ;;
        *)
          echo "device_checks: unknown step '$s' (cuda_tests, primitives, learners, networks, example05," \
               "memcheck_policy)" >&2
          exit 2
          ;;
      esac
    done
    exit $tests_rc
    ;;
  *)
    echo "usage: bench/gpu/device_checks.sh stage DIR | run DIR OUT [STEP...]" >&2
    exit 2
    ;;
esac
