"""The amenability figure, drawn from a stored ``amenability.json`` (computes nothing).

One panel per geometry measure: the quantization penalty (continuous minus quantized test PSNR)
against the measure, each configuration's mean as a large marker and its runs as small ones, one
colour per dataset and one marker per sweep, with the Spearman rho over the pooled configurations,
its bootstrap CI and Holm p in the panel's title.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from posthoc_vq.report.figures import pyplot, save_png

MARKERS = "osD^v<>P*X"


def draw_amenability(result: dict[str, Any], path: Path) -> Path:
    """Draw the figure of an amenability result (the JSON's content) into ``path`` (PNG)."""
    plt = pyplot()
    names = list(result["measures"])
    cols = 4
    fig, axes = plt.subplots(math.ceil(len(names) / cols), cols, figsize=(4.2 * cols, 3.6 * math.ceil(len(names) / cols)), squeeze=False)
    rows = [r for r in result["rows"] if r["converged"]]
    configs = result["configurations"]
    datasets, sweeps = sorted({r["dataset"] for r in rows}), sorted({r["sweep"] for r in rows})
    colour = {d: f"C{i}" for i, d in enumerate(datasets)}
    marker = {s: MARKERS[i % len(MARKERS)] for i, s in enumerate(sweeps)}
    for ax, name in zip(axes.flat, names):
        for d in datasets:
            for s in sweeps:
                pts = [(r["measures"][name], r["penalty_db"]) for r in rows if r["dataset"] == d and r["sweep"] == s and r["measures"][name] is not None]
                if pts:
                    ax.scatter(*zip(*pts), c=colour[d], marker=marker[s], s=8, alpha=0.4)
                means = [(c["measures"][name], c["penalty_db"]) for c in configs if c["dataset"] == d and c["sweep"] == s and c["measures"][name] is not None]
                if means:
                    ax.scatter(*zip(*means), c=colour[d], marker=marker[s], s=48, edgecolors="black", linewidths=0.5, label=f"{d} ({s})")
        c = result["pooled"][name]
        if c.get("rho") is None:
            title = "not measurable"
        elif c["ci_low"] != c["ci_low"]:  # nan CI: a nearly constant measure
            title = f"rho {c['rho']:+.2f} (no CI), Holm p {c['p_holm']:.2g}"
        else:
            title = f"rho {c['rho']:+.2f} [{c['ci_low']:+.2f}, {c['ci_high']:+.2f}], Holm p {c['p_holm']:.2g}"
        ax.set(xlabel=name, ylabel="penalty (dB)", title=title)
        ax.title.set_fontsize(9)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if handles:
        list(axes.flat)[-1].legend(handles, labels, loc="center", fontsize=8, frameon=False)
    fig.suptitle(f"quantization penalty (continuous - {result['method']} test PSNR) against latent geometry: "
                 f"{result['n_configurations']} configurations (large) of {result['n_runs']} converged runs (small), {result['n_datasets']} datasets")
    fig.tight_layout()
    return save_png(fig, path)
