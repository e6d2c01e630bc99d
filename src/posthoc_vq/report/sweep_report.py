"""The report of a sweep directory: header, training curves per arm, the ablation plot, rate-distortion,
images of one run per arm, tables, every claim with its reason, and the limitations.

Reads ``spec.json``, ``provenance.json``, ``results.sqlite`` (read only: the sweep may still be
running), ``claims.json`` and the trained runs under ``runs/<train_key>/`` (their stored results
and sample sets, as a run report does). Claims, arm summaries and ANOVAs come only from
``claims.json``, written by ``posthoc-vq ablate``, and are rendered by :mod:`posthoc_vq.report.claims`
(the renderer of ``claims.md``); when it is absent (a sweep that never finished) the sections
that need it say so and name the command that writes it. Nothing here judges a claim.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from posthoc_vq.config import validate
from posthoc_vq.errors import PosthocVQError
from posthoc_vq.experiments.spec import SweepSpec
from posthoc_vq.experiments.store import ResultStore
from posthoc_vq.io import read_json
from posthoc_vq.metrics.intervals import mean_ci
from posthoc_vq.report.claims import claims_tables, margin_sentence, slice_label, verdict_counts
from posthoc_vq.report.document import Figure, Section, Table
from posthoc_vq.report.figures import ablation_plot, arm_curves, quality_vs_compute, sweep_rate_distortion
from posthoc_vq.report.image_figures import ImageRow, image_grid
from posthoc_vq.report.limitations import sweep_limitations
from posthoc_vq.report.run_report import (
    GRID_CAPTION, INTERP_CAPTION, RunFiles, codebook_figures, interpolation_rows, no_codebook, psnr_notes, read_run, reconstruction_rows, t_titles, trained_quantizer,
)
from posthoc_vq.run import Run, Sweep

STAGE_PREFIXES = ("quantize.", "weights.")


@dataclass
class SweepFiles:
    """What a sweep directory holds."""

    sweep_dir: Path
    spec: SweepSpec
    provenance: dict[str, Any]
    rows: list[dict[str, Any]]
    claims: dict[str, Any] | None  # claims.json, None when absent
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
    sweep = Sweep(d)
    if not sweep.spec_file.exists():
        raise PosthocVQError(f"{d} is not a sweep directory (no spec.json); give a folder written by `posthoc-vq ablate SPEC --out DIR`")
    spec = validate(read_json(sweep.spec_file, what="sweep spec"), SweepSpec, source=str(sweep.spec_file))
    store = ResultStore.open_existing(d)
    try:
        rows = store.rows()
    finally:
        store.close()
    claims = read_json(sweep.claims_json, what="sweep claims") if sweep.claims_json.exists() else None
    sf = SweepFiles(d, spec, read_json(sweep.provenance_file, what="sweep provenance") if sweep.provenance_file.exists() else {},
                    rows, claims)
    for r in rows:
        sf.run_axes.setdefault(r["train_key"], {k: v for k, v in r["axes"].items() if not k.startswith(STAGE_PREFIXES)})
        run = sweep.run(r["train_key"])
        if run.model_record_file.exists():
            sf.runs[r["train_key"]] = run.root
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
        ("fit set", ", ".join(sorted({str(r.fit_on) for r in books})) or "no codebook"),
        ("latent choice", ", ".join(sorted({str(r.latents) for r in books})) or "no codebook"),
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
            run = Run.open(sf.runs[key])
            history, summary = run.history() or [], run.summary()
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


def ablation_section(sf: SweepFiles, out: Path) -> Section:
    """Each compared metric against the compared axis: arm means with 95% CIs (claims.json), seed dots, verdict marks."""
    s = Section("ablation", "Ablation")
    c = sf.compare
    values = sorted(sf.spec.axes[c.axis], key=_sort_key)
    pos = {str(v): i for i, v in enumerate(values)}
    if sf.claims is None:
        s.missing.append("no claims.json, so no arm means, intervals or verdicts to plot (see Claims and limitations).")
        return s
    if not sf.claims["arms"]:
        s.missing.append("no done cell yet: nothing to plot.")
        return s
    series: dict[str, dict[str, Any]] = {}
    for a in sf.claims["arms"]:
        m = series.setdefault(slice_label(a["slice"]), {}).setdefault(a["metric"], {
            "mean": [math.nan] * len(values), "low": [math.nan] * len(values), "high": [math.nan] * len(values),
            "points": [[] for _ in values], "marks": [None] * len(values)})
        i = pos[a["arm"].split("=", 1)[1]]
        m["mean"][i], m["low"][i], m["high"][i] = (a["mean"], *(math.nan if v is None else v for v in (a["ci_low"], a["ci_high"])))
    slices = {slice_label(a["slice"]): a["slice"] for a in sf.claims["arms"]}
    for r in sf.rows:
        if r["status"] == "done":
            label = next((k for k, sl in slices.items() if all(str(r["axes"].get(axis)) == str(v) for axis, v in sl.items())), None)
            for metric, m in series.get(label, {}).items():
                if r["metrics"].get(metric) is not None:
                    m["points"][pos[str(r["axes"][c.axis])]].append(r["metrics"][metric])
    for cl in sf.claims["claims"]:
        m = series.get(slice_label(cl["slice"]), {}).get(cl["metric"])
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


#: quantizer axes that set the rate: cells differing only in them lie on one line of the rate-distortion figure
RATE_AXES = ("quantize.K", "quantize.n_stages")


def _panel_axes_of(sf: SweepFiles) -> list[str]:
    """Axes whose values get a panel of their own in the rate-distortion and compute figures (e.g. the dataset)."""
    c = sf.compare
    tags = {t for arm in sf.spec.arms.values() for t in arm.per}
    return [k for k in sf.spec.axes if k not in (c.axis, c.pair_by) and k not in tags and not k.startswith(("quantize.", "weights.", "finetune."))]


def _panel_of(sf: SweepFiles, axes: dict[str, Any]) -> str:
    return ", ".join(f"{k}={axes[k]}" for k in _panel_axes_of(sf))


def _model_families(sf: SweepFiles, panel: str, arm: str, per_key: dict[str, Any]) -> dict[str, list[str]]:
    """The arm's continuous models in a panel grouped by the tag-axis values they serve (seeds pooled): label -> train keys."""
    tags = [t for t in dict.fromkeys(t for a in sf.spec.arms.values() for t in a.per)]
    served: dict[str, set[str]] = defaultdict(set)
    for r in sf.rows:
        if r["train_key"] in per_key and sf.arm_of(r["axes"]) == arm and _panel_of(sf, r["axes"]) == panel:
            served[r["train_key"]].add(", ".join(f"{t}={r['axes'][t]}" for t in tags))
    groups: dict[str, list[str]] = defaultdict(list)
    for key, labels in served.items():
        groups["; ".join(sorted(labels, key=lambda x: (len(x), x)))].append(key)
    return dict(groups)


