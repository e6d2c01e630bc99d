"""Latents of a model, per split: posterior means ``mu`` or samples ``z``; vectors or token grids.

``z = mu + sigma * eps`` draws ``eps`` from a generator seeded by ``seed``, recorded
with the latents. A run's latents are cached in ``<run>/latents/`` as safetensors with the
model's checksum, so a retrained model never reuses stale latents, and with what encoding them
cost (``compute``: wall seconds, images; a :class:`LatentSet` carries it on, read back from the
cache, so a codebook records the encoding it used).

A latent is one vector per image, (N, D), or a grid, (N, C, h, w). Codebooks work on
*tokens*: the C-vector at each grid position, ``LatentSet.tokens()`` (N * h * w, C) in
image-major order (image n's tokens are rows n*h*w ... (n+1)*h*w - 1, row-major over the
grid). For (N, D) latents the tokens are the latents themselves.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from posthoc_vq.autoencoders import as_autoencoder, decode_latents, encode_images
from posthoc_vq.data import DatasetSplits, load_config_dataset
from posthoc_vq.devices import device_record
from posthoc_vq.errors import ConfigError, PosthocVQError
from posthoc_vq.io import load_tensors, read_json, save_tensors, write_json
from posthoc_vq.records import LatentCacheRecord, compute_record, read_dict, total_compute
from posthoc_vq.run import SPLITS, Run
from posthoc_vq import tokens

LatentKind = Literal["mu", "z"]


def to_tokens(values: np.ndarray) -> np.ndarray:
    """(N * T, C) token vectors of latents (N, C, *grid), T = prod(grid); (N, D) is returned as is (:mod:`posthoc_vq.tokens`)."""
    if values.ndim == 2:
        return values
    return tokens.to_tokens(values).reshape(-1, values.shape[1])


def from_tokens(flat: np.ndarray, latent_shape: tuple[int, ...]) -> np.ndarray:
    """Latents (N, *latent_shape) from their tokens (N * T, C); the inverse of :func:`to_tokens`."""
    if len(latent_shape) == 1:
        return flat
    return tokens.from_tokens(flat.reshape(-1, int(np.prod(latent_shape[1:])), latent_shape[0]), tuple(latent_shape))


@dataclass(frozen=True)
class LatentSet:
    values: np.ndarray  # (N, D) or (N, C, h, w) float32
    labels: np.ndarray  # (N,) int64 class labels of the images
    split: str  # 'train', 'val', 'test', a '+'-joined union such as 'train+test', or a caller's name
    kind: str  # 'mu' or 'z'
    seed: int | None  # sampling seed for 'z'
    compute: dict[str, Any] | None = None  # what encoding them cost (records.compute_record); None where unknown

    def __len__(self) -> int:
        return len(self.values)

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """Shape of one image's latent: (D,) or (C, h, w)."""
        return tuple(self.values.shape[1:])

    @property
    def tokens_per_image(self) -> int:
        """Latent vectors per image: 1, or h * w for a grid."""
        return int(np.prod(self.values.shape[2:], dtype=np.int64))

    def tokens(self) -> np.ndarray:
        """(N * tokens_per_image, C) float32 token vectors (see the module docstring for the order)."""
        return to_tokens(self.values)

    def token_labels(self) -> np.ndarray:
        """(N * tokens_per_image,) int64 label of each token's image."""
        return np.repeat(self.labels, self.tokens_per_image)


def encode_split(model: Any, images: torch.Tensor, kind: LatentKind, seed: int = 0, batch_size: int = 1000, *, device: torch.device | str | None = None) -> torch.Tensor:
    """(N, *L) CPU latents of images (N, C, H, W) in [0, 1]; ``model`` is any autoencoder (see :mod:`posthoc_vq.autoencoders`).

    ``device``: where the batches are encoded (None: where the images are)."""
    return encode_images(as_autoencoder(model), images, kind, seed, batch_size, device=device)


