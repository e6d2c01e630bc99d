"""CPU decode latency of an exported codec (:func:`posthoc_vq.export.codec.export_codec`): per image, batch 1 and batch 64.

Measured in one run, on one trained model and codebook, with 2 threads everywhere (torch intra-op threads and
onnxruntime ``intra_op_num_threads``):

* ``torch_eager``: the codec's decoder graph in PyTorch (``model.decode`` of the latents, images in [0, 1]);
* ``ort_fp32``: the exported ``decoder.onnx`` in onnxruntime;
* ``ort_int8_qdq`` / ``ort_int8_qoperator``: both INT8 candidates the export weighs (QDQ; QOperator with QLinearConv /
  QGemm), made here again from the same fp32 graph and the same calibration latents; ``kept`` says which one
  the export kept in ``decoder-int8.onnx``;
* ``bound``: the decoder's FLOPs (``torch.utils.flop_counter``) divided by this machine's sgemm rate (2048 x 2048
  matmul, 2 threads): the time a perfect fp32 kernel would take;
* ``runtime_file_fp32`` / ``runtime_file_int8``: the whole torch-free path, a file's bytes to images
  (:meth:`CodecRuntime.decompress <posthoc_vq.codec.runtime.CodecRuntime.decompress>`: header, ANS decoding with the
  empirical prior, stage sums, decoder), a one-image file at batch 1 and a 64-image container at batch 64.

The decoder inputs are the codebook latents of test images' codes. Each round runs every variant in a block of
back-to-back calls (50 at batch 1, 5 at batch 64); rounds interleave the variants; the median per-call time over
the rounds is reported, and per image (divided by the batch).

    python bench/codec_latency.py --run runs/fm-128 --codebook kmeans-K1024-mu-train --data-dir ../shared/datasets

Without ``--run`` a digits VAE is trained for a few epochs into ``runs/bench-codec-latency`` with a k-means codebook
(K = 64). Writes JSON (``--out``) and prints the ratios.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common import blocked_call_seconds, machine, sgemm_gflops
from export_latency import flops
from posthoc_vq.codec.runtime import CodecRuntime, stage_sum_latents
from posthoc_vq.config import QuantizeConfig, load_run_config
from posthoc_vq.evaluation.bitstreams import open_codec
from posthoc_vq.evaluation.reconstruction import split_images
from posthoc_vq.export.codec import codec_decoder_graph, export_codec
from posthoc_vq.export.onnx import onnx_session, quantize_onnx_int8
from posthoc_vq.io import write_json
from posthoc_vq.latents import load_run_splits
from posthoc_vq.provenance import provenance
from posthoc_vq.quantize.codebooks import fit_codebook_for_run
from posthoc_vq.train import train

THREADS = 2
DEFAULT_RUN = Path(__file__).resolve().parents[1] / "runs" / "bench-codec-latency"


def ensure_run(run: str | None, codebook: str | None) -> tuple[Path, str]:
    if run:
        if not codebook:
            raise SystemExit("--codebook is needed with --run")
        return Path(run), codebook
    path = DEFAULT_RUN
    if not (path / "model.safetensors").exists():
        train(load_run_config("digits", ["train.epochs=10", "train.early_stopping=false"]), path, progress=False)
    name = codebook or fit_codebook_for_run(path, QuantizeConfig(method="kmeans", K=64))[0]
    return path, name


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", default=None, help="trained run directory (default: a digits run with a k-means codebook)")
    p.add_argument("--codebook", default=None, help="codebook name (needed with --run)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "codec_latency.json"))
    args = p.parse_args()

    torch.set_num_threads(THREADS)
    run, name = ensure_run(args.run, args.codebook)
    manifest = export_codec(run, name, data_dir=args.data_dir)
    folder = run / "export" / f"codec-{name}"
    codec = open_codec(run, name)
    splits = load_run_splits(run, args.data_dir)
    x = split_images(splits, "test")
    stages = CodecRuntime(folder).stages
    z_all = stage_sum_latents(stages, codec.codes(x[:64]), codec.latent_shape)
    train_x = split_images(splits, "train")
    pick = np.sort(np.random.default_rng(0).choice(len(train_x), size=min(512, len(train_x)), replace=False))
    z_cal = stage_sum_latents(stages, codec.codes(train_x[pick]), codec.latent_shape)

    with tempfile.TemporaryDirectory() as tmp:
        int8 = {"qdq": quantize_onnx_int8(folder / "decoder.onnx", Path(tmp) / "qdq.onnx", "z", z_cal),
                "qoperator": quantize_onnx_int8(folder / "decoder.onnx", Path(tmp) / "qop.onnx", "z", z_cal, quant_format="qoperator")}
        sessions = {"ort_fp32": onnx_session(folder / "decoder.onnx", THREADS),
                    **{f"ort_int8_{k}": onnx_session(path, THREADS) for k, path in int8.items()}}
        int8_bytes = {k: path.stat().st_size for k, path in int8.items()}
    runtimes = {"runtime_file_fp32": CodecRuntime(folder, threads=THREADS), "runtime_file_int8": CodecRuntime(folder, int8=True, threads=THREADS)}
    graph = codec_decoder_graph(codec).eval()
    gflops = sgemm_gflops(threads=THREADS)

    results: dict[str, Any] = {}
    for batch in (1, 64):
        z = np.ascontiguousarray(z_all[:batch])
        zt = torch.from_numpy(z)
        data = codec.compress(x[:batch], "empirical", container=batch > 1)[0]
        def eager(zt=zt):
            with torch.no_grad():
                return graph(zt)

        variants = {"torch_eager": eager,
                    **{k: (lambda s=s: s.run(None, {"z": z})) for k, s in sessions.items()},
                    **{k: (lambda r=r: r.decompress(data)) for k, r in runtimes.items()}}
        calls = 50 if batch == 1 else 5
        med, times = blocked_call_seconds(variants, calls, args.rounds)
        bound = flops(graph, zt) / (gflops * 1e9)
        results[f"batch{batch}"] = {
            "median_ms": {k: 1e3 * v for k, v in med.items()},
            "median_ms_per_image": {k: 1e3 * v / batch for k, v in med.items()},
            "bound_ms": 1e3 * bound,
            "ratios": {
                "ort_fp32_over_torch_eager": med["ort_fp32"] / med["torch_eager"],
                "ort_int8_qdq_over_ort_fp32": med["ort_int8_qdq"] / med["ort_fp32"],
                "ort_int8_qoperator_over_ort_fp32": med["ort_int8_qoperator"] / med["ort_fp32"],
                "torch_eager_over_bound": med["torch_eager"] / bound,
                "ort_fp32_over_bound": med["ort_fp32"] / bound,
                "runtime_file_fp32_over_ort_fp32": med["runtime_file_fp32"] / med["ort_fp32"],
            },
            "file_bytes": len(data),
            "all_seconds": times,
        }

    record = {
        "benchmark": "codec_latency", "run": str(run), "codebook": name, "threads": THREADS, "rounds": args.rounds,
        "machine": machine(), "sgemm_gflops_2048": gflops, "image_shape": manifest["image_shape"], "latent_shape": manifest["latent_shape"],
        "grid": manifest["grid"], "kept_int8": manifest["int8"]["chosen"], "export_int8_measurement": manifest["int8"],
        "max_abs_diff_vs_torch": {k: v["max_abs_diff_vs_torch"] for k, v in manifest["decoders"].items()},
        "file_bytes": {"decoder.onnx": manifest["decoders"]["fp32"]["bytes"], **{f"int8_{k}": v for k, v in int8_bytes.items()}},
        "latency": results, "provenance": provenance(seed=0),
    }
    write_json(args.out, record)
    names = ["torch_eager", "ort_fp32", "ort_int8_qdq", "ort_int8_qoperator", "runtime_file_fp32", "runtime_file_int8"]
    print(f"sgemm {gflops:.1f} GFLOP/s ({THREADS} threads); run {run}, codebook {name}; median ms per image over {args.rounds} interleaved rounds")
    print(f"{'':8} " + " ".join(f"{n:>19}" for n in names) + f" {'bound':>8}")
    for key, r in results.items():
        print(f"{key:8} " + " ".join(f"{r['median_ms_per_image'][n]:19.4f}" for n in names) + f" {r['bound_ms'] / int(key[5:]):8.4f}")
    for key, r in results.items():
        print(f"{key}: " + ", ".join(f"{k} {v:.2f}" for k, v in r["ratios"].items()))
    print(f"INT8 kept by the export: {record['kept_int8']}; max |ORT - torch|: " + ", ".join(f"{k} {v:.2e}" for k, v in record["max_abs_diff_vs_torch"].items()))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