def rate_distortion_section(sf: SweepFiles, out: Path) -> Section:
    """PSNR vs bits per image of the quantized cells with fp32 weights (post-hoc codebooks and trained quantizers), mean and 95% CI over seeds,
    per arm, one panel per value of the other axes (e.g. the dataset); and PSNR vs the compute behind each model."""
    s = Section("rate-distortion", "Rate-distortion")
    c = sf.compare
    tags = [t for t in dict.fromkeys(t for arm in sf.spec.arms.values() for t in arm.per)]
    cells: dict[tuple[str, str, str, float], list[float]] = defaultdict(list)
    cont: dict[str, dict[str, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
    compute: dict[tuple[str, str, str], list[tuple[float, float]]] = defaultdict(list)
    for r in sf.rows:
        m = r["metrics"] or {}
        if r["status"] != "done" or r["axes"].get("weights.bits", 32) != 32:
            continue
        arm, panel = sf.arm_of(r["axes"]), _panel_of(sf, r["axes"])
        post_hoc = bool((r["artifacts"] or {}).get("codebook"))
        own_run = Path((r["artifacts"] or {}).get("run_dir") or "").name == r["train_key"]  # not a fine-tune's run beside it
        if post_hoc and own_run:  # a trained quantizer's 'continuous' output is its quantized output: no continuous line for it
            cont[panel][arm][r["train_key"]] = m.get("continuous_psnr_db")
        if m.get("bits_per_image"):
            quant = ", ".join(f"{k}={v}" for k, v in r["axes"].items()  # the recipe: K and residual stages are the rate, along one line
                              if k.startswith("quantize.") and k not in (c.axis, *RATE_AXES))
            cells[(panel, arm, quant or ("codebook" if post_hoc else "trained quantizer"), float(m["bits_per_image"]))].append(m["psnr_db"])
        if m.get("compute_seconds"):
            group = ", ".join(f"{t}={r['axes'][t]}" for t in tags) or (f"{m.get('bits_per_image'):g} bits" if m.get("bits_per_image") else "continuous")
            compute[(panel, arm, group)].append((m["compute_seconds"], m["psnr_db"]))
    if not cells:
        s.missing.append("no done cell with a latent codebook or a trained quantizer and fp32 weights: no rate-distortion points "
                         "(add quantize.method or model.quantizer to the sweep's axes).")
        return s
    panels: dict[str, tuple[dict[str, list[dict[str, Any]]], dict[str, dict[str, float]]]] = {}
    for (panel, arm, series, bits), values in cells.items():
        ci = mean_ci(values).to_dict()
        panels.setdefault(panel, (defaultdict(list), {}))[0][arm].append(
            {"series": series, "bits": bits, "mean": ci["mean"], "low": ci["low"], "high": ci["high"], "n": len(values)})
    for panel, per_arm in cont.items():
        if panel in panels:
            for arm, per in per_arm.items():
                lines = []
                for family, keys in _model_families(sf, panel, arm, per).items():  # one continuous line per model the arm's codebooks came from
                    values = [per[k] for k in keys if per[k] is not None]
                    if values:
                        lines.append({"label": family, **mean_ci(values).to_dict()})
                if lines:
                    panels[panel][1][arm] = lines
    sweep_rate_distortion(dict(sorted(panels.items())), out / "rate-distortion.png", f"{sf.spec.name}: PSNR against bits per image (fp32 weights)")
    s.figures.append(Figure("rate-distortion.png", "Rate-distortion",
                            f"{sf.spec.split} PSNR against ground truth vs bits per image for every post-hoc codebook and trained quantizer, mean and "
                            "95% t CI over seeds (no bar where n = 1). One line per arm and quantizer recipe (K and residual stages vary along it), colour by arm, "
                            "a marker per line; equal rates share one x position. Grey lines: the continuous VAE behind the post-hoc arms (mean over "
                            "seeds), each distinct value drawn once per panel."))
    if compute:
        cpanels: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
        for (panel, arm, group), pairs in compute.items():
            seconds = [p[0] for p in pairs]
            ci = mean_ci([p[1] for p in pairs]).to_dict()
            cpanels[panel][arm].append({"group": group, "seconds": float(np.mean(seconds)), "seconds_min": min(seconds), "seconds_max": max(seconds),
                                        "mean": ci["mean"], "low": ci["low"], "high": ci["high"], "n": len(pairs)})
        quality_vs_compute(dict(sorted(cpanels.items())), out / "quality-vs-compute.png", f"{sf.spec.name}: PSNR against compute")
        s.figures.append(Figure("quality-vs-compute.png", "Quality against compute",
                                f"{sf.spec.split} PSNR (mean and 95% t CI over seeds) against the wall seconds behind each model on this machine: "
                                "training, plus latent encoding, codebook fit and decoder fine-tuning for post-hoc arms (the seeds' range as the "
                                "horizontal bar). Colours are arms, markers the rate."))
    return s


def claims_missing(sf: SweepFiles) -> str:
    """The missing note of a sweep without claims.json."""
    return (f"{Sweep(sf.sweep_dir).claims_json} not found: the sweep has not finished, so there are no verdicts, arm summaries or ANOVAs yet; "
            f"run `posthoc-vq ablate {Sweep(sf.sweep_dir).spec_file} --out {sf.sweep_dir}` again (it resumes: done cells are skipped, and it rewrites the claims).")


def tables_section(sf: SweepFiles) -> Section:
    """Arm summaries, ANOVAs (from claims.json) and cell statuses."""
    s = Section("tables", "Tables")
    if sf.claims is None:
        s.missing.append("no claims.json, so no arm summaries or ANOVAs (see Claims and limitations).")
    else:
        tables = claims_tables(sf.claims)
        s.tables.append(tables["arms"])
        if "anova" in tables:
            s.tables.append(tables["anova"])
        else:
            s.missing.append("no ANOVA: it needs two or more arms with at least two observations each.")
    status = defaultdict(int)
    for r in sf.rows:
        status[r["status"]] += 1
    s.tables.append(Table(("status", "cells"), [{"status": k, "cells": str(v)} for k, v in sorted(status.items())], "Cells by status", key="cells"))
    return s


def claims_section(sf: SweepFiles) -> Section:
    """Every claim with its verdict and reason as stored in claims.json, and the sweep's limitations."""
    s = Section("claims", "Claims and limitations")
    if sf.claims is None:
        s.missing.append(claims_missing(sf))
    else:
        s.paragraphs.append(f"Every verdict from claims.json, with its reason. Verdicts: {verdict_counts(sf.claims)}."
                            + (" " + margin_sentence(sf.compare.margin, sf.compare.question, sf.compare.alpha) if sf.compare.margin else ""))
        table = claims_tables(sf.claims)["claims"]
        s.tables.append(table)
        if not table.rows:
            s.missing.append("no claim: the compared axis has a single arm with done cells, or no cell is done.")
    s.items = sweep_limitations(rows=sf.rows, n_cells=(sf.claims or {}).get("n_cells", len(sf.rows)), compare=sf.compare.model_dump(mode="json"),
                                claims_n_done=sf.claims.get("n_done") if sf.claims is not None else None,
                                runs_missing=sorted({r["train_key"] for r in sf.rows if r["status"] == "done"} - set(sf.runs)))
    return s


def image_sections(sf: SweepFiles, arms: dict[str, list[tuple[str, str]]], reps: dict[str, RunFiles], out: Path) -> list[Section]:
    """One reconstruction grid and one interpolation strip across the arms (the first seed of each), codebook figures per arm,
    all from the runs' stored sample sets."""
    grid = Section("reconstructions", "Reconstructions (first seed of each arm)")
    books = Section("codebooks", "Codebooks (first seed of each arm)")
    interp = Section("interpolation", "Latent interpolation (first seed of each arm)")
    if not reps:
        for s in (grid, books, interp):
            s.missing.append(f"no trained run under {sf.sweep_dir / 'runs'} yet.")
        return [grid, books, interp]
    rows, strips, first = [], [], None
    for i, (arm, rf) in enumerate(reps.items()):
        short = f"{arm.split('.')[-1]}: "
        grid.missing += [f"{arm}: {m}" for m in rf.samples.missing]
        books.figures += [Figure(f.file, f"{arm} ({arms[arm][0][0]}): {f.title}", f.caption) for f in codebook_figures(rf, out, prefix=f"arm{i}-")]
        if not rf.codebooks and not trained_quantizer(rf):
            books.missing.append(f"{arm}: {no_codebook(rf.run_dir)}")
        if rf.samples.continuous is None:
            continue
        if first is None:
            first = rf.samples
            rows.append(ImageRow("ground truth", first.continuous["ground_truth"]))
        elif rf.samples.idx != first.idx:
            grid.missing.append(f"{arm}: its stored samples show other {sf.spec.split} images than the first arm's; it is left out of the grid.")
            continue
        rows += reconstruction_rows(rf, psnr_notes(rf), prefix=short)
        strips += interpolation_rows(rf, prefix=short)
    if first is None:
        interp.missing.append(f"no arm's run has stored samples on {sf.spec.split}: no interpolation strip.")
        return [grid, books, interp]
    idx, labels = first.idx, first.labels
    image_grid(rows, out / "reconstructions.png", f"{sf.spec.name}: the same {len(idx)} {sf.spec.split} images, one run per arm",
               [f"#{i} class {c}" for i, c in zip(idx, labels)])
    grid.figures.append(Figure("reconstructions.png", "Reconstruction grid across arms", GRID_CAPTION.format(split=sf.spec.split)
                               + " Each arm's rows come from its first seed's run."))
    a, b = idx[0], idx[-1]
    image_grid(strips, out / "interpolation.png", f"{sf.spec.name}: {sf.spec.split} image #{a} to #{b}, one run per arm", t_titles(strips[0].images.shape[0]))
    interp.figures.append(Figure("interpolation.png", "Latent interpolation strips across arms",
                                 INTERP_CAPTION.format(split=sf.spec.split, a=a, b=b, ca=labels[0], cb=labels[-1])))
    return [grid, books, interp]


def sweep_sections(sf: SweepFiles, out: Path, *, step: Callable[[str], None] = lambda _: None) -> tuple[list[Section], list[tuple[str, str]]]:
    """Every section of a sweep report (figures written into ``out``) and its header."""
    arms = arm_runs(sf)
    reps = {arm: read_run(sf.runs[runs[0][1]], sf.spec.split) for arm, runs in arms.items()}
    step("training curves")
    sections = [training_section(sf, arms, out)]
    step("ablation and rate-distortion")
    sections += [ablation_section(sf, out), rate_distortion_section(sf, out)]
    step("images of one run per arm (stored samples)")
    sections += image_sections(sf, arms, reps, out)
    step("tables and claims")
    return sections + [tables_section(sf), claims_section(sf)], sweep_header(sf, reps)