def model_latents(model: Any, images: torch.Tensor, labels: np.ndarray | None = None, *, kind: LatentKind = "mu", seed: int = 0, split: str = "data",
                  batch_size: int = 1000, device: torch.device | str | None = None) -> LatentSet:
    """:class:`LatentSet` of images (N, C, H, W) in [0, 1] under any autoencoder; labels default to 0; encoded on ``device``."""
    if kind not in ("mu", "z"):
        raise ConfigError(f"latents must be 'mu' or 'z', got '{kind}'")
    tic = time.perf_counter()
    values = encode_split(model, images, kind, seed, batch_size, device=device).numpy()
    compute = compute_record(time.perf_counter() - tic, 0, len(values))
    labels = np.zeros(len(values), dtype=np.int64) if labels is None else np.asarray(labels, dtype=np.int64)
    return LatentSet(values, labels, split, kind, seed if kind == "z" else None, compute)


def stream_latents(model: Any, batches: Any, *, kind: LatentKind = "mu", seed: int = 0, split: str = "data", batch_size: int = 1000,
                   device: torch.device | str | None = None) -> LatentSet:
    """:class:`LatentSet` of a stream of (images (B, C, H, W) in [0, 1], labels (B,) or None) batches, encoded batch by batch on ``device``.

    Only the latents are kept, not the images. ``z`` draws its noise from one generator seeded with
    ``seed`` across the batches (the same batches give the same samples). Labels default to 0.
    """
    if kind not in ("mu", "z"):
        raise ConfigError(f"latents must be 'mu' or 'z', got '{kind}'")
    ae = as_autoencoder(model)
    gen = torch.Generator().manual_seed(seed)
    tic = time.perf_counter()
    values, labels = [], []
    for x, y in batches:
        values.append(encode_images(ae, x, kind, seed, batch_size, device=device, generator=gen).numpy())
        labels.append(np.zeros(len(x), dtype=np.int64) if y is None else np.asarray(y, dtype=np.int64))
    out = np.concatenate(values)
    return LatentSet(out, np.concatenate(labels), split, kind, seed if kind == "z" else None, compute_record(time.perf_counter() - tic, 0, len(out)))


def load_run_splits(run_dir: str | Path, data_dir: str | None = None) -> DatasetSplits:
    """The dataset splits a run was trained on (same split seed and fractions)."""
    return load_config_dataset(Run.open(run_dir).config().data, data_dir)


def run_latents(
    run_dir: str | Path, split: str = "train", kind: LatentKind = "mu", *, seed: int = 0,
    splits: DatasetSplits | None = None, data_dir: str | None = None, model: Any | None = None, device: torch.device | str | None = None,
) -> LatentSet:
    """Latents of one split (or a '+'-joined union like 'train+test'), cached in the run directory.

    ``device``: where images are encoded when the cache is missing or stale (the model is moved
    there); the cache holds CPU latents and the device that made them (``device`` in its JSON), and
    is used only on that device (a cache made on a GPU is encoded again on CPU).

    The set's ``compute`` is what encoding it cost when it was cached (summed over a union's
    splits); None when a cache predates compute accounting.
    """
    if kind not in ("mu", "z"):
        raise ConfigError(f"latents must be 'mu' or 'z', got '{kind}'")
    parts = split.split("+")
    bad = [p for p in parts if p not in SPLITS]
    if bad:
        raise ConfigError(f"unknown split(s) {bad} in '{split}'; use train, val, test or a union such as train+test")
    run = Run.open(run_dir)
    sets = [_one_split(run, p, kind, seed, splits, data_dir, model, device) for p in parts]
    compute = total_compute({s.split: s.compute for s in sets})
    return LatentSet(
        np.concatenate([s.values for s in sets]), np.concatenate([s.labels for s in sets]), split, kind, seed if kind == "z" else None,
        compute["total"] if compute["complete"] else None,
    )


