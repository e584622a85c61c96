#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The papers' networks, bilevel against PyTorch, in one run: ResNet-20 (gradient; gradient + HVP)
# and the DARTS supernet (gradient; one second-order DARTS iteration), float, 1 thread; writes
# build/compare/networks.jsonl and bench/NETWORKS.md.
#
#   bench/compare/networks.sh [--report-only]
#
# --report-only rewrites bench/NETWORKS.md from the last run's build/compare/networks.jsonl (and
# networks_meta.json) without measuring.
#
# Steps: the C++ program (bench_networks, bench/networks.cpp, built into build/compare/cmake with
# the benchmarks' flags, -j1 under nice), then ROUNDS (3) interleaved rounds: in each, every case
# for bilevel then for PyTorch (bench/compare/networks.py, the venv's torch), OMP_NUM_THREADS=1.
# Each run is one process printing one JSON line (per-repetition medians, p10, p90, and peak RSS
# figures); the report takes, per case, the median over rounds of the runs' medians, and their
# min-max.
#
# Memory: bilevel's DARTS step at batch 64 needs about 2.7 GB of RSS (9.5 GB before its levels
# shared one network and released their adjoints, 20.5 GB before convolutions stopped keeping
# their patches). It runs with oom_score_adj 1000 (under memory pressure the kernel kills it,
# not another process) and a virtual-memory limit of the memory available just before it less
# 0.5 GB, and only when DARTS_STEP_GB (6) GB are available, after waiting up to MEM_WAIT_S (60)
# seconds for them. When it cannot run or fails, the report says so, and that round also times
# both implementations' DARTS step at batch FALLBACK_BATCH (32).
#
# Environment: ROUNDS (3), RUN_LIMIT (600 s per run), WAIT_MINUTES (10: for CPUs >= 85% idle or
# niced before starting), MEM_WAIT_S, DARTS_STEP_GB, FALLBACK_BATCH, and the repetition counts
# RESNET_GRAD ("2 8": warm-up, timed), RESNET_HVP ("1 5"), DARTS_GRAD ("1 2"), DARTS_STEP ("1 2").
# On this 2-core machine, quiet, a run takes about 13 minutes.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=$root/build/compare
cd "$root"

ROUNDS=${ROUNDS:-3}
RUN_LIMIT=${RUN_LIMIT:-600}
WAIT_MINUTES=${WAIT_MINUTES:-10}
MEM_WAIT_S=${MEM_WAIT_S:-60}
DARTS_STEP_GB=${DARTS_STEP_GB:-6}
FALLBACK_BATCH=${FALLBACK_BATCH:-32}
RESNET_GRAD=${RESNET_GRAD:-2 8}
RESNET_HVP=${RESNET_HVP:-1 5}
DARTS_GRAD=${DARTS_GRAD:-1 2}
DARTS_STEP=${DARTS_STEP:-1 2}
py=$root/build/compare-venv/bin/python
report=$root/bench/NETWORKS.md
results=$out/networks.jsonl
[ -x "$py" ] || { echo "networks.sh: no $py (bench/compare/setup.sh makes the venv)" >&2; exit 1; }
mkdir -p "$out"
report_only=0
[ "${1:-}" = --report-only ] && report_only=1
meta=$out/networks_meta.json

if [ "$report_only" = 0 ]; then
echo "== building bench_networks (build/compare/cmake, -j1, nice)"
cmake -S "$root" -B "$root/build/compare/cmake" -DCMAKE_BUILD_TYPE=Release -DBILEVEL_BUILD_TESTS=OFF \
  -DBILEVEL_BUILD_EXAMPLES=OFF -DBILEVEL_WITH_XTENSOR=OFF > "$out/networks_cmake.log"
nice -n 19 cmake --build "$root/build/compare/cmake" -j1 --target bench_networks > "$out/networks_build.log"
cpp=$root/build/compare/cmake/bench/bench_networks

idle_pct() {  # idle_pct SECONDS [nice]: CPU share idle (with "nice": idle or niced) over the interval
  local a b
  a=($(head -1 /proc/stat)); sleep "$1"; b=($(head -1 /proc/stat))
  local total=0 i free
  for i in 1 2 3 4 5 6 7 8; do total=$((total + b[i] - a[i])); done
  free=$((b[4] - a[4] + b[5] - a[5]))
  [ "${2:-}" = nice ] && free=$((free + b[2] - a[2]))
  echo $(( total > 0 ? 100 * free / total : 100 ))
}
mem_available_kb() { awk '/^MemAvailable:/ {print $2}' /proc/meminfo; }

