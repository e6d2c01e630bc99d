"""The latent-geometry figure, drawn from a stored ``eval/geometry-<split>.json`` (computes nothing).

Three panels: the k-means distortion curve D(K) on log-log axes with its fitted Zador line
(slope and d_eff in the legend); the number of kNN-graph components against k (log y), the
smallest connected k marked; the per-class RMS spread as bars, with the pooled spread as a line.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from posthoc_vq.io import read_json
from posthoc_vq.report.figures import pyplot, save_png
from posthoc_vq.run import Run


def draw_geometry(result: dict, path: Path) -> Path:
    """Draw the figure of a geometry result (the JSON's content) into ``path`` (PNG)."""
    plt = pyplot()
    fig, (a, b, c) = plt.subplots(1, 3, figsize=(15, 4.5))
    dist, dims = result["distortion"], result["intrinsic_dimension"]
    if dist["K"]:
        a.loglog(dist["K"], dist["D"], "o-", label="k-means D(K)")
        if dist["slope"] is not None:
            K = np.asarray(dist["K"], dtype=float)
            a.loglog(K, np.exp(dist["intercept"]) * K ** dist["slope"], "--", label=f"slope {dist['slope']:.3f}, d_eff {dist['d_eff']:.1f}")
        a.legend()
    a.set(xlabel="codebook size K", ylabel="mean squared distance", title=f"distortion (n={result['samples']['distortion']})")
    conn = result["connectivity"]
    b.semilogy(conn["k"], conn["components"], "o-", ms=3)
    if conn["connected_k"] is not None:
        b.axvline(conn["connected_k"], ls="--", color="gray", label=f"connected at k={conn['connected_k']}")
        b.legend()
    b.set(xlabel="neighbours k", ylabel="components", title=f"kNN graph (n={result['samples']['connectivity']})")
    cls = result["classes"]
    c.bar([str(x) for x in cls["labels"]], cls["spread"])
    c.axhline(cls["spread_overall"], ls="--", color="gray", label=f"pooled {cls['spread_overall']:.2f}")
    sep = cls.get("separation")
    c.set(xlabel="class", ylabel="RMS distance to class mean", title="class spread" + (f" (separation {sep:.2f})" if sep is not None else ""))
    c.legend()
    fig.suptitle(f"{result['run']} {result['split']}: TwoNN {dims['twonn']:.1f}, MLE {dims['mle']:.1f} (k={dims['mle_k']}) of {dims['ambient']} dims")
    fig.tight_layout()
    return save_png(fig, path)


def write_geometry_figure(run_dir, split: str = "train") -> Path:
    """Draw ``eval/geometry-<split>.json`` of a run into ``eval/geometry-<split>.png``; returns the PNG's path."""
    run = Run.open(run_dir)
    return draw_geometry(read_json(run.geometry_file(split), what="latent geometry (run `posthoc-vq geometry` first)"), run.geometry_figure(split))
