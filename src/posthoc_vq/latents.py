"""Latent vectors of a trained run, per split: posterior means ``mu`` or samples ``z``.

``z = mu + sigma * eps`` draws ``eps`` from a generator seeded by ``seed``, recorded
with the latents. Latents are cached in ``<run>/latents/`` as safetensors with the
model's checksum, so a retrained model never reuses stale latents.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from posthoc_vq.data import DatasetSplits, load_dataset
from posthoc_vq.errors import ConfigError
from posthoc_vq.io import load_tensors, read_json, save_tensors, write_json
from posthoc_vq.models import ConvVAE
from posthoc_vq.train import load_model, load_run_config

LatentKind = Literal["mu", "z"]
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class LatentSet:
    values: np.ndarray  # (N, D) float32
    labels: np.ndarray  # (N,) int64 class labels of the images
    split: str  # 'train', 'val', 'test' or a '+'-joined union such as 'train+test'
    kind: str  # 'mu' or 'z'
    seed: int | None  # sampling seed for 'z'

    def __len__(self) -> int:
        return len(self.values)


@torch.no_grad()
def encode_split(model: ConvVAE, images: torch.Tensor, kind: LatentKind, seed: int = 0, batch_size: int = 1000) -> torch.Tensor:
    """(N, D) latents of images (N, C, H, W) in [0, 1]."""
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i in range(0, len(images), batch_size):
        post = model.encode(images[i : i + batch_size])
        if kind == "z":
            eps = torch.randn(post.mu.shape, generator=gen)
            out.append(post.mu + eps * torch.exp(0.5 * post.logvar))
        else:
            out.append(post.mu)
    return torch.cat(out)


def load_run_splits(run_dir: str | Path, data_dir: str | None = None) -> DatasetSplits:
    """The dataset splits a run was trained on (same split seed and fractions)."""
    d = load_run_config(run_dir).data
    return load_dataset(d.name, data_dir or d.data_dir, val_fraction=d.val_fraction, split_seed=d.split_seed, image_size=d.image_size)


def run_latents(
    run_dir: str | Path, split: str = "train", kind: LatentKind = "mu", *, seed: int = 0,
    splits: DatasetSplits | None = None, data_dir: str | None = None, model: ConvVAE | None = None,
) -> LatentSet:
    """Latents of one split (or a '+'-joined union like 'train+test'), cached in the run directory."""
    if kind not in ("mu", "z"):
        raise ConfigError(f"latents must be 'mu' or 'z', got '{kind}'")
    parts = split.split("+")
    bad = [p for p in parts if p not in SPLITS]
    if bad:
        raise ConfigError(f"unknown split(s) {bad} in '{split}'; use train, val, test or a union such as train+test")
    sets = [_one_split(Path(run_dir), p, kind, seed, splits, data_dir, model) for p in parts]
    return LatentSet(
        np.concatenate([s.values for s in sets]), np.concatenate([s.labels for s in sets]), split, kind, seed if kind == "z" else None
    )


def _one_split(run_dir: Path, split: str, kind: str, seed: int, splits, data_dir, model) -> LatentSet:
    model_sha = read_json(run_dir / "model.json", what="model metadata")["sha256"]
    stem = run_dir / "latents" / (f"{kind}-{split}" + (f"-seed{seed}" if kind == "z" else ""))
    meta_path = stem.with_suffix(".json")
    if meta_path.exists():
        meta = read_json(meta_path, what="latent cache")
        if meta.get("model_sha256") == model_sha:
            t = load_tensors(stem.with_suffix(".safetensors"), sha256=meta.get("sha256"))
            return LatentSet(t["latents"].numpy(), t["labels"].numpy(), split, kind, seed if kind == "z" else None)
    if model is None:
        model, _ = load_model(run_dir)
    splits = splits or load_run_splits(run_dir, data_dir)
    images = splits.split(split)
    values = encode_split(model, images.to_tensor(), kind, seed)  # (N, D)
    labels = torch.from_numpy(np.asarray(images.labels, dtype=np.int64))
    sha = save_tensors(stem.with_suffix(".safetensors"), {"latents": values, "labels": labels})
    write_json(meta_path, {"split": split, "kind": kind, "seed": seed if kind == "z" else None, "n": len(values), "dim": values.shape[1], "model_sha256": model_sha, "sha256": sha})
    return LatentSet(values.numpy(), labels.numpy(), split, kind, seed if kind == "z" else None)
