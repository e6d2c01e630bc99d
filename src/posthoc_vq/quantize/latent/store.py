"""Codebook registry (by method name) and persistence as safetensors + JSON.

A saved codebook is two files with one stem: ``<stem>.safetensors`` (the learned
tensors) and ``<stem>.json`` (method, hyperparameters, shapes, checksum, and
whatever the caller records: latents, fit set, run, statistics). Loading checks
that the two agree with each other and, when asked, with the model's latent size.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from posthoc_vq.errors import CheckpointError, ConfigError
from posthoc_vq.io import load_tensors, read_json, save_tensors, write_json
from posthoc_vq.quantize.latent.base import CodebookEstimator

# method name -> "module:Class"; imported on use so a method's dependencies load only when needed
METHODS: dict[str, str] = {
    "kmeans": "posthoc_vq.quantize.latent.kmeans:KMeans",
    "geodesic": "posthoc_vq.quantize.latent.geodesic:GeodesicKMedoids",
    "hybrid": "posthoc_vq.quantize.latent.hybrid:HybridKMeansGeodesic",
    "residual": "posthoc_vq.quantize.latent.residual:ResidualKMeans",
    "random-prior": "posthoc_vq.quantize.latent.random_prior:RandomPrior",
}


def estimator_class(method: str) -> type[CodebookEstimator]:
    if method not in METHODS:
        raise ConfigError(f"unknown codebook method '{method}'; choose one of: {', '.join(METHODS)}")
    module, name = METHODS[method].split(":")
    return getattr(importlib.import_module(module), name)


def make_estimator(method: str, **params: Any) -> CodebookEstimator:
    """Instantiate a codebook estimator by method name; unknown parameters are a ConfigError."""
    cls = estimator_class(method)
    valid = set(cls().get_params())
    unknown = sorted(set(params) - valid)
    if unknown:
        raise ConfigError(f"codebook method '{method}' has no parameter(s) {unknown}; valid: {sorted(valid)}")
    return cls(**params)


def save_codebook(stem: str | Path, estimator: CodebookEstimator, meta: dict[str, Any] | None = None) -> Path:
    """Write ``<stem>.safetensors`` then ``<stem>.json``; returns the JSON path."""
    stem = Path(stem)
    tensors = estimator.state_tensors()
    sha = save_tensors(stem.with_suffix(".safetensors"), tensors)
    record = {
        "method": estimator.method,
        "params": estimator.get_params(),
        "n_codes": estimator.n_codes,
        "dim": estimator.dim,
        "bits_per_vector": estimator.bits_per_vector,
        "tensor_shapes": {k: list(v.shape) for k, v in tensors.items()},
        "sha256": sha,
        "state": estimator.state_info(),
        **(meta or {}),
    }
    return write_json(stem.with_suffix(".json"), record)


def load_codebook(stem: str | Path, *, expected_dim: int | None = None) -> tuple[CodebookEstimator, dict[str, Any]]:
    """Load a saved codebook; damaged or mismatched files raise CheckpointError naming the file.

    Parameters
    ----------
    stem : path without suffix (``runs/x/codebooks/kmeans-K1024``), or either file's path.
    expected_dim : latent dimension of the model it will be used with.
    """
    stem = Path(stem)
    if stem.suffix in (".json", ".safetensors"):
        stem = stem.with_suffix("")
    meta = read_json(stem.with_suffix(".json"), what="codebook")
    tensor_path = stem.with_suffix(".safetensors")
    tensors = load_tensors(tensor_path, sha256=meta.get("sha256"))
    shapes = {k: list(v.shape) for k, v in tensors.items()}
    if shapes != meta.get("tensor_shapes"):
        raise CheckpointError(f"{tensor_path} holds tensors {shapes} but {stem.with_suffix('.json')} records {meta.get('tensor_shapes')}; the pair is inconsistent, re-create the codebook")
    try:
        estimator = make_estimator(meta["method"], **meta.get("params", {}))
        estimator.load_state(tensors, meta.get("state", {}))
    except (KeyError, ConfigError) as err:
        raise CheckpointError(f"{stem.with_suffix('.json')} is not a valid codebook record ({err})") from None
    if (estimator.n_codes, estimator.dim) != (meta.get("n_codes"), meta.get("dim")):
        raise CheckpointError(f"{tensor_path}: codebook is K={estimator.n_codes}, D={estimator.dim} but its JSON says K={meta.get('n_codes')}, D={meta.get('dim')}")
    if expected_dim is not None and estimator.dim != expected_dim:
        raise CheckpointError(
            f"{tensor_path} has latent dimension D={estimator.dim} but the model's latent_dim is {expected_dim}; "
            "this codebook belongs to another model: re-fit it with `posthoc-vq quantize` on this run"
        )
    return estimator, meta
