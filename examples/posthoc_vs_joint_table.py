"""The README's post-hoc vs joint-training table, from a finished `posthoc-vs-joint` sweep.

Reads the sweep's results database and claims.json (nothing is recomputed) and prints one Markdown row
per dataset, rate and arm: test PSNR and SSIM (mean and 95% t CI over seeds), bits per image, the
compute behind the model (mean wall seconds and optimiser steps), and the verdict against joint VQ.

    posthoc-vq ablate posthoc-vs-joint --executor process --workers 2 --data-dir ../shared/datasets
    python examples/posthoc_vs_joint_table.py runs/sweeps/posthoc-vs-joint
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict

import numpy as np

from posthoc_vq.experiments import results_table
from posthoc_vq.experiments.store import ResultStore
from posthoc_vq.io import read_json
from posthoc_vq.metrics.intervals import mean_ci
from posthoc_vq.run import Sweep


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("sweep", nargs="?", default="runs/sweeps/posthoc-vs-joint")
    args = p.parse_args(argv)
    sweep = Sweep(args.sweep)
    claims = read_json(sweep.claims_json, what="sweep claims")
    verdict = {(c["slice"].get("data.name"), c["slice"].get("rate"), c["arm"].split("=", 1)[1], c["metric"]): c for c in claims["claims"]}
    store = ResultStore.open_existing(sweep.root)
    try:
        rows = [r for r in store.rows() if r["status"] == "done"]
    finally:
        store.close()
    cells = defaultdict(list)
    for r in rows:
        a = r["axes"]
        cells[(a["data.name"], a["rate"], a["arm"])].append(r["metrics"])
    n_done = len(results_table(sweep.root, ["status=done"]))
    print(f"{n_done} of {claims['n_cells']} cells done; verdicts: " + ", ".join(f"{k} {v}" for k, v in claims["counts"].items() if v))
    print()
    print("| dataset | rate | arm | bits | PSNR (dB) | SSIM | compute (s / steps) | vs joint-vq: PSNR | vs joint-vq: SSIM |")
    print("|---|---|---|---|---|---|---|---|---|")
    for key in sorted(cells, key=lambda k: (k[0], k[1].rjust(4), k[2])):
        ms = cells[key]
        psnr, ssim = mean_ci([m["psnr_db"] for m in ms]).to_dict(), mean_ci([m["ssim"] for m in ms]).to_dict()
        bits = ms[0].get("bits_per_image")
        secs = np.mean([m["compute_seconds"] for m in ms if m.get("compute_seconds") is not None] or [np.nan])
        steps = np.mean([m["optimizer_steps"] for m in ms if m.get("optimizer_steps") is not None] or [np.nan])
        v = [verdict.get((*key, metric)) for metric in ("psnr_db", "ssim")]
        cell = lambda c: "reference" if c is None and key[2] == "joint-vq" else (f"{c['verdict']} ({c['mean_arm'] - c['mean_reference']:+.2f})" if c else "-")  # noqa: E731
        print(f"| {key[0]} | {key[1]} | {key[2]} | {bits:g} | {psnr['mean']:.2f} [{psnr['low']:.2f}, {psnr['high']:.2f}] | "
              f"{ssim['mean']:.3f} [{ssim['low']:.3f}, {ssim['high']:.3f}] | {secs:.0f} / {steps:.0f} | {cell(v[0])} | {cell(v[1]).replace('+0.', '+.').replace('-0.', '-.')} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
