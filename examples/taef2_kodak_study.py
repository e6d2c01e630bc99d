"""The pretrained-autoencoder study: taef2 (the FLUX.2 latent space) as a post-hoc tokenizer, fitted on BSDS500, tested on Kodak.

From an empty folder, with the CLI only:

1. ``import taef2``: the pretrained network as a run (data ``bsds500-kodak``: fit on the 450 BSDS500 train photos,
   about 1.08 M latent tokens of 32 values at 480x320, test on the 24 Kodak images at full 768x512 resolution);
2. ``evaluate``: the continuous model's Kodak quality (PSNR, SSIM, MS-SSIM per image, 95% CIs);
3. ``quantize`` + ``evaluate --codebook``: k-means K = 256 .. 65,536, residual k-means (K = 256 per stage, 2, 4 and 8 stages)
   and a random-prior codebook; each evaluation holds the real rate (bitstream files, bytes x 8, header included);
4. ``compress-weights --bits 8 / 4``: taef2's packed weights, file sizes and quality change on Kodak;
5. ``codecs``: JPEG, WebP, AVIF and JPEG XL on the same Kodak images, the RD figure and BD-rate against each;
6. the per-channel diagnostic (latent spread, effective dimension, which channels carry the quantization error).

Budget: the study must finish in 30 minutes on 2 cores. Every k-means fit therefore stops after 30 Lloyd iterations
(per stage for residual; K <= 4,096 on all 1.08 M tokens), and K = 16,384 and 65,536 are fitted on a random 262,144 of
them in 15 iterations (then all tokens are assigned). The per-codebook evaluations decode the continuous output once
(cached beside the latents).

Geodesic codebooks are left out at this scale: the exact kNN graph of 1.08 M tokens (k = 50) and the shortest paths
from K seeds over it take hours on two cores (the 60,000-token Fashion-MNIST graph already takes minutes).

Every step is timed; ``--out`` gets ``study.json`` (steps, seconds, the summary table) and the figure.

    python examples/taef2_kodak_study.py --run runs/taef2-study --weights ../shared/models/taef2 --data-dir ../shared/datasets
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from posthoc_vq.evaluation.channels import channel_diagnostic
from posthoc_vq.io import read_json, write_json
from posthoc_vq.provenance import provenance
from posthoc_vq.run import Run
from study_steps import Steps  # examples/ is on sys.path when run as a script

SUBSAMPLE = 262_144  # K >= 16,384 is fitted on this many of the 1.08 M tokens (all are still assigned)
ITERS = 30  # Lloyd iterations per fit (per stage for residual): the study's 30-minute budget (see the docstring)
CAP = ["--set", f"quantize.max_iter={ITERS}"]
SUB = ["--set", f"quantize.max_fit_vectors={SUBSAMPLE}", "--set", "quantize.max_iter=15"]
CODEBOOKS = [
    ("kmeans-K256", ["--method", "kmeans", "--K", "256", *CAP]),
    ("kmeans-K1024", ["--method", "kmeans", "--K", "1024", *CAP]),
    ("kmeans-K4096", ["--method", "kmeans", "--K", "4096", *CAP]),
    ("kmeans-K16384", ["--method", "kmeans", "--K", "16384", *SUB]),
    ("kmeans-K65536", ["--method", "kmeans", "--K", "65536", *SUB]),
    ("residual-M2-K256", ["--method", "residual", "--K", "256", "--n-stages", "2", *CAP]),
    ("residual-M4-K256", ["--method", "residual", "--K", "256", "--n-stages", "4", *CAP]),
    ("residual-M8-K256", ["--method", "residual", "--K", "256", "--n-stages", "8", *CAP]),
    ("random-prior-K4096", ["--method", "random-prior", "--K", "4096"]),
]
WEIGHTS = [("int8", "8"), ("int4", "4")]
#: the standard codecs' ladders on Kodak: 6 points each over the tokens' range (about 0.1 to 1 bpp), JPEG down to quality 1
#: so that its curve meets the codebooks' qualities (the default ladders were tuned on 32x32 images and start at 23.9 dB here)
LADDERS = {"jpeg": "1,3,5,10,20,35", "webp": "0,5,10,25,40,55", "avif": "0,10,20,30,45,60", "jxl": "1,10,25,40,55,70"}


def summary_rows(run: Run) -> list[dict]:
    """One row per evaluated codebook (and the continuous model, the packed weights): rate and quality on Kodak."""
    rows = []
    cont = read_json(run.eval_file("test"))
    q = cont["continuous"]
    rows.append({"what": "continuous (no quantization)", "real_bpp": None, "psnr_db": q["psnr_db"]["mean"], "ssim": q["ssim"]["mean"],
                 "ms_ssim": (q.get("ms_ssim") or {}).get("mean")})
    for name, path in sorted(run.codebook_eval_files("test").items()):
        r = read_json(path)
        rate = r.get("rate") or {}
        prior = (rate.get("priors") or {}).get("context") or (rate.get("priors") or {}).get("empirical") or {}
        qq = r["quantized"]
        rows.append({"what": name, "nominal_bpp": rate.get("nominal_bpp"), "real_bpp": (prior.get("real_bpp") or {}).get("mean"),
                     "psnr_db": qq["psnr_db"]["mean"], "psnr_ci": [qq["psnr_db"]["low"], qq["psnr_db"]["high"]], "ssim": qq["ssim"]["mean"],
                     "ms_ssim": (qq.get("ms_ssim") or {}).get("mean"), "penalty_db": r["psnr_change_db"]["mean"] if "psnr_change_db" in r else None})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", default="runs/taef2-study")
    p.add_argument("--weights", default="../shared/models/taef2")
    p.add_argument("--data-dir", default="../shared/datasets")
    p.add_argument("--out", default="docs/results/taef2-kodak", help="where study.json, the codec table and the figure are copied")
    args = p.parse_args()
    run_dir, data = Path(args.run), ["--data-dir", args.data_dir]
    steps = Steps()
    if not (run_dir / "config.json").exists():
        steps.run("import", ["import", "taef2", "--weights", args.weights, "--out", str(run_dir), *data])
    else:
        steps.skip("import", f"{run_dir} exists")
    run = Run.open(run_dir)
    steps.run("evaluate continuous", ["evaluate", str(run_dir), *data, "--metrics", "psnr,ssim"])
    for name, argv in CODEBOOKS:
        if name not in run.codebook_names():
            steps.run(f"quantize {name}", ["quantize", str(run_dir), *argv, "--name", name, *data])
        else:
            steps.skip(f"quantize {name}", "fitted before")
        steps.run(f"evaluate {name}", ["evaluate", str(run_dir), "--codebook", name, *data])
    for name, bits in WEIGHTS:
        steps.run(f"compress-weights {name}", ["compress-weights", str(run_dir), "--bits", bits, "--name", name, *data])
    steps.run("codecs", ["codecs", str(run_dir), *[a for c, q in LADDERS.items() for a in ("--qualities", f"{c}={q}")], *data])
    channels = steps.timed("channels", lambda: channel_diagnostic(run, [n for n, _ in CODEBOOKS], split="test"))
    total = time.perf_counter() - steps.start
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for suffix in ("json", "md", "png"):
        shutil.copyfile(run.report_dir / f"codecs-test.{suffix}", out / f"codecs-kodak.{suffix}")
    weights = {name: {k: read_json(f).get(k) for k in ("size", "quantized", "psnr_change_db", "penalty")}
               for name, _ in WEIGHTS for f in [run.eval_file("test", weights=name)] if f.exists()}
    result = {"total_seconds": total, "complete": not any("reused" in r for r in steps.rows), "steps": steps.rows,
              "summary": summary_rows(run), "weights": weights, "channels": channels, "provenance": provenance()}
    write_json(out / "study.json", result)
    print(f"\n{'stage':<40} {'seconds':>9}")
    for row in steps.rows:
        print(f"{row['stage']:<40} {row['seconds']:9.1f}" + (f"  (reused: {row['reused']})" if "reused" in row else ""))
    print(f"{'total (end to end)':<40} {total:9.1f}  = {total / 60:.1f} min")
    print(f"wrote {out / 'study.json'} and the codec table and figure beside it")


if __name__ == "__main__":
    main()
