#!/usr/bin/python3
"""Plots the label-noise experiment (examples/02): the mean learned weight of clean and of
corrupted training samples over training, per method (mean over seeds), and test accuracy.

usage: plot_results.py RESULTS_DIR [OUT.png]   (reads RESULTS_DIR/label_noise_epochs.csv)
"""
import csv
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

NAMES = {"plain": "plain", "l2rw": "L2RW", "mwn": "Meta-Weight-Net", "teacher": "deep interactions",
         "lfm": "LFM (reweighting)"}


def main():
    results = sys.argv[1] if len(sys.argv) > 1 else "results"
    out = sys.argv[2] if len(sys.argv) > 2 else f"{results}/label_noise_weights.png"
    rows = list(csv.DictReader(open(f"{results}/label_noise_epochs.csv")))
    if not rows:
        sys.exit("no rows in label_noise_epochs.csv")
    by = defaultdict(lambda: defaultdict(list))  # method -> epoch -> [(acc, clean, corrupt)]
    for r in rows:
        by[r["method"]][int(r["epoch"])].append(
            (float(r["test_accuracy"]), float(r["weight_clean"]), float(r["weight_corrupted"])))
    fig, (ax_w, ax_a) = plt.subplots(1, 2, figsize=(10, 3.8), dpi=80)
    for i, (method, epochs) in enumerate(sorted(by.items())):
        xs = sorted(epochs)
        mean = lambda k: [sum(v[k] for v in epochs[e]) / len(epochs[e]) for e in xs]  # noqa: E731
        color = f"C{i}"
        label = NAMES.get(method, method)
        ax_a.plot(xs, mean(0), color=color, label=label)
        if method != "plain":
            ax_w.plot(xs, mean(1), color=color, label=f"{label}: clean")
            ax_w.plot(xs, mean(2), color=color, linestyle="--", label=f"{label}: corrupted")
    seeds = len(next(iter(next(iter(by.values())).values())))
    ax_w.set(xlabel="epoch", ylabel="mean learned weight", title="learned weights (solid clean, dashed corrupted)")
    ax_a.set(xlabel="epoch", ylabel="test accuracy (%)", title=f"test accuracy (mean of {seeds} seed(s))")
    ax_w.legend(fontsize=7)
    ax_a.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out)
    print(f"plot written to {out}")


if __name__ == "__main__":
    main()
