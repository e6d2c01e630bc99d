"""CPU latency of the exported decoder and encoder: PyTorch eager vs ONNX Runtime, fp32 vs static INT8.

Measured in one run, on one trained model, with 2 threads everywhere (torch intra-op
threads and onnxruntime ``intra_op_num_threads``), batch 1 and batch 64:

* ``torch_eager``: the run's fp32 model called directly (``model.decode`` / ``model.encode``);
* ``ort_fp32``: the fp32 ONNX export (``posthoc-vq export``) in onnxruntime;
* ``ort_int8``: the static QDQ INT8 export (``posthoc-vq export --int8``) in onnxruntime;
* ``bound``: the network's FLOPs (``torch.utils.flop_counter``) divided by this machine's
  sgemm rate (2048 x 2048 matmul, 2 threads): the time a perfect fp32 kernel would take.

Each round runs every variant in a block of back-to-back calls (50 at batch 1, 5 at batch 64),
so one runtime's spinning idle threads do not fall inside another's timing; rounds interleave the
variants, and the median per-call time over the rounds is reported. Also measured, to say what INT8 costs: test PSNR of the whole pipeline
(encoder then decoder) of each variant on ``--quality-images`` test images.

    python bench/export_latency.py --run runs/fm-128 --data-dir ../shared/datasets

Without ``--run`` a Fashion-MNIST model is trained for one epoch into ``bench/results/latency-run``
(latency does not depend on how well a model is trained). Writes JSON (``--out``) and prints the ratios.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from common import blocked_call_seconds, machine, sgemm_gflops
from posthoc_vq.config import load_run_config
from posthoc_vq.export.onnx import export_run, onnx_session
from posthoc_vq.io import write_json
from posthoc_vq.latents import load_run_splits
from posthoc_vq.metrics.reconstruction import psnr
from posthoc_vq.provenance import provenance
from posthoc_vq.train import load_model, train

THREADS = 2


def flops(fn, arg: torch.Tensor) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        fn(arg)
    return float(counter.get_total_flops())


def ensure_run(run: str | None, data_dir: str | None) -> Path:
    if run:
        return Path(run)
    path = Path(__file__).parent / "results" / "latency-run"
    if not (path / "model.safetensors").exists():
        config = load_run_config("fashion-mnist", ["train.epochs=1", *([f"data.data_dir={data_dir}"] if data_dir else [])])
        train(config, path, progress=False)
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", default=None, help="trained run directory (default: a one-epoch Fashion-MNIST run)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--quality-images", type=int, default=2000)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "export_latency.json"))
    args = p.parse_args()

    torch.set_num_threads(THREADS)
    run = ensure_run(args.run, args.data_dir)
    model, _ = load_model(run)
    exported = export_run(run, run / "export", int8=True, data_dir=args.data_dir)
    files = {k: v["path"] for k, v in exported["files"].items()}
    sessions = {k: onnx_session(path, threads=THREADS) for k, path in files.items()}
    x_all = load_run_splits(run, args.data_dir).test.to_tensor()
    with torch.no_grad():
        z_all = model.encode(x_all[:64]).mu
    gflops = sgemm_gflops(threads=THREADS)

    results: dict[str, Any] = {}
    for part in ("decoder", "encoder"):
        for batch in (1, 64):
            arg = (z_all if part == "decoder" else x_all)[:batch].contiguous()
            feed_name, feed = ("z", arg.numpy()) if part == "decoder" else ("x", arg.numpy())
            eager = (lambda a=arg: model.decode(a)) if part == "decoder" else (lambda a=arg: model.encode(a))
            variants = {
                "torch_eager": lambda f=eager: torch.no_grad()(f)(),
                "ort_fp32": lambda s=sessions[part]: s.run(None, {feed_name: feed}),
                "ort_int8": lambda s=sessions[f"{part}_int8"]: s.run(None, {feed_name: feed}),
            }
            calls = 50 if batch == 1 else 5
            med, times = blocked_call_seconds(variants, calls, args.rounds)
            bound = flops(model.decode if part == "decoder" else model.encode, arg) / (gflops * 1e9)
            results[f"{part}_batch{batch}"] = {
                "median_ms": {k: 1e3 * v for k, v in med.items()},
                "bound_ms": 1e3 * bound,
                "ratios": {
                    "ort_fp32_over_torch_eager": med["ort_fp32"] / med["torch_eager"],
                    "ort_int8_over_ort_fp32": med["ort_int8"] / med["ort_fp32"],
                    "torch_eager_over_bound": med["torch_eager"] / bound,
                    "ort_fp32_over_bound": med["ort_fp32"] / bound,
                },
                "all_seconds": times,
            }

    # quality of each pipeline (encoder -> mu -> decoder) on test images, against ground truth
    xq = x_all[: args.quality_images]
    with torch.no_grad():
        eager_out = model.decode(model.encode(xq).mu)
    quality = {"torch_eager": float(psnr(xq, eager_out).mean())}
    for kind, suffix in (("ort_fp32", ""), ("ort_int8", "_int8")):
        mu = sessions[f"encoder{suffix}"].run(None, {"x": xq.numpy()})[0]
        out = torch.from_numpy(sessions[f"decoder{suffix}"].run(None, {"z": mu})[0])
        quality[kind] = float(psnr(xq, out).mean())

    record = {
        "benchmark": "export_latency", "run": str(run), "threads": THREADS, "rounds": args.rounds,
        "machine": machine(), "sgemm_gflops_2048": gflops,
        "file_bytes": {k: v["bytes"] for k, v in exported["files"].items()},
        "latency": results, "test_psnr_db": quality, "quality_images": len(xq),
        "provenance": provenance(seed=0),
    }
    write_json(args.out, record)
    print(f"sgemm {gflops:.1f} GFLOP/s ({THREADS} threads); median latency in ms over {args.rounds} interleaved rounds")
    print(f"{'':18} {'torch eager':>12} {'ORT fp32':>10} {'ORT int8':>10} {'bound':>8}   ORT/eager  int8/fp32  eager/bound")
    for key, r in results.items():
        m, q = r["median_ms"], r["ratios"]
        print(
            f"{key:18} {m['torch_eager']:12.3f} {m['ort_fp32']:10.3f} {m['ort_int8']:10.3f} {r['bound_ms']:8.3f}   "
            f"{q['ort_fp32_over_torch_eager']:9.2f}  {q['ort_int8_over_ort_fp32']:9.2f}  {q['torch_eager_over_bound']:11.1f}"
        )
    print("test PSNR (dB), encoder+decoder: " + ", ".join(f"{k} {v:.2f}" for k, v in quality.items()))
    print("file bytes: " + ", ".join(f"{k} {v:,}" for k, v in record["file_bytes"].items()))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
