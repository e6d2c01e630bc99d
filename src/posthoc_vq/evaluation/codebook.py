"""Evaluation of a (run, codebook) pair on a held-out split.

x_cont = decode(latents), x_quant = decode(codebook[assignment]), for the same
latents the codebook was built on (``mu``, or ``z`` with the recorded seed).
Reported: absolute PSNR/SSIM of both against ground truth, the quantization
penalty (x_quant against x_cont), the per-image PSNR change with its CI, code
usage on the fit set and on this split, bits per image, graph statistics, and
the audit's warnings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from posthoc_vq.evaluation.audit import audit
from posthoc_vq.evaluation.reconstruction import PSNR_CAP_DB, decode, image_quality, run_header, split_images
from posthoc_vq.io import write_json
from posthoc_vq.latents import load_run_splits, run_latents
from posthoc_vq.metrics.codebook import codebook_usage
from posthoc_vq.metrics.intervals import mean_ci
from posthoc_vq.metrics.reconstruction import psnr
from posthoc_vq.provenance import provenance
from posthoc_vq.quantize.codebooks import open_codebook
from posthoc_vq.train import load_model, load_run_config


def evaluate_codebook(run_dir: str | Path, name: str, *, split: str = "test", data_dir: str | None = None) -> dict[str, Any]:
    """Evaluate codebook ``name`` of a run on ``split``; writes ``eval/<name>-<split>.json`` and returns it."""
    run_dir = Path(run_dir)
    config = load_run_config(run_dir)
    model, meta = load_model(run_dir)
    codebook, cb_meta = open_codebook(run_dir, name)
    torch.set_num_threads(config.train.threads)
    splits = load_run_splits(run_dir, data_dir)
    latents = run_latents(run_dir, split, cb_meta["latents"], seed=cb_meta.get("latent_seed") or 0, splits=splits, model=model)
    codes = codebook.predict(latents.values)
    z = torch.from_numpy(latents.values)
    z_quant = torch.from_numpy(codebook.inverse_transform(codes))
    x = split_images(splits, split)
    x_cont, x_quant = decode(model, z), decode(model, z_quant)
    psnr_change = psnr(x, x_quant).clamp(max=PSNR_CAP_DB) - psnr(x, x_cont).clamp(max=PSNR_CAP_DB)
    result = {
        **run_header(run_dir, config, meta, split),
        "codebook": name,
        "method": cb_meta["method"],
        "K": cb_meta["n_codes"],
        "bits_per_image": codebook.bits_per_vector,
        "latents": cb_meta["latents"],
        "latent_seed": cb_meta.get("latent_seed"),
        "fit_on": cb_meta["fit_on"],
        "fit_includes_test": cb_meta["fit_includes_test"],
        "n_fit": cb_meta["n_fit"],
        "continuous": image_quality(x, x_cont),
        "quantized": image_quality(x, x_quant),
        "penalty": image_quality(x_cont, x_quant),
        "psnr_change_db": mean_ci(psnr_change.numpy()).to_dict(),
        "latent_mse": float(np.mean(np.square(latents.values - z_quant.numpy()))),
        "usage": {"fit": cb_meta["fit_usage"], split: codebook_usage(codes, codebook.n_codes, latents.labels)},
        "graph": cb_meta.get("graph"),
        "provenance": provenance(seed=config.seed),
    }
    result["warnings"] = audit(result)
    write_json(run_dir / "eval" / f"{name}-{split}.json", result)
    return result
