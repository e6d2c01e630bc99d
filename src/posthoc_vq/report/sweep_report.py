"""The report of a sweep directory: header, training curves per arm, the ablation plot, rate-distortion,
images of one run per arm, tables, every claim with its reason, and the limitations.

Reads ``spec.json``, ``provenance.json``, ``results.sqlite`` (read only: the sweep may still be
running), ``claims.json`` and the trained runs under ``runs/<train_key>/``. Claims come from
``claims.json``; when it is absent (a sweep that never finished) they are computed from the
done cells with the sweep's own :func:`~posthoc_vq.experiments.claims.make_claims`, and the
report says so.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from posthoc_vq.config import validate
from posthoc_vq.errors import DatasetError, PosthocVQError
from posthoc_vq.experiments.claims import make_claims, slice_key
from posthoc_vq.experiments.spec import SweepSpec
from posthoc_vq.experiments.store import ResultStore
from posthoc_vq.io import read_json
from posthoc_vq.metrics.intervals import mean_ci
from posthoc_vq.report.document import Figure, Section, Table
from posthoc_vq.report.figures import ablation_plot, arm_curves, sweep_rate_distortion
from posthoc_vq.report.image_figures import ImageRow, image_grid
from posthoc_vq.report.limitations import sweep_limitations
from posthoc_vq.report.run_report import (
    GRID_CAPTION, INTERP_CAPTION, T_TITLES, RunFiles, codebook_figures, no_codebook, psnr_notes, read_run,
)
from posthoc_vq.report.samples import interpolation_rows, open_run_models, reconstruction_rows

STAGE_PREFIXES = ("quantize.", "weights.")


@dataclass
class SweepFiles:
    """What a sweep directory holds."""

    sweep_dir: Path
    spec: SweepSpec
    provenance: dict[str, Any]
    rows: list[dict[str, Any]]
    claims: dict[str, Any]
    claims_from_file: bool
    runs: dict[str, Path] = field(default_factory=dict)  # train_key -> run directory (those that exist)
    run_axes: dict[str, dict[str, Any]] = field(default_factory=dict)  # train_key -> its training axes

    @property
    def compare(self):
        return self.spec.compare

    def arm_of(self, axes: dict[str, Any]) -> str:
        return f"{self.compare.axis}={axes.get(self.compare.axis)}" if self.compare.axis in axes else "all runs"


def read_sweep(sweep_dir: str | Path) -> SweepFiles:
    """Read a sweep directory. Raises PosthocVQError when it is not one."""
    d = Path(sweep_dir)
    if not (d / "spec.json").exists():
        raise PosthocVQError(f"{d} is not a sweep directory (no spec.json); give a folder written by `posthoc-vq ablate SPEC --out DIR`")
    spec = validate(read_json(d / "spec.json", what="sweep spec"), SweepSpec, source=str(d / "spec.json"))
    store = ResultStore.open_existing(d)
    try:
        rows = store.rows()
    finally:
        store.close()
    from_file = (d / "claims.json").exists()
    claims = read_json(d / "claims.json", what="sweep claims") if from_file else make_claims(rows, spec.compare)
    sf = SweepFiles(d, spec, read_json(d / "provenance.json", what="sweep provenance") if (d / "provenance.json").exists() else {},
                    rows, claims, from_file)
    for r in rows:
        sf.run_axes.setdefault(r["train_key"], {k: v for k, v in r["axes"].items() if not k.startswith(STAGE_PREFIXES)})
        run = d / "runs" / r["train_key"]
        if (run / "model.json").exists():
            sf.runs[r["train_key"]] = run
    return sf


def _sort_key(v: Any) -> tuple:
    return (0, float(v), "") if isinstance(v, (int, float)) and not isinstance(v, bool) else (1, 0.0, str(v))


def arm_runs(sf: SweepFiles) -> dict[str, list[tuple[str, str]]]:
    """Arm label -> [(seed label, train_key)] of the existing runs, arms in axis order, seeds sorted."""
    pair = sf.compare.pair_by
    arms: dict[str, list[tuple[Any, str, str]]] = defaultdict(list)
    for key, axes in sf.run_axes.items():
        if key in sf.runs:
            others = [f"{k}={v}" for k, v in axes.items() if k not in (sf.compare.axis, pair)]
            label = ", ".join(([f"{pair}={axes.get(pair)}"] if pair in axes else []) + others) or key
            arms[sf.arm_of(axes)].append((axes.get(pair, 0), label, key))
    order = [f"{sf.compare.axis}={v}" for v in sf.spec.axes.get(sf.compare.axis, [])]
    return {arm: [(label, key) for _, label, key in sorted(arms[arm], key=lambda t: _sort_key(t[0]))]
            for arm in sorted(arms, key=lambda a: order.index(a) if a in order else len(order))}


def sweep_header(sf: SweepFiles, reps: dict[str, RunFiles]) -> list[tuple[str, str]]:
    """(field, value) pairs: spec, axes, dataset, model, parameters per arm, seeds, fit set, latents, comparison, cells, versions."""
    s, c, prov = sf.spec, sf.compare, sf.provenance
    first = next(iter(reps.values()), None)
    done = sum(r["status"] == "done" for r in sf.rows)
    books = [r for rf in reps.values() for r in rf.codebook_evals]
    params = "; ".join(f"{arm}: {rf.meta['num_parameters']:,}" for arm, rf in reps.items() if rf.meta) or "unknown (no trained run)"
    versions = prov.get("versions") or {}
    return [
        ("sweep", f"{s.name}: base preset {s.base}, fixed settings {json.dumps(s.set)}"),
        ("axes", "; ".join(f"{k}: {v}" for k, v in s.axes.items())),
        ("dataset", f"{first.config.data.name} ({s.split} split)" if first else f"preset {s.base} ({s.split} split)"),
        ("model", f"{first.config.model.family} VAE, channels {list(first.config.model.channels)}, beta {first.config.model.beta}" if first else "unknown"),
        ("parameters (one run per arm)", params),
        ("seeds", ", ".join(str(v) for v in s.axes.get("seed", [])) or "one (the preset's seed)"),
        ("fit set", ", ".join(sorted({str(r["fit_on"]) for r in books})) or "no codebook"),
        ("latent choice", ", ".join(sorted({str(r["latents"]) for r in books})) or "no codebook"),
        ("compared", f"{c.axis}" + (f" against {c.reference}" if c.reference is not None else " (every pair)") + f" on {', '.join(c.metrics)}, paired by "
                     f"{c.pair_by}, {c.correction} correction, alpha {c.alpha}, at least {c.min_n} per arm"),
        ("cells", f"{done} of {len(sf.rows)} done, {sum(r['status'] == 'failed' for r in sf.rows)} failed"),
        ("versions", ", ".join(f"{k} {v}" for k, v in versions.items() if v) + (f", python {prov['python']}" if prov.get("python") else "") or "unknown"),
        ("git commit", str(prov.get("git_commit") or "unknown")),
        ("sweep started", str(prov.get("created") or "unknown")),
    ]


def training_section(sf: SweepFiles, arms: dict[str, list[tuple[str, str]]], out: Path) -> Section:
    """Training curves, one panel per arm with the seeds overlaid, and the table of trained runs."""
    s = Section("training", "Training")
    if not arms:
        s.missing.append(f"no trained run under {sf.sweep_dir / 'runs'}: the sweep has not trained anything yet.")
        return s
    curves, rows = {}, []
    for arm, runs in arms.items():
        curves[arm] = []
        for label, key in runs:
            run = sf.runs[key]
            history = read_json(run / "history.json", what="training history") if (run / "history.json").exists() else []
            summary = read_json(run / "train_summary.json", what="training summary") if (run / "train_summary.json").exists() else None
            curves[arm].append((label, history, summary))
            t = summary or {}
            rows.append({"arm": arm, "run": label, "train key": key, "epochs": str(t.get("epochs", "-")), "best epoch": str(t.get("best_epoch", "-")),
                         "converged": {True: "yes", False: "NO", None: "unknown"}[t.get("converged")], "stop reason": str(t.get("stop_reason", "unfinished"))})
    arm_curves(curves, out / "training-curves.png", f"{sf.spec.name}: training curves per arm")
    s.figures.append(Figure("training-curves.png", "Training curves per arm",
                            "One panel per arm, every seed overlaid: validation loss solid, train loss dashed, the best epoch (weights kept) a "
                            "filled circle; a red cross marks a run that stopped at the epoch limit instead of early stopping."))
    s.tables.append(Table(("arm", "run", "train key", "epochs", "best epoch", "converged", "stop reason"), rows, "Trained runs", key="runs"))
    return s


def _label(slice_: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in slice_.items()) or "all cells"


def ablation_section(sf: SweepFiles, out: Path) -> Section:
    """Each compared metric against the compared axis: arm means with 95% CIs (claims.json), seed dots, verdict marks."""
    s = Section("ablation", "Ablation")
    c = sf.compare
    values = sorted(sf.spec.axes[c.axis], key=_sort_key)
    pos = {str(v): i for i, v in enumerate(values)}
    if not sf.claims["arms"]:
        s.missing.append("no done cell yet: nothing to plot.")
        return s
    series: dict[str, dict[str, Any]] = {}
    for a in sf.claims["arms"]:
        m = series.setdefault(_label(a["slice"]), {}).setdefault(a["metric"], {
            "mean": [math.nan] * len(values), "low": [math.nan] * len(values), "high": [math.nan] * len(values),
            "points": [[] for _ in values], "marks": [None] * len(values)})
        i = pos[a["arm"].split("=", 1)[1]]
        m["mean"][i], m["low"][i], m["high"][i] = (a["mean"], *(math.nan if v is None else v for v in (a["ci_low"], a["ci_high"])))
    for r in sf.rows:
        if r["status"] == "done":
            for metric, m in series.get(_label(dict(slice_key(r["axes"], c))), {}).items():
                m["points"][pos[str(r["axes"][c.axis])]].append(r["metrics"][metric])
    for cl in sf.claims["claims"]:
        m = series.get(_label(cl["slice"]), {}).get(cl["metric"])
        if m is not None:
            m["marks"][pos[cl["arm"].split("=", 1)[1]]] = cl["verdict"]
    ablation_plot(series, c.metrics, c.axis, values, out / "ablation.png", f"{sf.spec.name}: {', '.join(c.metrics)} against {c.axis}")
    n = {a["n"] for a in sf.claims["arms"]}
    s.figures.append(Figure("ablation.png", f"Metrics against {c.axis}",
                            f"Mean over {c.pair_by or 'observations'} (n = {', '.join(map(str, sorted(n)))} per arm) with 95% t CI error bars, one line per "
                            "slice (the other axes' values), each seed a small dot. The mark above an arm is its claim's verdict against the reference "
                            + (f"{c.axis}={c.reference}" if c.reference is not None else "(every pair: the last claim drawn)") + "; reasons in the claims table."))
    if max(n) < 2:
        s.missing.append("one observation per arm: no confidence intervals (error bars) and no significance tests are possible.")
    return s


def rate_distortion_section(sf: SweepFiles, out: Path) -> Section:
    """PSNR vs bits per image of the codebook cells with fp32 weights, mean and 95% CI over seeds, per arm."""
    s = Section("rate-distortion", "Rate-distortion")
    c = sf.compare
    cells: dict[tuple[str, str, float], list[float]] = defaultdict(list)
    cont: dict[str, dict[str, float]] = defaultdict(dict)
    for r in sf.rows:
        m = r["metrics"] or {}
        if r["status"] != "done" or r["axes"].get("weights.bits", 32) != 32:
            continue
        arm = sf.arm_of(r["axes"])
        cont[arm][r["train_key"]] = m.get("continuous_psnr_db")
        if m.get("bits_per_image"):
            quant = ", ".join(f"{k}={v}" for k, v in r["axes"].items() if k.startswith("quantize.") and k != c.axis)
            cells[(arm, quant or "codebook", float(m["bits_per_image"]))].append(m["psnr_db"])
    if not cells:
        s.missing.append("no done cell with a latent codebook and fp32 weights: no rate-distortion points (add quantize.method to the sweep's axes).")
        return s
    points: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for (arm, series, bits), values in cells.items():
        ci = mean_ci(values).to_dict()
        points[arm].append({"series": series, "bits": bits, "mean": ci["mean"], "low": ci["low"], "high": ci["high"], "n": len(values)})
    continuous = {arm: mean_ci([v for v in per.values() if v is not None]).to_dict() for arm, per in cont.items() if any(v is not None for v in per.values())}
    sweep_rate_distortion(points, continuous, out / "rate-distortion.png", f"{sf.spec.name}: PSNR against bits per image (fp32 weights)")
    s.figures.append(Figure("rate-distortion.png", "Rate-distortion",
                            f"{sf.spec.split} PSNR against ground truth vs bits per image for every codebook setting, mean and 95% t CI over seeds "
                            "(no bar where n = 1); dashed lines: each arm's continuous model (mean over seeds)."))
    return s


def _f(x: Any, spec: str = ".4g") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def tables_section(sf: SweepFiles) -> Section:
    """Arm summaries, ANOVAs and cell statuses."""
    s = Section("tables", "Tables")
    arms = [{"slice": _label(a["slice"]), "metric": a["metric"], "arm": a["arm"], "n": str(a["n"]), "mean": _f(a["mean"]), "std": _f(a["std"], ".3g"),
             "95% CI": f"[{_f(a['ci_low'])}, {_f(a['ci_high'])}]"} for a in sf.claims["arms"]]
    s.tables.append(Table(("slice", "metric", "arm", "n", "mean", "std", "95% CI"), arms, "Arms (mean, sample std, 95% t CI over seeds)", key="arms"))
    if sf.claims.get("anova"):
        rows = [{"slice": _label(a["slice"]), "metric": a["metric"], "arms": ", ".join(a["arms"]), "F": _f(a["F"], ".3g"), "p": _f(a["p"], ".2g")} for a in sf.claims["anova"]]
        s.tables.append(Table(("slice", "metric", "arms", "F", "p"), rows, "One-way ANOVA across arms", key="anova"))
    else:
        s.missing.append("no ANOVA: it needs two or more arms with at least two observations each.")
    status = defaultdict(int)
    for r in sf.rows:
        status[r["status"]] += 1
    s.tables.append(Table(("status", "cells"), [{"status": k, "cells": str(v)} for k, v in sorted(status.items())], "Cells by status", key="cells"))
    return s


def claims_section(sf: SweepFiles) -> Section:
    """Every claim with its verdict and reason, and the sweep's limitations."""
    s = Section("claims", "Claims and limitations")
    counts = ", ".join(f"{v}: {n}" for v, n in sf.claims["counts"].items())
    source = "claims.json" if sf.claims_from_file else "the done cells (claims.json is absent; computed by the report with the sweep's own rules)"
    s.paragraphs.append(f"Every verdict from {source}, with its reason. Verdicts: {counts}.")
    rows = [{"slice": _label(c["slice"]), "metric": c["metric"], "arm": c["arm"], "reference": c["reference"], "n": f"{c['n_arm']}/{c['n_reference']}",
             "mean arm": _f(c["mean_arm"]), "mean reference": _f(c["mean_reference"]), "p adjusted": _f(c.get("p_adjusted"), ".2g"),
             "verdict": c["verdict"], "reason": c["reason"]} for c in sf.claims["claims"]]
    s.tables.append(Table(("slice", "metric", "arm", "reference", "n", "mean arm", "mean reference", "p adjusted", "verdict", "reason"), rows,
                          "Claims", key="claims", row_class="verdict"))
    if not rows:
        s.missing.append("no claim: the compared axis has a single arm with done cells, or no cell is done.")
    if not sf.claims_from_file:
        s.missing.append(f"{sf.sweep_dir / 'claims.json'} not found: the sweep has not finished; re-run `posthoc-vq ablate` to write it.")
    s.items = sweep_limitations(rows=sf.rows, n_cells=sf.claims.get("n_cells", len(sf.rows)), compare=sf.compare.model_dump(mode="json"),
                                claims_n_done=sf.claims.get("n_done") if sf.claims_from_file else None,
                                runs_missing=sorted({r["train_key"] for r in sf.rows if r["status"] == "done"} - set(sf.runs)))
    return s


