"""Absolute reconstruction quality of a trained run on a held-out split.

Decoded outputs and ground truth are both images in [0, 1] (the model's
``OUTPUT_RANGE``); PSNR uses data range 1 and is averaged per image.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from posthoc_vq.data import DatasetSplits
from posthoc_vq.evaluation.audit import audit
from posthoc_vq.io import read_json, write_json
from posthoc_vq.latents import encode_split, load_run_splits
from posthoc_vq.metrics.intervals import mean_ci
from posthoc_vq.metrics.reconstruction import DATA_RANGE, mse, psnr, ssim, ssim_window
from posthoc_vq.models import ConvVAE
from posthoc_vq.provenance import provenance
from posthoc_vq.train import SUMMARY_FILE, load_model, load_run_config

PSNR_CAP_DB = 100.0  # per-image PSNR of a (near-)perfect reconstruction is capped here, not +inf


def split_images(splits: DatasetSplits, split: str) -> torch.Tensor:
    """(N, C, H, W) float32 images of a split in [0, 1]."""
    return splits.split(split).to_tensor()


@torch.no_grad()
def decode(model: ConvVAE, z: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Decoded images (N, C, H, W) in OUTPUT_RANGE from latents (N, D)."""
    model.eval()
    return torch.cat([model.decode(z[i : i + batch_size]) for i in range(0, len(z), batch_size)])


def image_quality(reference: torch.Tensor, output: torch.Tensor) -> dict[str, Any]:
    """MSE, PSNR (dB) and SSIM per image against ``reference``, each as mean with a 95% CI over images.

    The range of ``output`` is recorded (``output_range``) for the audit; it is not clipped.
    """
    win, sigma = ssim_window(reference.shape[-1])
    per_psnr = psnr(reference, output, data_range=DATA_RANGE).clamp(max=PSNR_CAP_DB)
    return {
        "n_images": len(reference),
        "mse": mean_ci(mse(reference, output).numpy()).to_dict(),
        "psnr_db": mean_ci(per_psnr.numpy()).to_dict(),
        "ssim": mean_ci(ssim(reference, output, data_range=DATA_RANGE).numpy()).to_dict(),
        "ssim_window": {"size": win, "sigma": sigma},
        "psnr_cap_db": PSNR_CAP_DB,
        "output_range": [float(output.min()), float(output.max())],
    }


def run_header(run_dir: Path, config, meta: dict[str, Any], split: str) -> dict[str, Any]:
    """Run, dataset, split, model size and training state: the first keys of every evaluation result."""
    summary = read_json(run_dir / SUMMARY_FILE, what="training summary") if (run_dir / SUMMARY_FILE).exists() else None
    return {
        "run": str(run_dir),
        "dataset": config.data.name,
        "split": split,
        "model": {
            "family": config.model.family, "latent_dim": config.model.latent_dim, "num_parameters": meta["num_parameters"],
            "fp32_bytes": meta["fp32_bytes"], "epoch": meta.get("epoch"), "trained_steps": meta.get("trained_steps"),
        },
        "training": {k: summary[k] for k in ("converged", "stop_reason", "epochs", "best_epoch", "steps")} if summary else {"converged": None, "stop_reason": "unfinished"},
    }


def evaluate_continuous(run_dir: str | Path, *, split: str = "test", data_dir: str | None = None, splits: DatasetSplits | None = None) -> dict[str, Any]:
    """Evaluate decode(mu) against ground truth on ``split``; writes ``eval/continuous-<split>.json``.

    Returns the JSON-able result (metrics with CIs, model size, training state, audit warnings).
    """
    run_dir = Path(run_dir)
    config = load_run_config(run_dir)
    model, meta = load_model(run_dir)
    splits = splits or load_run_splits(run_dir, data_dir)
    torch.set_num_threads(config.train.threads)
    x = split_images(splits, split)
    x_cont = decode(model, encode_split(model, x, "mu"))
    result = {
        **run_header(run_dir, config, meta, split),
        "latents": "mu",
        "continuous": image_quality(x, x_cont),
        "provenance": provenance(seed=config.seed),
    }
    result["warnings"] = audit(result)
    write_json(run_dir / "eval" / f"continuous-{split}.json", result)
    return result
