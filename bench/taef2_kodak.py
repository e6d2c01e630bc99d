"""taef2 on the 24 Kodak images at full size: encode and decode time per megapixel, against a plain functional PyTorch
implementation of the same network and against the compute bound, and the round trip's agreement with it.

Measured in one run, 2 threads, image by image (batch 1, 768x512 or 512x768 as the files are; no rotation here):

* ours: ``posthoc_vq.autoencoders.taef2.TAEF2`` (encode, then decode and clamp);
* anchor: ``tests/integration/taef2_reference.py``, an independent implementation written from the weights'
  description as ``torch.nn.functional`` calls over the state dict (no shared code);
* bound: the network's convolution FLOPs (counted by forward hooks) / the sgemm rate read in the same run.

The acceptance check of issue 21: mean PSNR of the two round trips on Kodak within 0.1 dB.

    python bench/taef2_kodak.py --weights ../shared/models/taef2 --kodak ../shared/datasets/kodak
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")  # as the CLI sets it (posthoc_vq.cli): huge pages for the large activations

import numpy as np
import torch
from PIL import Image

from common import machine, sgemm_gflops  # bench/ is on sys.path
from posthoc_vq.autoencoders.taef2 import load_taef2
from posthoc_vq.io import write_json

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
import taef2_reference as reference  # noqa: E402


def conv_flops(model: torch.nn.Module, x: torch.Tensor) -> tuple[float, float]:
    """(encoder, decoder) multiply-add FLOPs x 2 of every convolution for one image ``x``."""
    counts = {"n": 0.0}

    def hook(m, inp, out):
        counts["n"] += 2.0 * out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        z = model.encode(x).mu
        enc = counts["n"]
        model.decode(z)
    for h in handles:
        h.remove()
    return enc, counts["n"] - enc


def psnr(x: torch.Tensor, y: torch.Tensor) -> float:
    return float(-10 * torch.log10(((x - y) ** 2).mean()))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--weights", default="../shared/models/taef2")
    p.add_argument("--kodak", default="../shared/datasets/kodak")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="bench/results/taef2_kodak.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = load_taef2(args.weights)
    enc_sd, dec_sd = reference.load_state(Path(args.weights), "encoder"), reference.load_state(Path(args.weights), "decoder")
    files = sorted(Path(args.kodak).glob("kodim*.png"))
    gflops = [sgemm_gflops()]
    rows = []
    with torch.no_grad():
        for f in files:
            x = torch.from_numpy(np.asarray(Image.open(f).convert("RGB")).copy()).permute(2, 0, 1)[None].float() / 255
            t0 = time.perf_counter()
            z = model.encode(x).mu
            t1 = time.perf_counter()
            y = model.decode(z)
            t2 = time.perf_counter()
            z_ref = reference.encode(enc_sd, x)
            t3 = time.perf_counter()
            y_ref = reference.decode(dec_sd, z_ref).clamp(0, 1)
            t4 = time.perf_counter()
            mp = x.shape[2] * x.shape[3] / 1e6
            rows.append({"image": f.name, "megapixels": mp, "encode_s": t1 - t0, "decode_s": t2 - t1, "ref_encode_s": t3 - t2, "ref_decode_s": t4 - t3,
                         "psnr_db": psnr(x, y), "ref_psnr_db": psnr(x, y_ref), "max_abs_diff": float((y - y_ref).abs().max())})
            print(f"{f.name}: encode {t1 - t0:.2f} s, decode {t2 - t1:.2f} s (reference {t3 - t2:.2f} / {t4 - t3:.2f} s), "
                  f"PSNR {rows[-1]['psnr_db']:.3f} vs {rows[-1]['ref_psnr_db']:.3f} dB", flush=True)
    gflops.append(sgemm_gflops())
    rate = max(gflops)
    enc_flops, dec_flops = conv_flops(model, torch.zeros(1, 3, 512, 768))
    mp_total = sum(r["megapixels"] for r in rows)
    per_mp = {k: sum(r[k] for r in rows) / mp_total for k in ("encode_s", "decode_s", "ref_encode_s", "ref_decode_s")}
    bound = {"encode_s": enc_flops / 0.393216 / (rate * 1e9), "decode_s": dec_flops / 0.393216 / (rate * 1e9)}  # per megapixel
    result = {
        "images": len(rows), "megapixels": mp_total, "threads": args.threads, "sgemm_gflops": gflops,
        "seconds_per_megapixel": per_mp, "bound_seconds_per_megapixel": bound,
        "gflop_per_megapixel": {"encode": enc_flops / 0.393216 / 1e9, "decode": dec_flops / 0.393216 / 1e9},
        "ratio_to_reference": {k: per_mp[k] / per_mp["ref_" + k] for k in ("encode_s", "decode_s")},
        "ratio_to_bound": {k: per_mp[k] / bound[k] for k in ("encode_s", "decode_s")},
        "mean_psnr_db": float(np.mean([r["psnr_db"] for r in rows])), "reference_mean_psnr_db": float(np.mean([r["ref_psnr_db"] for r in rows])),
        "max_abs_diff": max(r["max_abs_diff"] for r in rows), "per_image": rows, "machine": machine(),
        "command": "python " + " ".join(sys.argv),
    }
    result["mean_psnr_difference_db"] = result["mean_psnr_db"] - result["reference_mean_psnr_db"]
    write_json(args.out, result)
    print(f"\nencode {per_mp['encode_s']:.2f} s/MP ({result['ratio_to_reference']['encode_s']:.2f}x the functional reference, "
          f"{result['ratio_to_bound']['encode_s']:.2f}x the sgemm bound); decode {per_mp['decode_s']:.2f} s/MP "
          f"({result['ratio_to_reference']['decode_s']:.2f}x, {result['ratio_to_bound']['decode_s']:.2f}x)")
    print(f"mean PSNR {result['mean_psnr_db']:.4f} dB vs reference {result['reference_mean_psnr_db']:.4f} dB "
          f"(difference {result['mean_psnr_difference_db']:+.2e} dB, max |diff| {result['max_abs_diff']:.2e}); wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