waited=0
while [ "$(idle_pct 5 nice)" -lt 85 ] && [ "$waited" -lt "$WAIT_MINUTES" ]; do
  echo "networks.sh: waiting for a quiet machine ($waited/$WAIT_MINUTES min)"
  sleep 55
  waited=$((waited + 1))
done

export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
: > "$results"
start=$(date +%s)
commit=$(git rev-parse --short HEAD) dirty=false  # the code measured: as built just above
[ -n "$(git status --porcelain)" ] && dirty=true
round=0
# run IMPL CASE WARMUP TIMED [BATCH]: one JSON line into networks.jsonl; 1 when the run failed
# (a line with "failed" is written then).
run() {
  local impl=$1 case=$2 warmup=$3 timed=$4 batch=${5:-0} line load idle free rc=0 limit_kb=""
  load=$(cut -d' ' -f1 /proc/loadavg) idle=$(idle_pct 1) free=$(idle_pct 1 nice)
  local args=(--case "$case" --warmup "$warmup" --timed "$timed")
  [ "$batch" != 0 ] && args+=(--batch "$batch")
  if [ "$impl" = bilevel ]; then
    if [ "$case" = darts-step ] && [ "$batch" = 0 ]; then
      local w=0 need_kb
      need_kb=$(awk -v g="$DARTS_STEP_GB" 'BEGIN {printf "%d", g * 1048576}')
      while [ "$(mem_available_kb)" -lt "$need_kb" ] && [ "$w" -lt "$MEM_WAIT_S" ]; do
        sleep 10; w=$((w + 10))
      done
      limit_kb=$(( $(mem_available_kb) - 512 * 1024 ))
      if [ "$limit_kb" -lt $((need_kb - 512 * 1024)) ]; then
        echo "not started: $((limit_kb / 1024 + 512)) MB available after waiting ${w} s, it needs ${DARTS_STEP_GB} GB" \
          > "$out/last_stderr.log"
        rc=2
      fi
    fi
    [ "$rc" = 0 ] && { line=$( (echo 1000 > /proc/self/oom_score_adj; [ -n "$limit_kb" ] && ulimit -v "$limit_kb"
                                exec timeout "$RUN_LIMIT" "$cpp" "${args[@]}") 2> "$out/last_stderr.log") || rc=$?; }
  else
    line=$(timeout "$RUN_LIMIT" "$py" "$here/networks.py" "${args[@]}" 2> "$out/last_stderr.log") || rc=$?
  fi
  if [ "$rc" != 0 ] || [ -z "$line" ]; then
    local why
    why=$(tail -c 300 "$out/last_stderr.log" | tr '\n\t' '  ' | tr -d '"\\\000-\037')
    echo "networks.sh: $impl $case (batch ${batch/#0/default}) failed (exit $rc): $why" >&2
    line="{\"implementation\": \"$impl\", \"case\": \"$case\", \"batch\": ${batch/#0/null}, \"failed\": true, \"exit\": $rc, \"error\": \"$why\", \"memory_limit_kb\": ${limit_kb:-null}}"
    rc=1
  fi
  line="${line%\}}, \"round\": $round, \"load_1min_before\": $load, \"idle_pct_before\": $idle, \"idle_or_niced_pct_before\": $free}"
  echo "$line" >> "$results"
  echo "$line" | cut -c1-160
  return "$rc"
}

for round in $(seq 1 "$ROUNDS"); do
  echo "== round $round/$ROUNDS"
  for impl in bilevel pytorch; do run "$impl" resnet20-grad $RESNET_GRAD || true; done
  for impl in bilevel pytorch; do run "$impl" resnet20-hvp $RESNET_HVP || true; done
  for impl in bilevel pytorch; do run "$impl" darts-grad $DARTS_GRAD || true; done
  step_failed=0
  run bilevel darts-step $DARTS_STEP || step_failed=1
  run pytorch darts-step $DARTS_STEP || true
  if [ "$step_failed" = 1 ]; then
    for impl in bilevel pytorch; do run "$impl" darts-step $DARTS_STEP "$FALLBACK_BATCH" || true; done
  fi