def _one_split(run: Run, split: str, kind: str, seed: int, splits, data_dir, model, device=None) -> LatentSet:
    """One split's latents: the cache when it was made from this exact model file on this device, else encoded and cached.

    Latents encoded on a GPU differ from CPU ones in the last bits, so a cache made on another
    device is encoded again (and replaced): CPU numbers never depend on where a cache was made.
    """
    model_sha = run.verified_model_sha256()  # the weights on disk, not just the recorded checksum
    where = device_record(torch.device("cpu") if device is None else torch.device(device))
    tensor_path, record_path = run.latent_files(kind, split, seed)
    if record_path.exists():
        try:
            meta = read_dict(record_path, LatentCacheRecord, "latent cache")
            if meta["model_sha256"] == model_sha and meta.get("device", "cpu") == where["device"]:
                t = load_tensors(tensor_path, sha256=meta["sha256"])
                return LatentSet(t["latents"].numpy(), t["labels"].numpy(), split, kind, seed if kind == "z" else None, meta.get("compute"))
        except PosthocVQError as err:  # a cache is derived data: a damaged one is encoded again and replaced, as the CIFAR cache is
            warnings.warn(f"the latent cache {record_path.parent} is damaged ({err}); encoding the {split} split again", stacklevel=2)
    if model is None:
        model, _ = run.load_model()
    if device is not None:
        model = model.to(device)
    splits = splits or load_run_splits(run.root, data_dir)
    images = splits.split(split)
    tic = time.perf_counter()
    values = encode_split(model, images.to_tensor(), kind, seed, device=device)  # (N, *L), on CPU
    compute = compute_record(time.perf_counter() - tic, 0, len(values))  # the forward passes only, not loading the data
    labels = torch.from_numpy(np.asarray(images.labels, dtype=np.int64))
    with run.lock("encode latents"):
        sha = save_tensors(tensor_path, {"latents": values.contiguous(), "labels": labels})
        write_json(record_path, {
            "split": split, "kind": kind, "seed": seed if kind == "z" else None, "n": len(values), "dim": values.shape[1],
            "shape": list(values.shape[1:]), "model_sha256": model_sha, "sha256": sha, "compute": compute, **where,
        })
    return LatentSet(values.numpy(), labels.numpy(), split, kind, seed if kind == "z" else None, compute)


#: the largest continuous output (float32 bytes) :func:`run_continuous_output` keeps on disk (above it, decoded every time)
MAX_CACHED_OUTPUT_BYTES = 2**30


def run_continuous_output(run_dir: str | Path, split: str, latents: LatentSet, model: Any, *, device: torch.device | str | None = None) -> torch.Tensor:
    """decode(mu) of one split (N, C, H, W) in [0, 1], on CPU: what every codebook of the run is compared with.

    Cached beside the latents (``latents/decoded-mu-<split>.safetensors``, float32) and used only when its record names
    this model file, these exact cached latents (their sha256) and this device; anything else is decoded again and the
    cache replaced. So evaluating many codebooks of a run decodes the continuous output once (on Kodak, 24 full-size
    decodes saved per codebook). ``latents`` must be that split's cached mu latents (:func:`run_latents`); outputs larger
    than :data:`MAX_CACHED_OUTPUT_BYTES` are decoded and not kept.
    """
    if latents.kind != "mu" or "+" in split:
        raise ValueError(f"the continuous output is cached for one split's mu latents, not {latents.kind!r} latents of {split!r}")
    run = Run.open(run_dir)
    z = torch.from_numpy(latents.values)
    _, latent_record = run.latent_files("mu", split)
    tensor_path, record_path = latent_record.with_name(f"decoded-mu-{split}.safetensors"), latent_record.with_name(f"decoded-mu-{split}.json")
    where = device_record(torch.device("cpu") if device is None else torch.device(device))
    key = {"model_sha256": run.verified_model_sha256(), "latents_sha256": read_dict(latent_record, LatentCacheRecord, "latent cache")["sha256"],
           "device": where["device"]}
    if record_path.exists():
        try:
            meta = read_json(record_path)
            if isinstance(meta, dict) and all(meta.get(k) == v for k, v in key.items()):
                return load_tensors(tensor_path, sha256=meta["sha256"])["images"]
        except PosthocVQError:  # a damaged cache is decoded again and replaced, never trusted
            pass
    images = decode_latents(as_autoencoder(model), z, device=device)
    if images.numel() * 4 <= MAX_CACHED_OUTPUT_BYTES:
        with run.lock("cache the continuous output"):
            sha = save_tensors(tensor_path, {"images": images.contiguous()})
            write_json(record_path, {"split": split, "shape": list(images.shape), **key, "sha256": sha})
    return images
