"""The README's post-hoc vs joint-training table, from a `posthoc-vs-joint` or `posthoc-vs-joint-full` sweep.

Reads the sweep's results database (nothing is recomputed; the claims are judged from it as `ablate` judges
them, so a sweep run a slice at a time shows the cells done so far) and prints one Markdown row per dataset,
rate and arm: test PSNR and SSIM (mean and 95% t CI over seeds), nominal bits per image, the real rate of
its bitstreams (empirical prior: one file per image with its header, and all test images in one file; read
from the cell's evaluation when the cell predates that metric), the compute behind the model (mean wall
seconds and optimiser steps), and the verdict against joint VQ.

    posthoc-vq ablate posthoc-vs-joint --executor process --workers 2 --data-dir ../shared/datasets
    python examples/posthoc_vs_joint_table.py runs/sweeps/posthoc-vs-joint
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from posthoc_vq.experiments import current_claims, results_table
from posthoc_vq.experiments.store import ResultStore
from posthoc_vq.io import read_json
from posthoc_vq.metrics.intervals import mean_ci
from posthoc_vq.run import Sweep


def ci(summary: dict, digits: int) -> str:
    """mean [low, high], or the mean and n=1 while one seed is done."""
    if summary.get("low") is None:
        return f"{summary['mean']:.{digits}f} (n=1)"
    return f"{summary['mean']:.{digits}f} [{summary['low']:.{digits}f}, {summary['high']:.{digits}f}]"


def with_rates(row: dict) -> dict:
    """A done cell's metrics, with the real rates read from its evaluation file where the cell predates them."""
    m = dict(row["metrics"])
    eval_file = Path((row.get("artifacts") or {}).get("eval") or "")
    if m.get("container_bpp_empirical") is None and eval_file.is_file():  # absent when only the database was kept
        rate = read_json(row["artifacts"]["eval"], what="evaluation").get("rate") or {}
        empirical = (rate.get("priors") or {}).get("empirical") or {}
        m["real_bpp_empirical"], m["container_bpp_empirical"] = (empirical.get("real_bpp") or {}).get("mean"), empirical.get("container_bpp")
    return m


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("sweep", nargs="?", default="runs/sweeps/posthoc-vs-joint")
    args = p.parse_args(argv)
    sweep = Sweep(args.sweep)
    claims = current_claims(sweep.root)
    verdict = {(c["slice"].get("data.name"), c["slice"].get("rate"), c["arm"].split("=", 1)[1], c["metric"]): c for c in claims["claims"]}
    store = ResultStore.open_existing(sweep.root)
    try:
        rows = [r for r in store.rows() if r["status"] == "done"]
    finally:
        store.close()
    cells = defaultdict(list)
    for r in rows:
        a = r["axes"]
        cells[(a["data.name"], a["rate"], a["arm"])].append(with_rates(r))
    n_done = len(results_table(sweep.root, ["status=done"]))
    print(f"{n_done} of {claims['n_cells']} cells done; verdicts: " + ", ".join(f"{k} {v}" for k, v in claims["counts"].items() if v))
    print()
    print("| dataset | rate | arm | bits | real bpp: file / container | PSNR (dB) | SSIM | compute (s / steps) | vs joint-vq: PSNR | vs joint-vq: SSIM |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for key in sorted(cells, key=lambda k: (k[0], k[1].rjust(4), k[2])):
        ms = cells[key]
        psnr, ssim = mean_ci([m["psnr_db"] for m in ms]).to_dict(), mean_ci([m["ssim"] for m in ms]).to_dict()
        bits = ms[0].get("bits_per_image")
        secs = np.mean([m["compute_seconds"] for m in ms if m.get("compute_seconds") is not None] or [np.nan])
        steps = np.mean([m["optimizer_steps"] for m in ms if m.get("optimizer_steps") is not None] or [np.nan])
        v = [verdict.get((*key, metric)) for metric in ("psnr_db", "ssim")]
        cell = lambda c: "reference" if c is None and key[2] == "joint-vq" else (f"{c['verdict']} ({c['mean_arm'] - c['mean_reference']:+.2f})" if c else "-")  # noqa: E731
        real = [np.mean([m[k] for m in ms if m.get(k) is not None] or [np.nan]) for k in ("real_bpp_empirical", "container_bpp_empirical")]
        print(f"| {key[0]} | {key[1]} | {key[2]} | {bits:g} | {real[0]:.3f} / {real[1]:.3f} | {ci(psnr, 2)} | {ci(ssim, 3)} | {secs:.0f} / {steps:.0f} | {cell(v[0])} | {cell(v[1]).replace('+0.', '+.').replace('-0.', '-.')} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
