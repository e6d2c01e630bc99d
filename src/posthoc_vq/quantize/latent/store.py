"""Codebook registry (by method name) and persistence as safetensors + JSON.

A saved codebook is one folder holding two files: ``codebook.safetensors`` (the learned
tensors) and ``codebook.json`` (method, hyperparameters, shapes, checksum, and whatever
the caller records: latents, fit set, run, statistics). In a run, the folder is written
aside and published with one rename (:meth:`posthoc_vq.run.Run.new_artifact`), so the pair
is always consistent. Loading checks that the two agree with each other and, when asked,
with the model's latent size.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import torch

from posthoc_vq.errors import CheckpointError, ConfigError
from posthoc_vq.io import atomic_folder, save_tensors, write_json
from posthoc_vq.quantize.latent.base import CodebookEstimator
from posthoc_vq.records import CodebookRecord, read_pair
from posthoc_vq.run import CODEBOOK_RECORD, CODEBOOK_TENSORS

# method name -> "module:Class"; imported on use so a method's dependencies load only when needed
METHODS: dict[str, str] = {
    "kmeans": "posthoc_vq.quantize.latent.kmeans:KMeans",
    "geodesic": "posthoc_vq.quantize.latent.geodesic:GeodesicKMedoids",
    "hybrid": "posthoc_vq.quantize.latent.hybrid:HybridKMeansGeodesic",
    "residual": "posthoc_vq.quantize.latent.residual:ResidualKMeans",
    "random-prior": "posthoc_vq.quantize.latent.random_prior:RandomPrior",
    "class-conditional": "posthoc_vq.quantize.latent.class_conditional:ClassConditionalKMeans",
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


def save_codebook(folder: str | Path, estimator: CodebookEstimator, meta: dict[str, Any] | None = None) -> Path:
    """Write ``<folder>/codebook.safetensors`` and ``codebook.json`` as one unit (:func:`~posthoc_vq.io.atomic_folder`); returns the JSON path."""
    final = Path(folder)
    tensors = estimator.state_tensors()
    with atomic_folder(final) as folder:
        _write(folder, estimator, tensors, meta)
    return final / CODEBOOK_RECORD


def _write(folder: Path, estimator: CodebookEstimator, tensors: dict[str, Any], meta: dict[str, Any] | None) -> None:
    sha = save_tensors(folder / CODEBOOK_TENSORS, tensors)
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
    write_json(folder / CODEBOOK_RECORD, record)
    priors = getattr(estimator, "priors_", None)  # coding priors fitted on the fit set (posthoc_vq.quantize.priors)
    if priors:
        from posthoc_vq.quantize.priors import save_priors

        save_priors(folder, priors)


def load_codebook(folder: str | Path, *, expected_dim: int | None = None) -> tuple[CodebookEstimator, dict[str, Any]]:
    """Load a saved codebook; damaged or mismatched files raise CheckpointError naming the file.

    Parameters
    ----------
    folder : the codebook's folder (``runs/x/codebooks/kmeans-K1024-mu-train``), or either file in it.
    expected_dim : latent dimension of the model it will be used with.
    """
    folder = Path(folder)
    if folder.name in (CODEBOOK_RECORD, CODEBOOK_TENSORS):
        folder = folder.parent
    record_path, tensor_path = folder / CODEBOOK_RECORD, folder / CODEBOOK_TENSORS
    if not folder.is_dir() and folder.with_suffix(".json").is_file():
        raise CheckpointError(f"{folder.with_suffix('.json')} is a codebook in the old two-file layout; re-fit it with `posthoc-vq quantize` (codebooks are now folders)")
    meta, tensors = read_pair(record_path, CodebookRecord, "codebook record", tensor_path)
    shapes = {k: list(v.shape) for k, v in tensors.items()}
    broken = [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if broken:  # said here, not later as a decoder that "produced NaN"
        raise CheckpointError(f"{tensor_path} holds non-finite values (NaN or inf) in {', '.join(broken)}: the codebook is broken "
                              "(a diverged fit or fine-tune); re-create it with `posthoc-vq quantize`")
    if shapes != meta["tensor_shapes"]:
        raise CheckpointError(f"{tensor_path} holds tensors {shapes} but {record_path} records {meta['tensor_shapes']}; the pair is inconsistent, re-create the codebook")
    try:
        estimator = make_estimator(meta["method"], **meta["params"])
        estimator.load_state(tensors, meta.get("state", {}))
    except (KeyError, ConfigError, TypeError, ValueError) as err:
        raise CheckpointError(f"{record_path} is not a valid codebook record ({err}); re-create the codebook") from None
    if (estimator.n_codes, estimator.dim) != (meta["n_codes"], meta["dim"]):
        raise CheckpointError(f"{tensor_path}: codebook is K={estimator.n_codes}, D={estimator.dim} but its JSON says K={meta['n_codes']}, D={meta['dim']}")
    if expected_dim is not None and estimator.dim != expected_dim:
        raise CheckpointError(
            f"{tensor_path} has latent dimension D={estimator.dim} but the model's latent_dim is {expected_dim}; "
            "this codebook belongs to another model: re-fit it with `posthoc-vq quantize` on this run"
        )
    return estimator, meta
