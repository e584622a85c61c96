#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# bilevel against the Python tools (plain PyTorch, higher, TorchOpt, Betty) on one problem,
# Meta-Weight-Net on Fashion-MNIST with 40% label noise, in one run; writes
# build/compare/results.jsonl, then bench/RESULTS.md and bench/compare/time_vs_width.png.
#
#   bench/compare/run.sh [--quick]
#
# Steps: the venv (setup.sh), the C++ program (bench_compare_mwn_step, built here with the
# benchmarks' flags, -j1 under nice), one exported problem per seed and width, then the runs:
#   training     every implementation, look-ahead hypergradient, 1 thread, seeds 1 2 3:
#                20 warm-up + 200 timed outer steps inside a training run of TRAIN_STEPS (2
#                epochs), then the test accuracy
#   rounds       ROUNDS (3) interleaved rounds of timing-only runs (20 warm-up + 200 timed):
#                look-ahead at threads 1 and 2; implicit CG and Neumann (K = 10) for bilevel,
#                TorchOpt and Betty at 1 thread; the width sweep MLP 784-W-128-10, W = 512,
#                1024, 2048 (256: the look-ahead runs), every implementation, 1 thread
# Timing waits for a quiet machine: while a process whose command line contains /tmp/exp/
# runs (long experiments) or the CPUs are less than 85% idle or niced, it polls every minute for up to
# WAIT_MINUTES (45), then runs anyway and the report says the machine was loaded. It also waits
# while build/compare/hold exists. Each result records the load just before its run.
#
#   schedule     in each round, bilevel --mode last_step (Betty's schedule: classifier first, the
#                hypergradient through the real step just taken, exact product) and Betty, at
#                W = 256 and 2048, 1 thread: the same arithmetic as Betty's setting
#   blas         in each round, the look-ahead and last_step runs at W = 256 and 2048 again with
#                bench_compare_mwn_step_blas (EIGEN_USE_BLAS: Eigen's products in OpenBLAS,
#                OPENBLAS_NUM_THREADS=1), when CMake found OpenBLAS
#
# Environment: WAIT_MINUTES (45), TRAIN_STEPS (920), WARMUP (20), TIMED (200), SEEDS ("1 2 3"),
# WIDTHS ("256 512 1024 2048"), THREADS ("1 2"), ROUNDS (3), RUN_LIMIT (300 s per run),
# PARTS ("training lookahead implicit sweep schedule blas": which of the runs above), APPEND (0; 1:
# add to results.jsonl instead of starting it afresh, e.g. PARTS=schedule APPEND=1 after a run).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=$root/build/compare
cd "$root"

