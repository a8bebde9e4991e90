#!/usr/bin/env python3
"""Plot the /bin/true lifecycle distribution per runtime from the JSON of
bench/lifecycle.py --json: one panel per mode and form, a box plot (with
every run as a dot) of each runtime's wall times in milliseconds.

Usage: bench/plot.py LIFECYCLE.json OUT.png
"""
import json, sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

data = json.load(open(sys.argv[1]))
panels = [r for r in data["results"] if r["times"]]
fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.5), squeeze=False)
colors = {"buildcell": "#d62728", "runc": "#1f77b4", "crun": "#2ca02c"}
for ax, r in zip(axes[0], panels):
    names = [n for n in ("buildcell", "runc", "crun") if n in r["times"]]
    vals = [[t * 1000 for t in r["times"][n]] for n in names]
    bp = ax.boxplot(vals, labels=names, showfliers=False, widths=0.5)
    for i, (n, v) in enumerate(zip(names, vals)):
        xs = [i + 1 + (k % 9 - 4) * 0.03 for k in range(len(v))]
        ax.scatter(xs, v, s=4, alpha=0.35, color=colors[n])
        ratio = r["ratio"].get(n)
        if ratio is not None:
            ax.annotate(f"{ratio:.2f}x", (i + 1, max(v)), ha="center", va="bottom", fontsize=8)
    ax.set_title(f"{r['mode']}, {r['form']}")
    ax.set_ylabel("wall time per lifecycle (ms)")
    ax.set_ylim(bottom=0)
    ax.grid(axis="y", alpha=0.3)
fig.suptitle(f"/bin/true container lifecycle ({data['rounds']} rounds x {data['runs']} runs; "
             "ratio = median per-round ratio to crun)", fontsize=10)
fig.tight_layout()
fig.savefig(sys.argv[2], dpi=110)
print(f"wrote {sys.argv[2]}")
