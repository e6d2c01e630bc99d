"""Spatial latents as token grids: per-position post-hoc codebooks on Fashion-MNIST.

Trains (or reuses) the spatial-latent Fashion-MNIST VAE (an 8 x 7 x 7 latent grid,
preset ``fashion-mnist-spatial``), fits one k-means codebook per K shared by all 49
positions (K=16, 64, 256, 1024: 196 to 490 bits per image), evaluates each on the test
split, and draws test PSNR against bits per image next to the single-vector 128-D VAE's
curve (k-means and residual codebooks of ``runs/fm-128``, read from its ``eval/`` JSONs).

    python examples/spatial_latents.py --data-dir ../shared/datasets

Writes docs/spatial-rate-distortion.png and RUN/report/spatial-rate-distortion.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # the machine's cores may be shared

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from posthoc_vq.config import load_quantize_config, load_run_config  # noqa: E402
from posthoc_vq.evaluation import evaluate_codebook, evaluate_continuous  # noqa: E402
from posthoc_vq.io import atomic_write, read_json, write_json  # noqa: E402
from posthoc_vq.quantize.codebooks import fit_codebook_for_run  # noqa: E402
from posthoc_vq.run import Run  # noqa: E402
from posthoc_vq.train import SUMMARY_FILE, train  # noqa: E402

PRESET = "fashion-mnist-spatial"
BASELINE_CODEBOOKS = ["kmeans-K1024-mu-train", "residual-M2-K1024-mu-train", "residual-M4-K1024-mu-train"]


def ensure_trained(run: Path, data_dir: str) -> None:
    """Train the spatial preset into ``run``, continuing a partial run; a finished run is reused."""
    if (run / SUMMARY_FILE).exists():
        return
    print(f"training {PRESET} into {run} (resumable; ~20 min on 2 shared cores)", flush=True)
    train(load_run_config(PRESET, [f"data.data_dir={data_dir}"]), run, resume=(run / "config.json").exists())


def quantize_and_evaluate(run: Path, K: int, data_dir: str) -> dict:
    """Fit (once) the per-position k-means codebook of size K and evaluate it on the test split."""
    q = load_quantize_config(f"{PRESET}/quantize-euclidean", [f"quantize.K={K}", f"quantize.max_fit_vectors={256 * K}"])
    name = q.default_name()
    if name not in Run(run).codebook_names():
        print(f"fitting {name}", flush=True)
        fit_codebook_for_run(run, q, data_dir=data_dir)
    return evaluate_codebook(run, name, split="test", data_dir=data_dir).to_json()


def point(result: dict, key: str = "quantized") -> dict:
    p = result[key]["psnr_db"]
    out = {"psnr_db": p["mean"], "low": p["low"], "high": p["high"], "ssim": result[key]["ssim"]["mean"]}
    if key == "continuous":  # an fp32 latent: 32 bits per latent value
        shape = result["model"].get("latent_shape") or [result["model"]["latent_dim"]]
        out["fp32_bits"] = 32 * math.prod(shape)
    return out


def draw(spatial: list[dict], spatial_cont: dict, baseline: list[dict], baseline_cont: dict | None, out: Path) -> None:
    fig, ax = plt.subplots(figsize=(7.5, 4.6), dpi=130)
    for rows, cont, colour, label in ((spatial, spatial_cont, "tab:blue", "spatial 8x7x7 VAE, per-position k-means"),
                                      (baseline, baseline_cont, "tab:orange", "single-vector 128-D VAE: k-means, residual M=2, 4")):
        if rows:
            xs, ys = [r["bits_per_image"] for r in rows], [r["psnr_db"] for r in rows]
            err = [[r["psnr_db"] - r["low"] for r in rows], [r["high"] - r["psnr_db"] for r in rows]]
            ax.errorbar(xs, ys, yerr=err, marker="o", color=colour, capsize=3, label=label)
            for r in rows:
                ax.annotate(r["label"], (r["bits_per_image"], r["psnr_db"]), textcoords="offset points", xytext=(6, -12), fontsize=8, color=colour)
        if cont:
            ax.axhline(cont["psnr_db"], color=colour, linestyle="--", linewidth=1, label=f"{label.split(',')[0].split(':')[0]}: continuous ({cont['psnr_db']:.2f} dB)")
    ax.set_xscale("log", base=2)
    most = max([r["bits_per_image"] for r in spatial + baseline] or [1])
    ax.set_xlim(right=most * 2)  # room for the labels
    ax.set_xlabel("bits per image (log scale)")
    ax.set_ylabel("test PSNR (dB), 95% CI")
    ax.set_title("Fashion-MNIST: post-hoc codebooks, one vector vs a 7x7 token grid")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    with atomic_write(out) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", default="runs/fm-spatial")
    p.add_argument("--baseline", default="runs/fm-128", help="single-vector run with evaluated codebooks (eval/*-test.json)")
    p.add_argument("--data-dir", default="../shared/datasets")
    p.add_argument("--K", type=int, nargs="+", default=[16, 64, 256, 1024], help="codebook sizes, one codebook shared by all positions")
    p.add_argument("--figure", default="docs/spatial-rate-distortion.png")
    args = p.parse_args()
    run, base = Path(args.run), Path(args.baseline)

    ensure_trained(run, args.data_dir)
    cont = point(evaluate_continuous(run, split="test", data_dir=args.data_dir).to_json(), "continuous")
    spatial = []
    for K in args.K:
        r = quantize_and_evaluate(run, K, args.data_dir)
        u = r["usage"]["test"]
        spatial.append({**point(r), "label": f"K={K}", "codebook": r["codebook"], "K": K, "bits_per_image": r["bits_per_image"],
                        "tokens_per_image": r["tokens_per_image"], "penalty_psnr_db": r["penalty"]["psnr_db"]["mean"],
                        "used_codes": u["used"], "token_entropy_bits": u["entropy_bits"], "n_fit": r["n_fit"]})

    baseline, base_cont = [], None
    if (base / "eval" / "continuous-test.json").exists():
        base_cont = point(read_json(base / "eval" / "continuous-test.json", what="evaluation result"), "continuous")
        for name in BASELINE_CODEBOOKS:
            path = base / "eval" / f"{name}-test.json"
            if path.exists():
                r = read_json(path, what="evaluation result")
                label = "k-means" if r["method"] == "kmeans" else "residual M=" + name.split("-")[1][1:]  # residual-M2-K1024-...
                baseline.append({**point(r), "label": label, "codebook": name, "bits_per_image": r["bits_per_image"]})
    else:
        print(f"no evaluated baseline in {base}: run examples/fashion_mnist_study.py first to draw it", flush=True)

    draw(spatial, cont, baseline, base_cont, Path(args.figure))
    summary = {"spatial_run": str(run), "spatial_continuous": cont, "spatial": spatial, "baseline_run": str(base), "baseline_continuous": base_cont, "baseline": baseline}
    write_json(run / "report" / "spatial-rate-distortion.json", summary)

    print(f"\n{'model':<28}{'bits/image':>11}{'PSNR (dB)':>11}{'95% CI':>18}{'SSIM':>8}")
    rows = [("spatial continuous (fp32)", cont["fp32_bits"], cont)] + [(f"spatial {r['label']}", r["bits_per_image"], r) for r in spatial]
    if base_cont:
        rows += [("128-D continuous (fp32)", base_cont["fp32_bits"], base_cont)] + [(f"128-D {r['label']}", r["bits_per_image"], r) for r in baseline]
    for label, bits, r in rows:
        ci = f"[{r['low']:.2f}, {r['high']:.2f}]"
        print(f"{label:<28}{bits:>11.0f}{r['psnr_db']:>11.2f}{ci:>18}{r['ssim']:>8.3f}")
    print(f"\nwrote {args.figure} and {run / 'report' / 'spatial-rate-distortion.json'}")
    print(json.dumps({r["label"]: round(r["psnr_db"], 2) for r in spatial}))


if __name__ == "__main__":
    main()
