"""The cross-dataset table, in the Fashion-MNIST study's own layout, from a finished `cross-dataset` sweep.

Reads the sweep's results database, its claims and each cell's stored evaluation and codebook records
(nothing is recomputed). One row per dataset and arm: test PSNR and SSIM (mean and 95% t CI over
seeds), bits per image, code usage, dead codes and entropy on the test split (means over seeds; for
residual codebooks summed over the stages, out of M x K codes), the fitted kNN graph's nodes, edges
and components (graph codebooks), and the verdict against k-means. Writes table.md and a tidy
table.csv (one row per dataset, arm and measure: mean, ci_low, ci_high, n) into --out, and with
--figure a PNG: one panel per dataset, each method's test PSNR (mean and 95% CI over seeds) against
its continuous model's (dashed line and band).

    posthoc-vq ablate cross-dataset --executor process --workers 2 --data-dir ../shared/datasets
    python examples/cross_dataset_table.py runs/sweeps/cross-dataset --out docs/results/cross-dataset --figure docs/cross-dataset.png
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from posthoc_vq.experiments.store import ResultStore
from posthoc_vq.io import read_json, write_text
from posthoc_vq.metrics.intervals import mean_ci
from posthoc_vq.run import Run, Sweep

DATASETS = ["digits", "mnist", "fashion-mnist", "cifar-10-jpeg"]
ARMS = ["continuous", "kmeans", "geodesic", "hybrid", "residual-M2", "residual-M4", "class-conditional",
        "geodesic-k10", "geodesic-k25", "geodesic-k100", "geodesic-auto"]


def usage(evaluation: dict, split: str) -> dict[str, float] | None:
    """Used codes, dead codes, entropy (bits) and code count on ``split``; residual stages summed."""
    u = (evaluation.get("usage") or {}).get(split)
    if not u:
        return None
    stages = u.get("stages") or [u]
    return {"used": sum(s["used"] for s in stages), "dead": sum(s["dead"] for s in stages),
            "entropy_bits": sum(s["entropy_bits"] for s in stages), "n_codes": sum(s["n_codes"] for s in stages)}


def cell_record(row: dict, split: str) -> dict:
    """A done cell's metrics plus its codebook's usage on ``split`` and its kNN graph."""
    m, art = row["metrics"], row["artifacts"]
    out = {"psnr_db": m["psnr_db"], "ssim": m["ssim"], "bits": m.get("bits_per_image"), "converged": m.get("converged") is True}
    if art.get("codebook"):
        out["usage"] = usage(read_json(art["eval"], what="evaluation"), split)
        record = read_json(Run(art["run_dir"]).codebook_files(art["codebook"])[1], what="codebook record")
        graph = record.get("graph") or {}
        out["graph"] = {k: graph[k] for k in ("nodes", "edges", "components") if k in graph} or None
        out["n_neighbors"] = graph.get("n_neighbors", (record.get("quantize") or {}).get("n_neighbors"))
    return out


def ci_text(values: list[float], digits: int) -> str:
    if len(values) < 2:
        return f"{values[0]:.{digits}f}" if values else "-"
    c = mean_ci(values).to_dict()
    return f"{c['mean']:.{digits}f} [{c['low']:.{digits}f}, {c['high']:.{digits}f}]"


def draw(cells: dict[tuple[str, str], list[dict]], datasets: list[str], path: Path) -> Path:
    """One panel per dataset: PSNR mean and 95% CI of each codebook, the continuous model as a dashed line and band."""
    from posthoc_vq.report.figures import pyplot, save_png

    plt = pyplot()
    fig, axes = plt.subplots(1, len(datasets), figsize=(4.6 * len(datasets), 4.4), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        arms = [a for a in ARMS if (dataset, a) in cells and a != "continuous"]
        cont = mean_ci([r["psnr_db"] for r in cells[(dataset, "continuous")]]).to_dict() if (dataset, "continuous") in cells else None
        if cont:
            ax.axhspan(cont["low"], cont["high"], color="gray", alpha=0.2)
            ax.axhline(cont["mean"], ls="--", color="gray", label=f"continuous {cont['mean']:.2f} dB")
        for i, arm in enumerate(arms):
            c = mean_ci([r["psnr_db"] for r in cells[(dataset, arm)]]).to_dict()
            colour = "C0" if arm == "kmeans" else "C3" if arm.startswith("residual") else "C2" if arm.startswith(("geodesic", "hybrid")) else "C1"
            ax.errorbar(i, c["mean"], yerr=[[c["mean"] - c["low"]], [c["high"] - c["mean"]]], fmt="o", color=colour, capsize=3)
        bits = [cells[(dataset, a)][0]["bits"] for a in arms]
        ax.set_xticks(range(len(arms)), [f"{a} ({b:.3g} b)" for a, b in zip(arms, bits)], rotation=60, ha="right", fontsize=8)
        ax.set(ylabel="test PSNR (dB)", title=f"{dataset} (3 seeds, 95% CI)")
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=8, loc="center right")
    fig.suptitle("post-hoc codebooks on four datasets: every codebook far below its continuous model; k-means >= geodesic on each")
    fig.tight_layout()
    return save_png(fig, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("sweep", nargs="?", default="runs/sweeps/cross-dataset")
    p.add_argument("--out", default=None, help="folder for table.md and table.csv (default: print only)")
    p.add_argument("--figure", default=None, help="PNG path for the per-dataset figure")
    args = p.parse_args(argv)
    sweep = Sweep(args.sweep)
    spec = read_json(sweep.spec_file, what="sweep spec")
    claims = read_json(sweep.claims_json, what="sweep claims")
    verdict = {(c["slice"].get("data.name"), c["arm"].split("=", 1)[1], c["metric"]): c for c in claims["claims"]}
    store = ResultStore.open_existing(sweep.root)
    try:
        rows = [r for r in store.rows() if r["status"] == "done"]
    finally:
        store.close()
    cells: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in rows:
        cells[(r["axes"]["data.name"], r["axes"]["arm"])].append(cell_record(r, spec["split"]))

    md = io.StringIO()
    tidy = io.StringIO()
    writer = csv.writer(tidy, lineterminator="\n")
    writer.writerow(["dataset", "arm", "measure", "mean", "ci_low", "ci_high", "n"])
    md.write(f"{len(rows)} of {claims['n_cells']} cells done; verdicts: " + ", ".join(f"{k} {v}" for k, v in claims["counts"].items() if v) + "\n\n")
    md.write("| dataset | method | bits | PSNR (dB) | SSIM | code usage | dead codes | entropy (bits) | graph nodes / edges / components | vs k-means: PSNR | vs k-means: SSIM |\n")
    md.write("|---|---|---|---|---|---|---|---|---|---|---|\n")
    order = [d for d in DATASETS if any(k[0] == d for k in cells)] + sorted({k[0] for k in cells} - set(DATASETS))
    for dataset in order:
        for arm in [a for a in ARMS if (dataset, a) in cells] + sorted({k[1] for k in cells if k[0] == dataset} - set(ARMS)):
            recs = cells[(dataset, arm)]
            for measure in ("psnr_db", "ssim"):
                vals = [r[measure] for r in recs]
                c = mean_ci(vals).to_dict() if len(vals) >= 2 else {"mean": vals[0], "low": "", "high": ""}
                writer.writerow([dataset, arm, measure, c["mean"], c["low"], c["high"], len(vals)])
            u = [r["usage"] for r in recs if r.get("usage")]
            for key in ("used", "dead", "entropy_bits"):
                if u:
                    writer.writerow([dataset, arm, key, float(np.mean([x[key] for x in u])), "", "", len(u)])
            g = [r["graph"] for r in recs if r.get("graph")]
            for key in ("nodes", "edges", "components"):
                if g:
                    writer.writerow([dataset, arm, f"graph_{key}", float(np.mean([x[key] for x in g])), "", "", len(g)])
            bits = recs[0]["bits"]
            usage_txt = f"{np.mean([x['used'] for x in u]):.0f}/{u[0]['n_codes']}" if u else "-"
            dead_txt = f"{np.mean([x['dead'] for x in u]):.0f}" if u else "-"
            ent_txt = f"{np.mean([x['entropy_bits'] for x in u]):.2f}" if u else "-"
            graph_txt = (f"{np.mean([x['nodes'] for x in g]):,.0f} / {np.mean([x['edges'] for x in g]):,.0f} / "
                         f"{'-'.join(str(v) for v in sorted({x['components'] for x in g}))}") if g else "-"
            v = [verdict.get((dataset, arm, metric)) for metric in ("psnr_db", "ssim")]
            vs = lambda c, d: "reference" if arm == "kmeans" else (f"{c['verdict']} ({c['mean_arm'] - c['mean_reference']:+.{d}f})" if c else "-")  # noqa: E731
            n_conv = sum(r["converged"] for r in recs)
            name = arm if n_conv == len(recs) else f"{arm} ({len(recs) - n_conv} not converged)"
            md.write(f"| {dataset} | {name} | {'fp32' if bits is None else f'{bits:.2f}'.rstrip('0').rstrip('.')} | "
                     f"{ci_text([r['psnr_db'] for r in recs], 2)} | {ci_text([r['ssim'] for r in recs], 3)} | {usage_txt} | {dead_txt} | {ent_txt} | "
                     f"{graph_txt} | {vs(v[0], 2)} | {vs(v[1], 3)} |\n")
    print(md.getvalue(), end="")
    if args.out:
        out = Path(args.out)
        write_text(out / "table.md", md.getvalue())
        write_text(out / "table.csv", tidy.getvalue())
        print(f"wrote {out / 'table.md'} and {out / 'table.csv'}")
    if args.figure:
        print(f"wrote {draw(cells, order, Path(args.figure))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
