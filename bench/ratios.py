#!/usr/bin/env python3
"""Turns Google Benchmark JSON from bench_learners into the cost ratios and GEMM efficiency of bench/learners.cpp.

usage: python3 bench/ratios.py learners.json
Uses the median of repetitions when present (run with --benchmark_repetitions=N).
"""
import json
import statistics
import sys
from collections import defaultdict

data = json.load(open(sys.argv[1]))
times, rates = defaultdict(list), defaultdict(list)
for b in data["benchmarks"]:
    if b.get("run_type") == "aggregate":
        continue
    name = b["run_name"] if "run_name" in b else b["name"]
    scale = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}[b.get("time_unit", "ns")]
    times[name].append(b["real_time"] * scale)  # milliseconds
    if "FLOP/s" in b:
        rates[name].append(b["FLOP/s"])
med = {k: statistics.median(v) for k, v in times.items()}
rate = {k: statistics.median(v) for k, v in rates.items()}
print(f"machine: {data['context'].get('host_name', '?')}, {data['context'].get('num_cpus', '?')} cpus, "
      f"{data['context'].get('mhz_per_cpu', '?')} MHz")
for s in ("float", "double"):
    g = med[f"mlp_gradient/{s}"]
    print(f"MLP 784-256-128-10, batch 128, {s}:")
    print(f"  gradient            {g:8.3f} ms   1.00x")
    print(f"  HVP inside CG       {med[f'mlp_hvp_in_cg/{s}']:8.3f} ms   {med[f'mlp_hvp_in_cg/{s}'] / g:.2f}x  (target <= 2x)")
    print(f"  grad + HVP + mixed  {med[f'mlp_full_pass/{s}']:8.3f} ms   {med[f'mlp_full_pass/{s}'] / g:.2f}x  (target <= 3x)")
    eff = rate[f"mlp_gradient/{s}"] / rate[f"gemm_rate/{s}"]
    print(f"  gradient {rate[f'mlp_gradient/{s}'] / 1e9:.1f} GFLOP/s vs GEMM {rate[f'gemm_rate/{s}'] / 1e9:.1f} GFLOP/s: "
          f"{100 * eff:.0f}% (target >= 70%)")
    if f"cnn_gradient/{s}" in med:
        c = med[f"cnn_gradient/{s}"]
        print(f"small CNN (LeNet-5 shape, 28x28), batch 128, {s}:")
        print(f"  gradient            {c:8.3f} ms   1.00x")
        print(f"  HVP inside CG       {med[f'cnn_hvp_in_cg/{s}']:8.3f} ms   {med[f'cnn_hvp_in_cg/{s}'] / c:.2f}x  (target <= 2x)")
        print(f"  grad + HVP + mixed  {med[f'cnn_full_pass/{s}']:8.3f} ms   {med[f'cnn_full_pass/{s}'] / c:.2f}x  (target <= 3x)")