done
end=$(date +%s)
echo "{\"elapsed_s\": $((end - start)), \"waited_minutes\": $waited, \"rounds\": $ROUNDS, \"commit\": \"$commit\", \"dirty\": $dirty}" > "$meta"
fi
[ -f "$results" ] && [ -f "$meta" ] || { echo "networks.sh: no $results or $meta to report" >&2; exit 1; }

"$py" - "$results" "$report" "$meta" <<'PY'
import json, os, statistics, subprocess, sys, datetime
results, report = sys.argv[1], sys.argv[2]
meta = json.load(open(sys.argv[3]))
elapsed, waited, rounds = meta["elapsed_s"], meta["waited_minutes"], meta["rounds"]
rows = [json.loads(l) for l in open(results) if l.strip()]
ok = [r for r in rows if not r.get("failed")]
failed = [r for r in rows if r.get("failed")]

def sh(*cmd):
    return subprocess.run(cmd, capture_output=True, text=True).stdout.strip()
lscpu = sh("lscpu")
field = lambda name: next((l.split(":", 1)[1].strip() for l in lscpu.splitlines() if l.startswith(name + ":")), "?")
commit = meta.get("commit") or sh("git", "rev-parse", "--short", "HEAD")
dirty = meta["dirty"] if "dirty" in meta else sh("git", "status", "--porcelain") != ""
torch_version = next((r["torch"] for r in ok if "torch" in r), "?")
bl = next((r for r in ok if r["implementation"] == "bilevel"), {})

def group(impl, case, batch=None):
    return [r for r in ok if r["implementation"] == impl and r["case"] == case and (batch is None or r["batch"] == batch)]
def med(rs, key):
    return statistics.median(r[key] for r in rs) if rs else None
def span(rs, key):
    return (min(r[key] for r in rs), max(r[key] for r in rs)) if rs else None
def ms(rs):
    if not rs: return "—"
    lo, hi = span(rs, "median_ms")
    if len(rs) == 1: return f"{rs[0]['median_ms']:,.0f} (1 round of {rounds})"
    return f"{med(rs, 'median_ms'):,.0f} ({lo:,.0f}–{hi:,.0f}{'' if len(rs) == rounds else f'; {len(rs)} rounds of {rounds}'})"
def mb(rs, key):
    return f"{med(rs, key):,.0f}" if rs else "—"

cases = [("resnet20-grad", "ResNet-20: gradient"), ("resnet20-hvp", "ResNet-20: gradient + HVP"),
         ("darts-grad", "DARTS supernet: gradient (weights)"), ("darts-step", "DARTS: one second-order iteration")]
batches = sorted({(r["case"], r["batch"]) for r in ok}, key=lambda cb: ([c for c, _ in cases].index(cb[0]), -cb[1]))
L = []
L.append("# The papers' networks: bilevel against PyTorch\n")
L.append(f"Written by `bench/compare/networks.sh` ({datetime.date.today().isoformat()}); raw lines in "
         "`build/compare/networks.jsonl`. Do not edit by hand: rerun the script.\n")
L.append(f"- Machine: {field('Model name')}, {field('CPU(s)')} CPUs ({field('Thread(s) per core')} thread(s) per core); "
         f"every run at 1 thread (bilevel: Eigen without OpenMP; PyTorch: `torch.set_num_threads(1)`, OMP_NUM_THREADS=1)")
L.append(f"- bilevel git {commit}{' with uncommitted changes' if dirty else ''}, {bl.get('compiler', '?')}, "
         f"Eigen {bl.get('eigen', '?')}, -O3 -march=native, `policy::eigen<float>`; PyTorch {torch_version} (CPU, float32)")
loads = [r["load_1min_before"] for r in rows]
L.append(f"- {rounds} interleaved rounds (each: every case, bilevel then PyTorch); measuring took {elapsed // 60} min "
         f"{elapsed % 60} s; 1-min load average before the runs {min(loads):.2f}–{max(loads):.2f}"
         f"{f', after waiting {waited} min for a quiet machine' if waited else ''}"
         f"{' (the machine was shared: other work ran alongside at normal priority; the interleaved rounds spread it over both implementations, and the min–max columns show its effect)' if max(loads) > 1.5 else ''}")
