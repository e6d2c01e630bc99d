"""Line figures of a report: training curves (one run; a sweep's arms), the ablation plot, a sweep's rate-distortion.

Every figure is drawn with matplotlib's non-interactive Agg backend and written as a PNG
through :func:`save_png` (atomic). Inputs are plain data read from the run or sweep files;
nothing here loads models.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from posthoc_vq.io import atomic_write

DPI = 110
CURVES = (("loss", "loss (recon + beta KL)"), ("recon", "reconstruction"), ("kl", "KL (nats)"))
MARKS = {"validated": "*", "no significant difference": "ns", "insufficient evidence": "?", "invalid": "!",
         "significant but below margin": "(*)", "equivalent": "eq", "non-inferior": "ni", "superior": "sup", "inferior": "inf",
         "inconclusive": "inc"}  # one per experiments.claims.VERDICTS
BASE_LEGEND_VERDICTS = ("validated", "no significant difference", "insufficient evidence", "invalid")
BASE_LEGEND = "* validated, ns not significant, ? insufficient evidence, ! invalid"


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig: Any, path: Path) -> Path:
    """Write a matplotlib figure as PNG atomically and close it."""
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    pyplot().close(fig)
    return path


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def training_curves(history: list[dict[str, Any]], summary: dict[str, Any] | None, path: Path, title: str) -> Path:
    """Train and val loss, reconstruction and KL per epoch, the best epoch and the stop marked.

    Parameters
    ----------
    history : per-epoch records with ``epoch`` and ``train_<x>``/``val_<x>`` for x in loss, recon, kl.
    summary : ``train_summary.json`` (``best_epoch``, ``epochs``, ``converged``, ``stop_reason``) or None.
    """
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    epochs = [h["epoch"] for h in history]
    best = (summary or {}).get("best_epoch")
    for ax, (key, label) in zip(axes, CURVES):
        for split, style in (("train", "--"), ("val", "-")):
            values = [h.get(f"{split}_{key}") for h in history]
            if any(_is_number(v) for v in values):
                ax.plot(epochs, [v if _is_number(v) else np.nan for v in values], style, marker=".", label=split)
        if best is not None:
            ax.axvline(best, color="tab:green", lw=1.2, ls=":", label=f"best epoch {best}")
        if summary and summary.get("converged") is False:
            ax.axvline(epochs[-1], color="tab:red", lw=1.2, label="stopped at max epochs")
        elif summary and summary.get("stop_reason") == "early_stopping":
            ax.axvline(epochs[-1], color="tab:gray", lw=1.0, label=f"early stop (epoch {epochs[-1]})")
        ax.set_xlabel("epoch")
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return save_png(fig, path)


def arm_curves(arms: dict[str, list[tuple[str, list[dict[str, Any]], dict[str, Any] | None]]], path: Path, title: str) -> Path:
    """A sweep's training curves: one panel per arm, each seed's val loss (solid) and train loss (dashed) overlaid.

    Parameters
    ----------
    arms : arm label -> [(seed label, history, train summary or None)].
    The best epoch of each seed is a filled circle; a run that stopped at max epochs ends in a red cross.
    """
    plt = pyplot()
    n = len(arms)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False, sharey=True)
    colours = plt.get_cmap("tab10").colors
    for ax, (arm, runs) in zip(axes.flat, arms.items()):
        for i, (seed, history, summary) in enumerate(runs):
            c = colours[i % len(colours)]
            ep = [h["epoch"] for h in history]
            ax.plot(ep, [h.get("val_loss", np.nan) for h in history], "-", color=c, label=f"{seed} val")
            ax.plot(ep, [h.get("train_loss", np.nan) for h in history], "--", color=c, alpha=0.6, lw=1)
            best = (summary or {}).get("best_epoch")
            if best is not None and best in ep:
                ax.plot(best, history[ep.index(best)].get("val_loss"), "o", color=c, ms=6)
            if summary and summary.get("converged") is False:
                ax.plot(ep[-1], history[-1].get("val_loss"), "x", color="tab:red", ms=9, mew=2)
        ax.set_title(arm, fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    axes[0, 0].set_ylabel("loss (solid val, dashed train)")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return save_png(fig, path)


def arm_positions(values: Sequence[Any]) -> tuple[list[float], bool]:
    """x positions of arm values: the values themselves when all are positive numbers (log2 axis when they span 4x+), else 0, 1, 2..."""
    if values and all(_is_number(v) and v > 0 for v in values):
        return [float(v) for v in values], max(values) / min(values) >= 4
    return [float(i) for i in range(len(values))], False


def ablation_plot(
    series: dict[str, dict[str, Any]], metrics: Sequence[str], axis: str, values: Sequence[Any], path: Path, title: str,
) -> Path:
    """Metric against the compared axis: mean with 95% CI error bars per slice, seeds as dots, verdict marks.

    Parameters
    ----------
    series : slice label -> metric -> {"mean": [..], "low": [..], "high": [..], "points": [[..] per arm],
        "marks": [verdict or None per arm]} aligned with ``values`` (NaN where an arm has no data).
    values : the compared axis' arm values, in plotting order.
    Marks above the reference-compared arms: * validated, ns no significant difference,
    ? insufficient evidence, ! invalid and, with a margin, (*) significant but below margin,
    eq equivalent, ni non-inferior, sup superior, inf inferior, inc inconclusive (see the claims
    table for reasons); the title's legend names the margin marks that appear.
    """
    plt = pyplot()
    x, log = arm_positions(list(values))
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.6 * len(metrics), 4.2), squeeze=False)
    colours = plt.get_cmap("tab10").colors
    n = max(1, len(series))
    for ax, metric in zip(axes[0], metrics):
        for i, (label, by_metric) in enumerate(series.items()):
            s = by_metric.get(metric)
            if s is None:
                continue
            c = colours[i % len(colours)]
            shift = (i - (n - 1) / 2) * 0.06
            xs = [xv * 2 ** shift if log else xv + shift for xv in x]
            mean, low, high = (np.asarray(s[k], dtype=float) for k in ("mean", "low", "high"))
            err = np.vstack([mean - low, high - mean])
            err = np.where(np.isfinite(err), err, 0.0)
            ax.errorbar(xs, mean, yerr=err, marker="o", capsize=4, color=c, label=label)
            for xv, pts in zip(xs, s["points"]):
                ax.plot([xv] * len(pts), pts, ".", color=c, alpha=0.45, ms=5)
            for xv, m, h, verdict in zip(xs, mean, high, s["marks"]):
                if verdict and np.isfinite(m):
                    top = h if np.isfinite(h) else m
                    ax.annotate(MARKS.get(verdict, "?"), (xv, top), textcoords="offset points", xytext=(0, 4 + 10 * i), ha="center",
                                fontsize=10, color=c, fontweight="bold")
        if log:
            ax.set_xscale("log", base=2)
        ax.set_xticks(x, [str(v) for v in values])
        ax.minorticks_off()
        ax.set_xlabel(axis)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    used = {v for by_metric in series.values() for s in by_metric.values() for v in s["marks"] if v}
    extra = [f"{MARKS[v]} {v}" for v in MARKS if v in used and v not in BASE_LEGEND_VERDICTS]
    legend = ", ".join([BASE_LEGEND] + extra)
    fig.suptitle(title + ("\n" if extra else "   ") + f"(marks vs reference: {legend})", fontsize=10)  # margin marks: legend on its own line
    fig.tight_layout()
    return save_png(fig, path)


def _panel_axes(plt: Any, n: int, width: float = 6.5, height: float = 4.5) -> tuple[Any, list[Any]]:
    fig, axes = plt.subplots(1, n, figsize=(width * n, height), squeeze=False)
    return fig, list(axes[0])


def thin_ticks(values: Sequence[float], min_ratio: float = 1.15) -> list[float]:
    """Tick positions for a log axis: the sorted values, leaving out any closer than ``min_ratio`` to the last kept one (labels would overlap)."""
    kept: list[float] = []
    for v in sorted(set(values)):
        if not kept or v >= kept[-1] * min_ratio:
            kept.append(v)
    return kept


def sweep_panel_series(points: dict[str, list[dict[str, Any]]], continuous: dict[str, Any], arms: Sequence[str] | None = None,
                       ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The plotted data of one panel of :func:`sweep_rate_distortion`, as plain data: (series, reference lines).

    series : one per (arm, quantizer recipe), each ``label``, ``arm``, ``name``, ``colour`` (the arm's index in ``arms``),
        ``marker`` (distinct within the panel, so points at one rate stay told apart), ``x`` (bits per image exactly as
        stored: equal rates share one x, no dodge), ``y``, ``low``, ``high`` (None when n < 2) and ``n`` (fewest seeds of a point).
    reference lines : the continuous models' PSNR, each distinct value once (not once per arm): ``mean``, ``low``, ``high``,
        ``label`` (``continuous 22.38 dB``; the arms are named only when the panel holds more than one value).
    """
    arms = list(arms) if arms is not None else list(dict.fromkeys([*points, *continuous]))
    series: list[dict[str, Any]] = []
    for arm in arms:
        names = sorted({p["series"] for p in points.get(arm, [])})
        for name in names:
            pts = sorted((p for p in points[arm] if p["series"] == name), key=lambda p: p["bits"])
            trivial = len(names) == 1 and name in ("codebook", "trained quantizer")
            series.append({
                "label": f"{arm} (n={min(p['n'] for p in pts)})" if trivial else f"{arm}: {name} (n={min(p['n'] for p in pts)})",
                "arm": arm, "name": name, "colour": arms.index(arm), "marker": SERIES_MARKERS[len(series) % len(SERIES_MARKERS)],
                "x": [float(p["bits"]) for p in pts], "y": [p["mean"] for p in pts], "low": [p["low"] for p in pts], "high": [p["high"] for p in pts],
                "n": min(p["n"] for p in pts),
            })
    groups: dict[tuple[str, float], dict[str, Any]] = {}
    for arm in arms:
        lines = continuous.get(arm, [])
        for line in [lines] if isinstance(lines, dict) else lines:
            key = (str(line.get("label") or ""), round(float(line["mean"]), 2))
            groups.setdefault(key, {"mean": line["mean"], "low": line.get("low"), "high": line.get("high"), "family": key[0], "arms": []})["arms"].append(arm)
    refs = []
    for (family, mean), g in groups.items():
        where = f" ({family})" if family else ""
        who = f" [{', '.join(g['arms'])}]" if len(groups) > 1 and len({k[1] for k in groups}) > 1 else ""
        refs.append({"mean": g["mean"], "low": g["low"], "high": g["high"], "arms": g["arms"], "label": f"continuous{where}{who} {mean:.2f} dB"})
    return series, refs


