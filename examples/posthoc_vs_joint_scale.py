"""The scale question of issue 24: does the subset verdict on post-hoc vs joint training survive at full scale?

Reads finished (or partly finished) sweeps; no model is trained or evaluated (the claims are judged from each
sweep's database as `ablate` judges them, so a sweep still running shows the cells done so far):
  * the subset study `posthoc-vs-joint` (tiny family, 32-D latent, 8,000 train images): its committed claims.json;
  * the full-scale study `posthoc-vs-joint-full` (the presets' models, full train splits): one or more sweep
    folders, e.g. the CPU one and the GPU one (bench/gpu/posthoc_vs_joint_full.sh), each with its own claims.
Writes Markdown and JSON with three tables:
  1. per dataset, rate and arm: the PSNR verdict against joint VQ at each scale, the differences, and whether they agree;
  2. the cells run on both devices (CPU and GPU), side by side, against the seed noise of their arm;
  3. compute: wall seconds of each arm's model (training, encoding, codebook fit, fine-tune), full scale.

    python examples/posthoc_vs_joint_scale.py runs/sweeps/posthoc-vs-joint-full [runs/sweeps/posthoc-vs-joint-full-gpu] \\
        --subset docs/results/posthoc-vs-joint/claims.json --out docs/results/posthoc-vs-joint-full/scale
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from posthoc_vq.experiments import current_claims
from posthoc_vq.experiments.store import ResultStore
from posthoc_vq.io import atomic_write, read_json, write_json
from posthoc_vq.run import Sweep

SHORT = {"non-inferior": "NI", "inferior": "INF", "inconclusive": "?", "insufficient evidence": "n<3", "invalid": "invalid"}
RATE_ORDER = {"10": 0, "20": 1, "40": 2, "grid": 3}


def verdicts(claims: dict[str, Any], metric: str = "psnr_db") -> dict[tuple[str, str, str], dict[str, Any]]:
    return {(c["slice"]["data.name"], c["slice"]["rate"], c["arm"].split("=", 1)[1]): c for c in claims["claims"] if c["metric"] == metric}


def done_rows(sweep: Path) -> list[dict[str, Any]]:
    store = ResultStore.open_existing(sweep)
    try:
        return [r for r in store.rows() if r["status"] == "done"]
    finally:
        store.close()


def convergence(sweep: Path) -> str:
    """The audit of the protocol: how many of the done cells' models (and fine-tunes) early-stopped, and the cells excluded."""
    rows = done_rows(sweep)
    trainings = {r["train_key"]: r["metrics"] for r in rows if not r["axes"]["arm"].startswith("finetune")}
    tuned = [r["metrics"] for r in rows if r["axes"]["arm"].startswith("finetune")]
    bad = [r for r in rows if r["metrics"].get("converged") is not True]
    return (f"{sum(m.get('converged') is True for m in trainings.values())} of {len(trainings)} trainings and "
            f"{sum(m.get('converged') is True for m in tuned)} of {len(tuned)} fine-tuned cells (source and fine-tune) converged by early stopping; "
            f"{len(bad)} cells excluded as not converged (their claims are invalid)")


def _means(c: dict[str, Any] | None) -> str:
    return "-" if c is None else f"{c['mean_arm']:.2f} / {c['mean_reference']:.2f}"