reps = {}
for r in ok: reps.setdefault((r["case"], r["batch"]), (r["warmup"], r["timed"]))
L.append("- Repetitions per run (warm-up + timed): " +
         ", ".join(f"{c} (batch {b}) {w} + {t}" for (c, b), (w, t) in reps.items()) + "\n")

L.append("## Times and memory\n")
L.append("Time: the median over rounds of each run's median ms per repetition (min–max of those medians over the rounds). "
         "Memory, medians over rounds, from /proc/self/status: *growth* = peak RSS (VmHWM, reset through "
         "/proc/self/clear_refs after set-up) over warm-up and timed work minus the RSS after set-up, i.e. what the work "
         "needs on top of the network, data and parameters; *timed* = the same with VmHWM reset just before the timed "
         "repetitions and measured from the RSS there (what is allocated beyond what the warm-up left in place); *peak* "
         "= the process's absolute VmHWM (PyTorch's includes about 0.5 GB of the torch import).\n")
L.append("| case | batch | parameters | bilevel ms | PyTorch ms | PyTorch / bilevel | bilevel growth / timed / peak MB | PyTorch growth / timed / peak MB |")
L.append("|---|---:|---:|---:|---:|---:|---:|---:|")
for c, b in batches:
    title = dict(cases)[c]
    B, T = group("bilevel", c, b), group("pytorch", c, b)
    ratio = f"{med(T, 'median_ms') / med(B, 'median_ms'):.2f}" if B and T else "—"
    p = (B or T)[0]
    params = f"{p['params']:,}" + (f" + α {p['arch_params']}" if p.get("arch_params") else "")
    pb = {r["params"] for r in B} | {r["params"] for r in T}
    if len(pb) > 1: params += " (differ!)"
    L.append(f"| {title} | {b} | {params} | {ms(B)} | {ms(T)} | {ratio} | "
             f"{mb(B, 'growth_mb')} / {mb(B, 'growth_timed_mb')} / {mb(B, 'peak_mb')} | "
             f"{mb(T, 'growth_mb')} / {mb(T, 'growth_timed_mb')} / {mb(T, 'peak_mb')} |")
L.append("")
# HVP alone: (b) - (a)
hv = {}
for impl in ("bilevel", "pytorch"):
    a, b = med(group(impl, "resnet20-grad", 128), "median_ms"), med(group(impl, "resnet20-hvp", 128), "median_ms")
    if a and b: hv[impl] = (a, b - a)
if hv:
    L.append("ResNet-20's HVP alone, (gradient + HVP) − gradient: " + "; ".join(
        f"{impl} {d:,.0f} ms = {d / a:.2f}× its gradient" for impl, (a, d) in hv.items()) + ".\n")
pc = {}
for c, _ in cases:
    s = {r["params"] for r in ok if r["case"] == c}
    if s: pc[c] = s
L.append("Parameter counts (equal in both implementations when one number is shown): " + "; ".join(
    f"{c} {', '.join(f'{x:,}' for x in sorted(s))}" for c, s in pc.items()) + ".\n")
if failed:
    L.append("Failed runs:\n")
    for r in failed:
        lim = (f", virtual-memory limit {r['memory_limit_kb'] / 1048576:.1f} GB"
               if r.get("memory_limit_kb") and r["exit"] != 2 else "")
        batch = r["batch"] or (64 if r["case"].startswith("darts") else 128)
        why = r["error"].strip() or {137: "killed by SIGKILL: out of memory (the run sets oom_score_adj 1000, so the "
                                          "kernel's OOM killer takes it before any other process)",
                                     124: "over the time limit"}.get(r["exit"], "no message")
        L.append(f"- round {r['round']}: {r['implementation']} {r['case']} (batch {batch}), exit {r['exit']}{lim}: {why[:240]}")
    L.append("")