SERIES_MARKERS = "osD^vP*Xh<>pd"


def sweep_rate_distortion(panels: dict[str, tuple[dict[str, list[dict[str, Any]]], dict[str, dict[str, float]]]], path: Path, title: str) -> Path:
    """PSNR against bits per image per arm (mean and 95% CI over seeds), one panel per slice (e.g. per dataset).

    Parameters
    ----------
    panels : panel title -> (points, continuous):
        points : arm label -> [{"series": quantizer recipe, "bits": float, "mean", "low", "high" (None when n < 2), "n": int}];
        continuous : arm label -> {"mean", "low", "high"} of the continuous (fp32, no codebook) PSNR, a dashed line, or a list of such
            dicts with a "label" when the arm's cells use several continuous models (e.g. one per rate family).
    One colour per arm, one marker per series (:func:`sweep_panel_series`); equal rates share one x position. Each distinct
    continuous PSNR is one grey line per panel, labelled on the line; the series' legend is shared by the panels, below them.
    """
    plt = pyplot()
    n = len(panels)
    colours = plt.get_cmap("tab10").colors
    arms = list(dict.fromkeys(a for points, cont in panels.values() for a in [*points, *cont]))
    fig, axes = _panel_axes(plt, n, width=5.5, height=4.2)
    handles: dict[str, Any] = {}
    for ax, (panel, (points, continuous)) in zip(axes, panels.items()):
        series, refs = sweep_panel_series(points, continuous, arms)
        for k, ref in enumerate(refs):
            ax.axhline(ref["mean"], color="0.25", ls=("--", ":", "-.")[k % 3], lw=1)
            ax.annotate(ref["label"], (0.01, ref["mean"]), xycoords=("axes fraction", "data"), xytext=(0, 2), textcoords="offset points",
                        fontsize=7, color="0.25", va="bottom")
        for sr in series:
            c = colours[sr["colour"] % len(colours)]
            err = np.array([[y - lo if lo is not None else 0.0 for y, lo in zip(sr["y"], sr["low"])],
                            [hi - y if hi is not None else 0.0 for y, hi in zip(sr["y"], sr["high"])]])
            h = ax.errorbar(sr["x"], sr["y"], yerr=err, marker=sr["marker"], ms=6, capsize=3, color=c, mfc="none" if sr["colour"] >= len(colours) else c,
                            alpha=0.85, label=sr["label"])
            handles.setdefault(sr["label"], h)
        bits = [x for sr in series for x in sr["x"]]
        if bits and min(bits) > 0:
            ax.set_xscale("log", base=2)
            ticks = thin_ticks(bits)
            ax.set_xticks(ticks, [f"{b:g}" for b in ticks])
            ax.minorticks_off()
        ax.set_xlabel("bits per image")
        ax.set_ylabel("PSNR vs ground truth (dB)")
        ax.set_title(panel or "", fontsize=10)
        ax.grid(alpha=0.3)
    ncol = max(1, min(len(handles), 2 * n + 1, 6))
    rows = math.ceil(len(handles) / ncol) if handles else 0
    fig.suptitle(title, fontsize=11)
    legend_h = 0.25 * rows + 0.2  # inches below the panels
    fig.set_size_inches(fig.get_size_inches()[0], 4.2 + legend_h)
    fig.tight_layout(rect=(0, legend_h / (4.2 + legend_h), 1, 1))
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=ncol, fontsize=7, frameon=False)
    return save_png(fig, path)


