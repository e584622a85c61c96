#!/usr/bin/env bash
# Meta-Weight-Net's outer step on 1 and on 2 MPI ranks, interleaved over 3 rounds, one thread
# per rank (bench/distributed/mwn_step.cpp). Prints the JSON lines and the parallel efficiency
# t_1 / (2 · t_2) of the medians. Build first: cmake --build build --target bench_distributed_mwn_step
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
program=build/bench/bench_distributed_mwn_step
batch=${1:-256}
export OMP_NUM_THREADS=1 OMPI_MCA_rmaps_base_oversubscribe=1
[ "$(id -u)" -eq 0 ] && export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
echo "# $(date -u +%F), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(getconf _NPROCESSORS_ONLN) CPUs, global batch $batch"
for round in 1 2 3; do
  for ranks in 1 2; do
    mpirun -np "$ranks" --bind-to core "$program" --batch "$batch" --warmup 3 --timed 20
  done
done | tee /tmp/bilevel_distributed.jsonl
python3 - <<'PY'
import json, statistics
rows = [json.loads(l) for l in open("/tmp/bilevel_distributed.jsonl") if l.startswith("{")]
med = {r: statistics.median(x["median_ms"] for x in rows if x["ranks"] == r) for r in (1, 2)}
print(f"median over rounds: 1 rank {med[1]:.1f} ms, 2 ranks {med[2]:.1f} ms per step; "
      f"speed-up {med[1]/med[2]:.2f}x, parallel efficiency {med[1]/(2*med[2]):.0%}; "
      f"all-reduced per step and rank: {rows[-1]['allreduced_bytes_per_step']/1e6:.2f} MB "
      f"({rows[-1]['parameters']} parameters), in "
      f"{statistics.median(x['allreduce_ms_per_step'] for x in rows if x['ranks'] == 2):.2f} ms per step on 2 ranks")
PY
