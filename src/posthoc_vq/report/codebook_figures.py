"""Codebook figures: how the codes are used on the evaluated split, and the kNN graph of graph methods.

Per codebook, from the counts stored with its sample set by ``posthoc-vq evaluate --codebook``
(see :mod:`posthoc_vq.evaluation.samples`; the report assigns no code itself):

* sorted usage: count per code, largest first, on a log axis, with the dead codes (count 0)
  shaded and counted;
* per-class usage: a classes x codes heatmap of the share of each class's vectors that
  each code takes, codes ordered by their majority class then by count (a block-diagonal
  picture means codes specialise by class); dead codes sit at the right;
* for graph methods (geodesic, hybrid), when the estimator holds its kNN graph: the node
  degree distribution and the sizes of the connected components, as stored.

A residual quantizer's codes are (N, M): usage is drawn per stage and the heatmap is of stage 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from posthoc_vq.report.figures import pyplot, save_png


@dataclass
class CodebookView:
    """What the codebook figure draws.

    Attributes
    ----------
    counts : (M, K) int64 vectors per code, per stage (M = 1 except for residual).
    class_counts : (K, C) int64 vectors of each class per code (stage 1).
    degrees : (N_nodes,) int64 node degrees of the kNN graph, or None when there is no graph.
    component_sizes : (n_components,) int64 sizes, largest first, or None.
    """

    name: str
    method: str
    split: str
    counts: np.ndarray
    class_counts: np.ndarray
    degrees: np.ndarray | None = None
    component_sizes: np.ndarray | None = None

    @property
    def dead(self) -> list[int]:
        """Dead codes (never assigned) per stage."""
        return [int((c == 0).sum()) for c in self.counts]


def view_from_samples(name: str, meta: dict[str, Any], samples: Any, split: str) -> CodebookView:
    """The view of a codebook from its stored sample set (``usage_counts``, ``class_counts``, optional graph tensors) and record ``meta``."""
    arr = lambda key: None if samples.get(key) is None else samples.get(key).numpy().astype(np.int64)  # noqa: E731
    return CodebookView(name, str(meta.get("method", samples.info.get("method", "?"))), split, arr("usage_counts"), arr("class_counts"),
                        arr("graph_degrees"), arr("graph_component_sizes"))


def class_order(class_counts: np.ndarray) -> np.ndarray:
    """Code order for the heatmap: used codes by majority class, then by count (descending); dead codes last."""
    total = class_counts.sum(1)
    major = class_counts.argmax(1)
    return np.lexsort((-total, major, total == 0))


def codebook_figure(view: CodebookView, path: Path) -> Path:
    """Sorted usage | per-class heatmap [| degree distribution | component sizes] for one codebook."""
    plt = pyplot()
    has_graph = view.degrees is not None
    fig, axes = plt.subplots(1, 4 if has_graph else 2, figsize=(17 if has_graph else 10.5, 3.4),
                             gridspec_kw={"width_ratios": [1, 1.35, 0.8, 0.8] if has_graph else [1, 1.35]})
    ax = axes[0]
    k = view.counts.shape[1]
    for m, counts in enumerate(view.counts):
        ranked = np.sort(counts)[::-1]
        used = int((ranked > 0).sum())
        stage = f"stage {m + 1}: " if len(view.counts) > 1 else ""
        ax.step(np.arange(1, k + 1), np.maximum(ranked, 0.5), where="mid", label=f"{stage}{used} used, {k - used} dead")
        if used < k:
            ax.axvspan(used + 0.5, k + 0.5, color="tab:red", alpha=0.12 if len(view.counts) == 1 else 0.05)
    ax.set_yscale("log")
    ax.set_ylim(bottom=0.4)
    ax.set_xlim(0.5, k + 0.5)
    ax.set_xlabel("code rank (most used first)")
    ax.set_ylabel(f"vectors per code ({view.split})")
    ax.set_title("sorted usage; dead codes shaded red", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)

    ax = axes[1]
    order = class_order(view.class_counts)
    per_class = view.class_counts[order].T.astype(np.float64)  # (C, K)
    share = per_class / np.maximum(per_class.sum(1, keepdims=True), 1)
    im = ax.imshow(share, aspect="auto", cmap="magma", interpolation="nearest", vmin=0, vmax=max(share.max(), 1e-9))
    ax.set_yticks(range(share.shape[0]), [str(c) for c in range(share.shape[0])], fontsize=7)
    ax.set_ylabel("class")
    ax.set_xlabel("code (by majority class, then count)" + (" — stage 1" if len(view.counts) > 1 else ""))
    n_dead = int((view.class_counts.sum(1) == 0).sum())
    if n_dead:
        ax.axvline(k - n_dead - 0.5, color="tab:red", lw=1)
    ax.set_title("share of each class's vectors per code", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02)

    if has_graph:
        ax = axes[2]
        ax.hist(view.degrees, bins=min(60, max(10, int(view.degrees.max() - view.degrees.min() + 1))), color="tab:blue")
        ax.set_yscale("log")
        ax.set_xlabel("node degree")
        ax.set_ylabel("nodes")
        ax.set_title(f"kNN graph: {len(view.degrees):,} nodes, mean degree {view.degrees.mean():.1f}", fontsize=9)
        ax.grid(alpha=0.3)
        ax = axes[3]
        sizes = view.component_sizes
        ax.bar(np.arange(1, len(sizes) + 1)[:50], sizes[:50], color="tab:purple")
        ax.set_yscale("log")
        ax.set_ylim(bottom=0.8)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_xlabel("component (largest first)")
        ax.set_ylabel("nodes")
        ax.set_title(f"{len(sizes)} connected component(s); largest {sizes[0]:,}", fontsize=9)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{view.name} ({view.method}): code usage on {view.split}", fontsize=11)
    fig.tight_layout()
    return save_png(fig, path)
