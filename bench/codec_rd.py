"""Rate-distortion of post-hoc codebooks as a real codec, beside trained VQ and JPEG / WebP / AVIF / JPEG XL, with BD-rate.

On the cifar-10-jpeg test split (10,000 images of 32 x 32 x 3), with the token-grid preset
``cifar-10-jpeg-spatial`` (8 x 8 grid of 8-D tokens):

* post-hoc codebooks of the continuous run (``--run``): k-means K = 16, 64, 256, 1024 (one stage), residual
  K = 1024 with M = 1, 2, 3, 4 stages, random-prior K = 1024, geodesic K = 1024 (the preset's HNSW sample);
* the trained VQ run (``--vq-run``: the same preset with ``model.quantizer=vq``, K = 1024), coded by the same code;
* the standard codecs at their quality ladders (:mod:`posthoc_vq.evaluation.standard_codecs`).

Each codebook is evaluated (``posthoc-vq evaluate``), so every rate is real: each image's own file, bytes x 8 /
(H x W), header included, under the best prior (context on token grids); the container (one file for the 10,000
images) beside it. Then ``posthoc-vq codecs RUN --with VQ_RUN`` (:func:`posthoc_vq.api.compare_codecs`): BD-rate and
BD-PSNR (PCHIP, Akima) of each post-hoc curve against each standard codec, paired bootstrap 95% CIs over images.

cifar-10-jpeg is CIFAR-10 re-encoded as JPEG at quality 75: the ground truth carries JPEG's artifacts, which
advantages JPEG.

    python bench/codec_rd.py --data-dir ../shared/datasets      # trains the two runs if missing (resumable)

Resumable: runs resume; codebooks, evaluations and the standard-codec ladder already made are reused. Writes
``--out`` (JSON, committed: the figure's data) and ``--figure``, and prints the points and the BD table.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import torch

from common import machine
from posthoc_vq.api import compare_codecs
from posthoc_vq.config import QuantizeConfig
from posthoc_vq.evaluation.codebook import evaluate_codebook
from posthoc_vq.evaluation.reconstruction import evaluate_continuous, split_images
from posthoc_vq.evaluation.standard_codecs import codec_ladder
from posthoc_vq.io import read_json, write_json
from posthoc_vq.latents import load_run_splits
from posthoc_vq.progress import progress_bars
from posthoc_vq.quantize.codebooks import fit_codebook_for_run
from posthoc_vq.report.codec_figure import bd_markdown, codec_rd_figure
from posthoc_vq.run import Run

PRESET = "cifar-10-jpeg-spatial"
FIT = 262144  # vectors sampled for the k-means fits (the preset's max_fit_vectors)
CODEBOOKS = {
    **{f"kmeans-K{k}": dict(method="kmeans", K=k, max_fit_vectors=FIT) for k in (16, 64, 256, 1024)},
    **{f"residual-M{m}-K1024": dict(method="residual", K=1024, n_stages=m, max_fit_vectors=FIT) for m in (1, 2, 3, 4)},
    "random-prior-K1024": dict(method="random-prior", K=1024),
    "geodesic-K1024-k50": dict(method="geodesic", K=1024, max_fit_vectors=50000, n_neighbors=50, graph="hnsw"),
}
NOTE = ("cifar-10-jpeg is CIFAR-10 re-encoded as JPEG at quality 75: the ground truth carries JPEG's artifacts, which advantages JPEG. "
        "bpp = each image's own file bytes x 8 / (32 x 32), header included, for every codec; on 32 x 32 images headers are a large share "
        "(posthoc-vq 90 bytes, JPEG about 290, AVIF about 275); the posthoc-vq container (one file for the split) shows the rate without them.")


def ensure_run(path: Path, overrides: list[str], data_dir: str) -> None:
    """Train (or resume) a run of the preset with the CLI, in a child process."""
    if (path / "train_summary.json").exists():
        return
    cmd = [sys.executable, "-m", "posthoc_vq.cli", "train", "--out", str(path), "--data-dir", data_dir]
    cmd += ["--resume"] if path.exists() else ["--preset", PRESET] + [a for o in overrides for a in ("--set", o)]
    subprocess.run(cmd, check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default="../shared/datasets")
    ap.add_argument("--run", default="runs/codec/c10s")
    ap.add_argument("--vq-run", default="runs/codec/c10s-vq")
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--ladder", default="runs/codec/standard-cifar-10-jpeg-test.json", help="cache of the standard codecs' ladder")
    ap.add_argument("--out", default="bench/results/codec_rd_cifar10jpeg.json")
    ap.add_argument("--figure", default="docs/codec-rate-distortion-cifar-10-jpeg.png")
    args = ap.parse_args()
    torch.set_num_threads(2)
    run, vq_run = Path(args.run), Path(args.vq_run)
    tic, timing = time.perf_counter(), {}
    ensure_run(run, [], args.data_dir)
    ensure_run(vq_run, ["model.quantizer=vq", "model.codebook_size=1024"], args.data_dir)
    with progress_bars() as progress:
        have = set(Run.open(run).codebook_names())
        for name, settings in CODEBOOKS.items():
            if name not in have:
                t = time.perf_counter()
                fit_codebook_for_run(run, QuantizeConfig(**settings, name=name), data_dir=args.data_dir, progress=progress)
                timing[f"fit {name}"] = time.perf_counter() - t
            if not Run.open(run).eval_file("test", codebook=name).exists() or "rate" not in read_json(Run.open(run).eval_file("test", codebook=name)):
                t = time.perf_counter()
                evaluate_codebook(run, name, data_dir=args.data_dir, progress=progress)
                timing[f"evaluate {name}"] = time.perf_counter() - t
        for r in (run, vq_run):
            f = Run.open(r).eval_file("test")
            if not f.exists() or (r == vq_run and "rate" not in read_json(f)):
                evaluate_continuous(r, data_dir=args.data_dir, progress=progress)
        ladder_path = Path(args.ladder)
        if not ladder_path.exists():
            t = time.perf_counter()
            x = split_images(load_run_splits(run, args.data_dir), "test")
            write_json(ladder_path, codec_ladder(x, progress=progress))
            timing["standard codecs (10,000 images, 4 ladders)"] = time.perf_counter() - t
        result = compare_codecs(run, with_runs=[vq_run], ladder=read_json(ladder_path), n_boot=args.n_boot, data_dir=args.data_dir)
    cont = read_json(Run.open(run).eval_file("test"))["continuous"]["psnr_db"]["mean"]
    title = f"cifar-10-jpeg test ({result['n_images']:,} images, 32x32): post-hoc codebooks as a codec vs standard codecs"
    codec_rd_figure(result["posthoc"], result["standard"], Path(args.figure), title=title, continuous_psnr_db=cont,
                    footnote="cifar-10-jpeg was JPEG-compressed at quality 75 before: JPEG is advantaged.")
    out = {k: v for k, v in result.items() if k != "ladder"} | {
        "benchmark": "codec_rd", "note": NOTE, "continuous_psnr_db": cont, "runs": {"continuous": str(run), "vq": str(vq_run)},
        "standard_settings": {c: s["settings"] for c, s in result["ladder"]["codecs"].items()},
        "timing_seconds": timing | {"total": time.perf_counter() - tic}, "machine": machine(), "command": " ".join(sys.argv),
    }
    write_json(Path(args.out), out)
    print(f"continuous VAE {cont:.2f} dB")
    for k, s in result["posthoc"].items():
        for n, b, c, p in zip(s["names"], s["bpp"], s["container_bpp"], s["psnr_db"]):
            print(f"  {k:14s} {n:24s} {b:6.3f} bpp own file, {c:6.3f} container ({s['prior']}), {p:6.2f} dB")
    for c, s in result["standard"].items():
        print(f"  {c:6s} " + ", ".join(f"q{q}: {b:.2f} bpp {p:.2f} dB" for q, b, p in zip(s["qualities"], s["bpp"], s["psnr_db"])))
    print(bd_markdown(result["bd"]))


if __name__ == "__main__":
    main()