L.append("## Targets\n")
def verdict(ok_): return "**met**" if ok_ else "**missed**"
for c, name in (("resnet20-grad", "ResNet-20"), ("darts-grad", "DARTS supernet")):
    b, t = med(group("bilevel", c), "median_ms"), med(group("pytorch", c), "median_ms")
    if b and t:
        L.append(f"- bilevel's gradient no slower than PyTorch's, {name}: {verdict(b <= t)} "
                 f"(bilevel {b:,.0f} ms, PyTorch {t:,.0f} ms: bilevel takes {b / t:.2f}× PyTorch's time)")
    else:
        L.append(f"- bilevel's gradient no slower than PyTorch's, {name}: not measured")
if "bilevel" in hv:
    a, d = hv["bilevel"]
    L.append(f"- bilevel's HVP ≤ 2× bilevel's own gradient (ResNet-20, (b) − (a) against (a)): {verdict(d <= 2 * a)} "
             f"(HVP {d:,.0f} ms, gradient {a:,.0f} ms: {d / a:.2f}×)")
else:
    L.append("- bilevel's HVP ≤ 2× bilevel's own gradient: not measured")
full = [b for c, b in batches if c == "darts-step"]
for b in full:
    B, T = group("bilevel", "darts-step", b), group("pytorch", "darts-step", b)
    if B and T:
        gb, gt = med(B, "growth_mb"), med(T, "growth_mb")
        L.append(f"- bilevel's peak memory during a second-order DARTS step no higher than PyTorch's (batch {b}): "
                 f"{verdict(gb <= gt)} (growth over set-up: bilevel {gb:,.0f} MB, PyTorch {gt:,.0f} MB, {gb / gt:.1f}×; "
                 f"absolute peaks {med(B, 'peak_mb'):,.0f} and {med(T, 'peak_mb'):,.0f} MB)")
if not any(group("bilevel", "darts-step", 64)):
    L.append("- bilevel's DARTS step at batch 64 did not complete on this machine (see the failed runs): the memory "
             "target is **missed** at batch 64")
L.append("")

L.append("## What each case contains\n")
for c, name in cases:
    for impl in ("bilevel", "pytorch"):
        r = next((x for x in ok if x["implementation"] == impl and x["case"] == c), None)
        if r: L.append(f"- {name}, {impl}: {r['contents']}")
L.append("")
L.append("Notes:\n")
L.append("- Networks. ResNet-20: `learners::resnet` defaults (option A shortcuts, 16 channels, 28x28x1, 10 classes) and "
         "the CIFAR ResNet of akamaster/pytorch_resnet_cifar10 (F.pad shortcut), affine batch norms, no conv bias. "
         "DARTS: `learners::darts_supernet(darts_space_options{})` (5 cells, C = 8, 4 nodes, stem multiplier 3, "
         "reductions at cells 1 and 3) and DARTS's model_search.py / operations.py (non-affine batch norms in the cells, "
         "pools followed by BN, FactorizedReduce after a reduction), the architecture passed to forward. Random "
         "pixels in [0, 1) and uniform labels; random initial weights (each library its own initialiser).")
L.append("- DARTS iteration: both implementations take the virtual step with the weights' momentum buffer and weight "
         "decay (SGD lr 0.025, momentum 0.9, weight decay 3e-4, as DARTS), Adam on α (lr 3e-4, betas (0.5, 0.999), "
         "weight decay 1e-3), ε = 0.01/‖∇_w' L_val‖, and then the weights' real step; neither clips the weights' "
         "gradient (DARTS clips at norm 5). PyTorch evaluates the unrolled model with torch.func.functional_call "
         "rather than DARTS's model.new() + load_state_dict, and runs DARTS's `none` (x·0) where bilevel skips it; "
         "PyTorch's batch norms update their running statistics at every training-mode forward, bilevel's at the "
         "real step only. Five forward + backward passes of the supernet on each side.")
L.append("- Gradient cases: bilevel's network caches its last value and backward pass keyed on (θ, α, batch); the "
         "benchmark alternates between two parameter vectors so no repetition is served from the cache. The ResNet "
         "HVP case is what a CG or Neumann step at a fixed point costs: bilevel's `hvp` reuses the gradient's cached "
         "value and backward passes (two tangent passes); PyTorch's double backward re-traverses the create_graph "
         "graph.")
open(report, "w").write("\n".join(L) + "\n")
print(f"networks.sh: wrote {report}")
PY
echo "networks.sh: $(wc -l < "$results") lines in $results"