def _sd(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def _cell(c: dict[str, Any] | None) -> str:
    if c is None:
        return "not run"
    return f"{SHORT.get(c['verdict'], c['verdict'])} ({c['mean_arm'] - c['mean_reference']:+.2f}, n={c['n_arm']})"


def scale_rows(subset: dict[str, Any], full: list[dict[str, Any]]) -> list[dict[str, Any]]:
    small, big = verdicts(subset), {}
    for claims in full:  # a later sweep folder adds slices the earlier ones lack
        for key, c in verdicts(claims).items():
            big.setdefault(key, c)
    rows = []
    for key in sorted(set(small) | set(big), key=lambda k: (k[0], RATE_ORDER.get(k[1], 9), k[2])):
        s, f = small.get(key), big.get(key)
        agree = None if s is None or f is None or f["verdict"] in ("insufficient evidence", "invalid") else s["verdict"] == f["verdict"]
        rows.append({"dataset": key[0], "rate": key[1], "arm": key[2], "subset": s and {k: s[k] for k in ("verdict", "mean_arm", "mean_reference", "n_arm")},
                     "full": f and {k: f.get(k) for k in ("verdict", "mean_arm", "mean_reference", "n_arm", "ci_low", "ci_high")}, "agree": agree})
    return rows


def device_rows(sweeps: list[Path]) -> list[dict[str, Any]]:
    """Cells with the same axes done on different devices, with the seed noise (sd over seeds) of their arm and slice."""
    by_axes: dict[tuple, dict[str, float]] = defaultdict(dict)
    seeds: dict[tuple, list[float]] = defaultdict(list)
    for sweep in sweeps:
        for r in done_rows(sweep):
            a, m = r["axes"], r["metrics"]
            by_axes[(a["data.name"], a["rate"], a["arm"], a["seed"])][m.get("device") or "cpu"] = m["psnr_db"]
            seeds[(a["data.name"], a["rate"], a["arm"], m.get("device") or "cpu")].append(m["psnr_db"])
    out = []
    for key, devs in sorted(by_axes.items()):
        if len(devs) < 2:
            continue
        cpu = devs.get("cpu")
        other = next(d for d in devs if d != "cpu")
        noise = seeds[(*key[:3], "cpu")]
        out.append({"dataset": key[0], "rate": key[1], "arm": key[2], "seed": key[3], "cpu_psnr_db": cpu, "device": other, "device_psnr_db": devs[other],
                    "difference_db": devs[other] - cpu, "seed_sd_db": float(np.std(noise, ddof=1)) if len(noise) > 1 else None})
    return out


def compute_rows(sweeps: list[Path]) -> list[dict[str, Any]]:
    acc: dict[tuple, list[float]] = defaultdict(list)
    for sweep in sweeps:
        for r in done_rows(sweep):
            a, m = r["axes"], r["metrics"]
            if m.get("compute_seconds") is not None:
                acc[(a["data.name"], a["rate"], a["arm"], m.get("device") or "cpu")].append(m["compute_seconds"])
    return [{"dataset": k[0], "rate": k[1], "arm": k[2], "device": k[3], "n": len(v), "wall_seconds_mean": float(np.mean(v))}
            for k, v in sorted(acc.items(), key=lambda kv: (kv[0][0], RATE_ORDER.get(kv[0][1], 9), kv[0][2], kv[0][3]))]


def markdown(scale: list[dict[str, Any]], devices: list[dict[str, Any]], compute: list[dict[str, Any]], counts: list[str]) -> str:
    lines = ["# Post-hoc vs joint training: subset against full scale", "",
             "Verdict on test PSNR against joint VQ (non-inferiority margin 0.5 dB, paired by seed, Holm within each dataset x rate; "
             "NI non-inferior, INF inferior, ? inconclusive, n<3 too few seeds yet), with the difference of the means in dB. "
             "Subset: tiny family, 32-D latent, 8,000 train images. Full: the presets' models (128-D; cifar-10-jpeg [32, 64, 128]; "
             "grid: the spatial family), the full train splits, warm-up of 10 epochs.", "", *counts, "",
             "| dataset | rate | arm | subset | full scale | same verdict? | arm / joint VQ PSNR, subset | arm / joint VQ PSNR, full |",
             "|---|---|---|---|---|---|---|---|"]
    for r in scale:
        agree = {None: "-", True: "yes", False: "**no**"}[r["agree"]]
        lines.append(f"| {r['dataset']} | {r['rate']} | {r['arm']} | {_cell(r['subset'])} | {_cell(r['full'])} | {agree} | {_means(r['subset'])} | {_means(r['full'])} |")
    lines += ["", "## The same cells on two devices", ""]
    if devices:
        lines += ["| dataset | rate | arm | seed | CPU PSNR | device | its PSNR | difference | seed sd (CPU) |", "|---|---|---|---|---|---|---|---|---|"]
        lines += [f"| {d['dataset']} | {d['rate']} | {d['arm']} | {d['seed']} | {d['cpu_psnr_db']:.3f} | {d['device']} | {d['device_psnr_db']:.3f} | "
                  f"{d['difference_db']:+.3f} | {_sd(d['seed_sd_db'])} |" for d in devices]
    else:
        lines.append("No cell has run on a GPU yet (no GPU was lent to the sessions that ran this study).")
    lines += ["", "## Compute (wall seconds behind each cell's model)", "", "| dataset | rate | arm | device | cells | seconds (mean) |", "|---|---|---|---|---|---|"]
    lines += [f"| {c['dataset']} | {c['rate']} | {c['arm']} | {c['device']} | {c['n']} | {c['wall_seconds_mean']:.0f} |" for c in compute]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("sweeps", nargs="+", type=Path, help="full-scale sweep folders (CPU first)")
    p.add_argument("--subset", type=Path, default=Path("docs/results/posthoc-vs-joint/claims.json"))
    p.add_argument("--out", type=Path, default=Path("docs/results/posthoc-vs-joint-full/scale"), help="writes OUT.md and OUT.json")
    args = p.parse_args(argv)
    full = [current_claims(s) for s in args.sweeps]
    counts = [f"Full scale, {s}: {c['n_done']} of {c['n_cells']} cells done, {c.get('n_pending', 0)} not run yet, {c['n_failed']} failed; "
              f"{convergence(s)}." for s, c in zip(args.sweeps, full)]
    scale, devices, compute = scale_rows(read_json(args.subset, what="subset claims"), full), device_rows(args.sweeps), compute_rows(args.sweeps)
    write_json(args.out.with_suffix(".json"), {"scale": scale, "devices": devices, "compute": compute, "counts": counts})
    with atomic_write(args.out.with_suffix(".md")) as tmp:
        tmp.write_text(markdown(scale, devices, compute, counts))
    print(markdown(scale, devices, compute, counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