WAIT_MINUTES=${WAIT_MINUTES:-45}
TRAIN_STEPS=${TRAIN_STEPS:-920}  # 2 epochs of the 460 full batches of 128 in 59000 images
WARMUP=${WARMUP:-20}
TIMED=${TIMED:-200}
SEEDS=${SEEDS:-1 2 3}
WIDTHS=${WIDTHS:-256 512 1024 2048}
THREADS=${THREADS:-1 2}
ROUNDS=${ROUNDS:-3}
RUN_LIMIT=${RUN_LIMIT:-300}  # seconds; a run past it is dropped (and reported on stderr)
PARTS=${PARTS:-training lookahead implicit sweep schedule blas}
APPEND=${APPEND:-0}
part() { case " $PARTS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
K=10            # CG / Neumann iterations
ALPHA=0.01      # Neumann step
report=$root/bench/RESULTS.md plot=$here/time_vs_width.png
if [ "${1:-}" = "--quick" ]; then  # a smoke test of the whole pipeline, not a result: writes under build/
  WAIT_MINUTES=0 TRAIN_STEPS=30 WARMUP=2 TIMED=5 SEEDS="1 2" WIDTHS="256 512" THREADS="1 2" ROUNDS=2
  out=$out/quick report=$out/RESULTS.md plot=$out/time_vs_width.png
fi
command_line="bench/compare/run.sh $*"
[ "$PARTS" != "training lookahead implicit sweep schedule blas" ] && command_line="PARTS=\"$PARTS\" $command_line"
[ "$APPEND" != 0 ] && command_line="APPEND=$APPEND $command_line"
[ "$ROUNDS" != 3 ] && command_line="ROUNDS=$ROUNDS $command_line"
[ "$WAIT_MINUTES" != 45 ] && command_line="WAIT_MINUTES=$WAIT_MINUTES $command_line"

bash "$here/setup.sh"
py=$root/build/compare-venv/bin/python
mkdir -p "$out"
cmake -S "$root" -B "$root/build/compare/cmake" -DCMAKE_BUILD_TYPE=Release -DBILEVEL_BUILD_TESTS=OFF -DBILEVEL_BUILD_EXAMPLES=OFF \
  -DBILEVEL_WITH_XTENSOR=OFF > "$out/cmake.log"
nice cmake --build "$root/build/compare/cmake" -j1 --target bench_compare_mwn_step bench_compare_mwn_step_omp \
  > "$out/build.log"
cpp=$root/build/compare/cmake/bench/bench_compare_mwn_step
cpp_omp=$root/build/compare/cmake/bench/bench_compare_mwn_step_omp
cpp_blas=$root/build/compare/cmake/bench/bench_compare_mwn_step_blas  # built when CMake finds OpenBLAS
nice cmake --build "$root/build/compare/cmake" -j1 --target bench_compare_mwn_step_blas >> "$out/build.log" 2>&1 ||
  echo "run.sh: no OpenBLAS build of mwn_step (libopenblas-dev missing?): the blas runs are skipped"

problem() {  # problem DIR for width $1 and seed $2, exported once
  local dir=$out/problems/w$1_s$2
  [ -f "$dir/problem.json" ] || "$cpp" --export "$dir" --width "$1" --seed "$2" > /dev/null
  echo "$dir"
}
for s in $SEEDS; do problem 256 "$s" > /dev/null; done
for w in $WIDTHS; do problem "$w" 1 > /dev/null; done

# Wait for a quiet machine: no process of the long experiments, and the CPUs at least 85%
# available over 5 s (idle, or running niced work such as `nice` compiles, which
# yields to the measurements under the kernel's fair scheduler).
idle_pct() {  # idle_pct SECONDS [nice]: CPU share idle (with "nice": idle or niced) over the interval
  local a b
  a=($(head -1 /proc/stat)); sleep "$1"; b=($(head -1 /proc/stat))
  local total=0 i free
  for i in 1 2 3 4 5 6 7 8; do total=$((total + b[i] - a[i])); done
  free=$((b[4] - a[4] + b[5] - a[5]))
  [ "${2:-}" = nice ] && free=$((free + b[2] - a[2]))
  echo $(( total > 0 ? 100 * free / total : 100 ))
}
waited=0 loaded=false
while :; do
  busy=$(pgrep -f /tmp/exp/ || true)
  idle=$(idle_pct 5 nice)
  if [ -z "$busy" ] && [ "$idle" -ge 85 ] && [ ! -e "$out/hold" ]; then break; fi
  if [ "$waited" -ge "$WAIT_MINUTES" ]; then
    { [ -n "$busy" ] || [ "$idle" -lt 85 ]; } && loaded=true
    rm -f "$out/hold"
    break
  fi
  echo "run.sh: waiting for a quiet machine ($waited/$WAIT_MINUTES min; CPUs ${idle}% idle or niced): $(pgrep -af /tmp/exp/ | cut -c1-80 | tr '\n' ';')"
  sleep 55
  waited=$((waited + 1))
done
busy_list=$( (pgrep -af /tmp/exp/ | cut -c1-120; ps -eo pcpu=,args= --sort=-pcpu | awk '$1 > 20' | cut -c1-120) || true)

results=$out/results.jsonl
[ "$APPEND" = 0 ] && : > "$results"
start=$(date +%s)
APPEND=$APPEND "$py" - "$out/meta.json" "$command_line" "$waited" "$loaded" "$busy_list" "$TRAIN_STEPS" "$WARMUP" "$TIMED" "$K" "$ALPHA" <<'PY'
import json, subprocess, sys, os, importlib.metadata as md
path, cmd, waited, loaded, busy, train, warm, timed, k, alpha = sys.argv[1:]
lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
field = lambda name: next((l.split(":", 1)[1].strip() for l in lscpu.splitlines() if l.startswith(name + ":")), "?")
def version(p):
    try: return md.version(p)
    except Exception: return None
cxx = subprocess.run(["c++", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
root = os.getcwd()
bilevel = next((l.split("VERSION")[1].split()[0] for l in open(os.path.join(root, "CMakeLists.txt")) if l.startswith("project(bilevel")), "?")
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True).stdout.strip() != ""
if os.environ.get("APPEND", "0") != "0" and os.path.exists(path):  # a supplement: say so, keep the first run's
    first = json.load(open(path))
    first.setdefault("appended", []).append({"command": cmd, "waited_minutes": int(waited), "loaded": loaded == "true",
                                             "busy": busy.splitlines(), "commit": commit, "dirty": dirty})
    json.dump(first, open(path, "w"), indent=1)
    sys.exit(0)
json.dump({"cpu": field("Model name"), "cpus": field("CPU(s)"), "threads_per_core": field("Thread(s) per core"),
           "flags_avx512": "avx512f" in lscpu, "loadavg_at_start": open("/proc/loadavg").read().split()[:3],
           "command": cmd, "waited_minutes": int(waited), "loaded": loaded == "true", "busy": busy.splitlines(),
           "train_steps": int(train), "warmup": int(warm), "timed": int(timed), "iterations": int(k), "neumann_step": float(alpha),
           "versions": {"python": sys.version.split()[0], "torch": version("torch"), "numpy": version("numpy"),
                        "higher": version("higher"), "torchopt": version("torchopt"), "betty-ml": version("betty-ml"),
                        "bilevel": f"{bilevel} (git {commit}{', uncommitted changes' if dirty else ''})", "compiler": cxx,
                        "flags": "-O3 -march=native (bench/CMakeLists.txt), Release"}}, open(path, "w"), indent=1)
PY

round=0
run() {  # run IMPL ARGS...: one JSON line into results.jsonl (a run over RUN_LIMIT s is dropped, and said)
  local impl=$1
  shift
  local line load idle free
  load=$(cut -d' ' -f1 /proc/loadavg) idle=$(idle_pct 1) free=$(idle_pct 1 nice)
  if [ "$impl" = bilevel ]; then
    line=$(timeout "$RUN_LIMIT" "$@") || { echo "run.sh: dropped (failed or over ${RUN_LIMIT} s): $*" >&2; return 0; }
  else
    line=$(timeout "$RUN_LIMIT" "$py" "$here/peers.py" --impl "$impl" "$@" 2> "$out/last_stderr.log") ||
      { tail -3 "$out/last_stderr.log" >&2; echo "run.sh: dropped (failed or over ${RUN_LIMIT} s): $impl $*" >&2; return 0; }
  fi
  line="${line%\}}, \"round\": $round, \"load_1min_before\": $load, \"idle_pct_before\": $idle, \"idle_or_niced_pct_before\": $free}"
  echo "$line" >> "$results"
  echo "$line" | cut -c1-150
}
bilevel_bin() { if [ "$1" = 1 ]; then echo "$cpp"; else echo "$cpp_omp"; fi; }
common="--warmup $WARMUP --timed $TIMED"
export OPENBLAS_NUM_THREADS=1  # the OpenBLAS build's GEMMs (1-thread runs only)

if part training; then
  echo "== training runs: look-ahead, 1 thread, $TRAIN_STEPS steps, seeds $SEEDS (timed steps inside)"
  export OMP_NUM_THREADS=1
  for s in $SEEDS; do
    p=$(problem 256 "$s")
    run bilevel "$cpp" --seed "$s" $common --train-steps "$TRAIN_STEPS"
    for impl in torch higher torchopt betty; do run "$impl" --problem "$p" --seed "$s" $common --train-steps "$TRAIN_STEPS"; done
  done
fi

# Timing only, in ROUNDS interleaved rounds: on a shared machine every implementation then meets
# the same mix of load, and the report takes the median over rounds.
for round in $(seq 1 "$ROUNDS"); do
  echo "== round $round/$ROUNDS: $PARTS"
  p=$(problem 256 1)
  if part lookahead; then
    for t in $THREADS; do
      export OMP_NUM_THREADS=$t
      run bilevel "$(bilevel_bin "$t")" --threads "$t" $common
      for impl in torch higher torchopt betty; do run "$impl" --problem "$p" --threads "$t" $common; done
    done
  fi
  export OMP_NUM_THREADS=1
  if part implicit; then
    run bilevel "$cpp" --mode cg --iterations $K --damping 0 $common
    run bilevel "$cpp" --mode cg --iterations $K --damping 1 $common
    run bilevel "$cpp" --mode neumann --iterations $K --neumann-step $ALPHA $common
    for impl in torchopt betty; do
      run "$impl" --mode cg --iterations $K --problem "$p" $common
      run "$impl" --mode neumann --iterations $K --neumann-step $ALPHA --problem "$p" $common
    done
  fi
  if part sweep; then
    for w in $WIDTHS; do
      [ "$w" = 256 ] && continue  # the look-ahead runs above
      p=$(problem "$w" 1)
      run bilevel "$cpp" --width "$w" $common
      for impl in torch higher torchopt betty; do run "$impl" --problem "$p" --width "$w" $common; done
    done
  fi
  if part blas && [ -x "$cpp_blas" ]; then  # the same program with OpenBLAS's SGEMM, 1 thread
    for w in 256 2048; do
      p=$(problem "$w" 1)
      run bilevel "$cpp_blas" --width "$w" $common
      run bilevel "$cpp_blas" --mode last_step --width "$w" $common
      if ! { { [ "$w" = 256 ] && part lookahead; } || { [ "$w" = 2048 ] && part sweep; }; }; then
        run bilevel "$cpp" --width "$w" $common
        run betty --problem "$p" --width "$w" $common
      fi
    done
  fi
  if part schedule; then  # Betty's own runs come from the look-ahead and sweep parts when they run
    for w in 256 2048; do
      p=$(problem "$w" 1)
      run bilevel "$cpp" --mode last_step --width "$w" $common
      { [ "$w" = 256 ] && part lookahead; } || { [ "$w" = 2048 ] && part sweep; } ||
        run betty --problem "$p" --width "$w" $common
    done
  fi
done

end=$(date +%s)
before=0
[ "$APPEND" != 0 ] && [ -f "$out/elapsed.json" ] && before=$(tr -dc '0-9' < "$out/elapsed.json")
echo "{\"elapsed_s\": $((before + end - start))}" > "$out/elapsed.json"
/usr/bin/python3 "$here/report.py" "$out" "$report" "$plot"
echo "run.sh: $(wc -l < "$results") results in $results; wrote $report and $plot; measuring took $((end - start)) s"