def image_sections(sf: SweepFiles, arms: dict[str, list[tuple[str, str]]], reps: dict[str, RunFiles], out: Path, data_dir: str | None,
                   step: Callable[[str], None]) -> list[Section]:
    """One reconstruction grid and one interpolation strip across the arms (the first seed of each), codebook figures per arm."""
    grid = Section("reconstructions", "Reconstructions (first seed of each arm)")
    books = Section("codebooks", "Codebooks (first seed of each arm)")
    interp = Section("interpolation", "Latent interpolation (first seed of each arm)")
    if not reps:
        for s in (grid, books, interp):
            s.missing.append(f"no trained run under {sf.sweep_dir / 'runs'} yet.")
        return [grid, books, interp]
    rows, strips, idx, first = [], [], None, None
    for i, (arm, rf) in enumerate(reps.items()):
        step(f"images of {arm}")
        try:
            rm = open_run_models(rf.run_dir, rf.split, data_dir)
        except DatasetError as err:
            grid.missing.append(f"{arm}: the dataset could not be loaded, so its images are left out ({err}); give --data-dir.")
            continue
        if idx is None:
            idx, first = rm.idx, rm
            rows.append(ImageRow("ground truth", rm.x[idx]))
        short = f"{arm.split('.')[-1]}: "
        rows += reconstruction_rows(rm, psnr_notes(rf), prefix=short)
        strips += interpolation_rows(rm, prefix=short)
        books.figures += [Figure(f.file, f"{arm} ({arms[arm][0][0]}): {f.title}", f.caption) for f in codebook_figures(rf, rm, out, prefix=f"arm{i}-")]
        if not rm.codebooks:
            books.missing.append(f"{arm}: {no_codebook(rf.run_dir)}")
    if idx is None:
        return [grid, books, interp]
    image_grid(rows, out / "reconstructions.png", f"{sf.spec.name}: the same {len(idx)} {sf.spec.split} images, one run per arm",
               [f"#{i} class {first.labels[i]}" for i in idx])
    grid.figures.append(Figure("reconstructions.png", "Reconstruction grid across arms", GRID_CAPTION.format(split=sf.spec.split)
                               + " Each arm's rows come from its first seed's run."))
    a, b = int(idx[0]), int(idx[-1])
    image_grid(strips, out / "interpolation.png", f"{sf.spec.name}: {sf.spec.split} image #{a} to #{b}, one run per arm", T_TITLES)
    interp.figures.append(Figure("interpolation.png", "Latent interpolation strips across arms",
                                 INTERP_CAPTION.format(split=sf.spec.split, a=a, b=b, ca=first.labels[a], cb=first.labels[b])))
    return [grid, books, interp]


def sweep_sections(sf: SweepFiles, out: Path, *, data_dir: str | None = None, step: Callable[[str], None] = lambda _: None) -> tuple[list[Section], list[tuple[str, str]]]:
    """Every section of a sweep report (figures written into ``out``) and its header."""
    arms = arm_runs(sf)
    reps = {arm: read_run(sf.runs[runs[0][1]], sf.spec.split) for arm, runs in arms.items()}
    step("training curves")
    sections = [training_section(sf, arms, out)]
    step("ablation and rate-distortion")
    sections += [ablation_section(sf, out), rate_distortion_section(sf, out)]
    sections += image_sections(sf, arms, reps, out, data_dir, step)
    step("tables and claims")
    return sections + [tables_section(sf), claims_section(sf)], sweep_header(sf, reps)