def quality_vs_compute(panels: dict[str, dict[str, list[dict[str, Any]]]], path: Path, title: str) -> Path:
    """PSNR against the compute behind each model (training + post-hoc steps, wall seconds on a log axis), one panel per slice.

    Parameters
    ----------
    panels : panel title -> arm label -> [{"group": e.g. the rate, "seconds": mean wall seconds, "mean", "low", "high", "n"}].
    One colour per arm, one marker per group; bars are 95% CIs over seeds (PSNR) and the seeds' range (seconds).
    """
    plt = pyplot()
    fig, axes = _panel_axes(plt, len(panels))
    colours = plt.get_cmap("tab10").colors
    markers = "osD^vP*X"
    arms = list(dict.fromkeys(a for points in panels.values() for a in points))
    groups = sorted({p["group"] for points in panels.values() for pts in points.values() for p in pts}, key=str)
    for ax, (panel, points) in zip(axes, panels.items()):
        for arm in arms:
            c = colours[arms.index(arm) % len(colours)]
            for p in points.get(arm, []):
                yerr = [[p["mean"] - p["low"]], [p["high"] - p["mean"]]] if p["low"] is not None else None
                xerr = [[p["seconds"] - p["seconds_min"]], [p["seconds_max"] - p["seconds"]]]
                ax.errorbar([p["seconds"]], [p["mean"]], yerr=yerr, xerr=xerr, marker=markers[groups.index(p["group"]) % len(markers)],
                            color=c, capsize=2, ls="none")
        for arm in arms:  # legend: colours are arms, markers are groups
            ax.plot([], [], color=colours[arms.index(arm) % len(colours)], marker="s", ls="none", label=arm)
        for g in groups:
            ax.plot([], [], color="0.4", marker=markers[groups.index(g) % len(markers)], ls="none", label=str(g))
        ax.set_xscale("log")
        ax.set_xlabel("wall seconds behind the model (train + encode + fit + fine-tune)")
        ax.set_ylabel("PSNR vs ground truth (dB)")
        ax.set_title(f"{title}: {panel}" if panel else title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return save_png(fig, path)
