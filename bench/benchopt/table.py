# SPDX-License-Identifier: MIT
"""Prints run.sh's table from its raw results (one JSON object a line).

    python3 table.py results.jsonl [instance.json]

Per method and side: the outer iterations and the milliseconds of solver time at which each
relative suboptimality was first measured (medians over the rounds; "-" where a round did
not reach it), for bilevel's rows the ratio of its median time to the benchopt solver's, the
last value, the median time per iteration and, for benchopt, the JIT warm-up (set_objective,
outside the timed run) and the compilation that happened inside the timed run anyway (its
first block's excess over the median block; subtracted from the times shown).
"""
import json
import statistics
import sys

TARGETS = ["1e-1", "1e-2", "1e-3", "1e-4"]
# benchopt solver -> bilevel method of the same family
PAIRS = {"soba": "soba", "stocbio": "neumann", "f2sa": "f2sa", "bome": "bome"}
ORDER = ["soba", "neumann", "f2sa", "bome", "implicit_cg", "nystrom"]
THEIR_NAME = {"soba": "SOBA", "stocbio": "StocBiO", "f2sa": "F2SA", "bome": "BOME"}


def median_or_none(values):
    if not values or any(v is None for v in values):
        return None
    return statistics.median(values)


def main():
    rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
    if len(sys.argv) > 2:
        inst = json.load(open(sys.argv[2]))
        lo, up = inst["lower_hessian_eigs"], inst["upper_hessian_eigs"]
        print(f"instance: lower Hessian eigenvalues [{lo[0]:.3g}, {lo[1]:.3g}], "
              f"h's Hessian [{up[0]:.3g}, {up[1]:.3g}], h* = {inst['h_star']:.6g}, "
              f"h(x0) = {inst['h_x0']:.6g}")
    groups = {}
    for r in rows:
        # Times exclude compilation inside the timed run (BOME's; see run_benchopt_solvers.py),
        # which gets its own column.
        c = r.get("in_run_compile_ms") or 0.0
        if c:
            r["time_ms"] -= c
            r["reached"] = [x and [x[0], x[1] - c] for x in r["reached"]]
        key = (r["solver"], r["side"], r.get("scalar", "float32"))
        groups.setdefault(key, []).append(r)

    def summary(runs):
        s = {"rounds": len(runs)}
        for t in range(len(TARGETS)):
            s[("it", t)] = median_or_none([r["reached"][t] and r["reached"][t][0] for r in runs])
            s[("ms", t)] = median_or_none([r["reached"][t] and r["reached"][t][1] for r in runs])
        s["final"] = median_or_none([r["final"] for r in runs])
        s["ms_per_it"] = statistics.median(r["time_ms"] / max(1, r["iterations"]) for r in runs)
        s["iterations"] = statistics.median(r["iterations"] for r in runs)
        s["warmup"] = median_or_none([r.get("warmup_ms") for r in runs])
        s["compile"] = median_or_none([r.get("in_run_compile_ms") for r in runs])
        return s

    sums = {k: summary(v) for k, v in groups.items()}
    print()
    print("| method | side | " + " | ".join(f"to {t}: it / ms" for t in TARGETS) +
          " | last value | iterations run | ms / iteration | JIT warm-up ms | compile in run ms |")
    print("|---|---|" + "---:|" * (len(TARGETS) + 5))
    ours_for = {v: k for k, v in PAIRS.items()}
    for method in ORDER:
        theirs_key = None
        if method in ours_for:
            theirs_key = (ours_for[method], "benchopt", "float32")
        keys = ([theirs_key] if theirs_key in sums else []) + \
            [k for k in sorted(sums) if k[0] == method and k[1] == "bilevel"]
        for key in keys:
            s = sums[key]
            if key[1] == "benchopt":
                label, side = THEIR_NAME[key[0]], "benchopt (JAX, float32)"
            else:
                label, side = method, f"bilevel ({key[2]})"
            cells = []
            for t in range(len(TARGETS)):
                it, ms = s[("it", t)], s[("ms", t)]
                if ms is None:
                    cells.append("-")
                    continue
                cell = f"{it:.0f} / {ms:.0f}"
                if key[1] == "bilevel" and theirs_key in sums:
                    their_ms = sums[theirs_key][("ms", t)]
                    if their_ms:
                        cell += f" (×{ms / their_ms:.2f})"
                cells.append(cell)
            final = "-" if s["final"] is None else f"{s['final']:.2e}"
            warm = "" if s["warmup"] is None else f"{s['warmup']:.0f}"
            comp = "" if s["compile"] is None else f"{s['compile']:.0f}"
            print(f"| {label} | {side} | " + " | ".join(cells) +
                  f" | {final} | {s['iterations']:.0f} | {s['ms_per_it']:.2f} | {warm} | {comp} |")
    rounds = sorted({s["rounds"] for s in sums.values()})
    print(f"\nmedians over {'/'.join(map(str, rounds))} rounds; (×r): bilevel's time over "
          "the benchopt solver's to the same suboptimality")


if __name__ == "__main__":
    main()
