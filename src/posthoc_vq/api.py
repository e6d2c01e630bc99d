"""Bring your own VAE: quantize and evaluate any trained autoencoder, without the CLI or a run directory.

    import posthoc_vq
    from posthoc_vq.autoencoders import FunctionAutoencoder

    model = FunctionAutoencoder(my_encode, my_decode, output_range=(0, 1))  # or a pythae / diffusers model
    fit = posthoc_vq.fit_codebook(model, train_images, method="kmeans", K=1024)
    result = posthoc_vq.evaluate(model, fit, test_images, split="test")
    result["quantized"]["psnr_db"]["mean"], result["bits_per_image"]

``model`` is anything :func:`posthoc_vq.autoencoders.as_autoencoder` accepts. Images are
float tensors or arrays (N, C, H, W) in [0, 1], or an :class:`~posthoc_vq.data.ImageSet`.
A model with a latent grid (C, h, w) is quantized per position (h * w codes per image).
These functions are the core the run-based CLI (``posthoc-vq quantize`` / ``evaluate``) is a
thin layer over: the same model and images give the same numbers and JSON keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from posthoc_vq.autoencoders import as_autoencoder
from posthoc_vq.config import QuantizeConfig, validate
from posthoc_vq.data import ImageSet
from posthoc_vq.errors import DatasetError
from posthoc_vq.evaluation.codebook import codebook_result
from posthoc_vq.evaluation.reconstruction import continuous_result, finish, model_header
from posthoc_vq.latents import LatentSet, encode_split, model_latents
from posthoc_vq.quantize.codebooks import fit_on_latents
from posthoc_vq.quantize.latent.base import CodebookEstimator, missing_labels_error
from posthoc_vq.quantize.latent.store import estimator_class, load_codebook, save_codebook


@dataclass
class FittedCodebook:
    """What :func:`fit_codebook` returns.

    Attributes
    ----------
    codebook : the fitted estimator (``predict``, ``inverse_transform``, ``codebook_`` (K, C)...).
    latents : the :class:`~posthoc_vq.latents.LatentSet` it was fitted on, (N, *L);
        ``latents.tokens()`` gives the (N * h * w, C) vectors of a latent grid.
    meta : the JSON-able record a run's codebook file holds (fit set, usage, timing, ...).
    """

    codebook: CodebookEstimator
    latents: LatentSet
    meta: dict[str, Any]

    def save(self, folder: str | Path) -> Path:
        """Write the folder ``<folder>/`` (``codebook.safetensors`` + ``codebook.json``, as one unit); :func:`evaluate` accepts it back."""
        return save_codebook(folder, self.codebook, self.meta)


def as_images(data: Any, labels: Any = None) -> tuple[torch.Tensor, np.ndarray | None]:
    """(N, C, H, W) float32 images in [0, 1] and (N,) labels (or None) from an ImageSet, a tensor or an array."""
    if isinstance(data, ImageSet):
        return data.to_tensor(), np.asarray(data.labels if labels is None else labels, dtype=np.int64)
    if not isinstance(data, (torch.Tensor, np.ndarray)):
        raise DatasetError(f"data must be images (N, C, H, W) as a float tensor or array in [0, 1], or an ImageSet; got {type(data).__name__}")
    x = torch.as_tensor(data)
    if not x.is_floating_point():
        raise DatasetError(f"images must be floats in [0, 1], got dtype {x.dtype}; convert with images.float() / 255 (and lay them out as (N, C, H, W))")
    if x.ndim != 4 or len(x) == 0:
        raise DatasetError(f"images must be a non-empty (N, C, H, W) batch, got shape {tuple(x.shape)}")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        raise DatasetError(f"images must lie in [0, 1], these lie in [{lo:.4g}, {hi:.4g}]; rescale them (a model working in another range declares it as output_range)")
    if labels is not None:
        labels = np.asarray(labels, dtype=np.int64)
        if labels.shape != (len(x),):
            raise DatasetError(f"labels must be ({len(x)},) integers, one per image; got shape {labels.shape}")
    return x.float().contiguous(), labels


def fit_codebook(
    model: Any, data: Any, *, method: str = "kmeans", K: int = 1024, latents: str = "mu", latent_seed: int = 0,
    labels: Any = None, fit_on: str = "data", max_fit_vectors: int | None = None, random_state: int = 0,
    batch_size: int = 1000, **options: Any,
) -> FittedCodebook:
    """Encode ``data`` with ``model`` and fit a codebook on the latents (per position for latent grids).

    Parameters
    ----------
    model : any autoencoder (see :func:`posthoc_vq.autoencoders.as_autoencoder`).
    data : images (N, C, H, W) in [0, 1] (tensor or array) or an ImageSet.
    method : 'kmeans', 'geodesic', 'hybrid', 'residual', 'random-prior' or 'class-conditional'.
    K : codebook size (per stage for residual; for class-conditional the total budget, floor(K / n_classes) codes per class).
    latents : 'mu' (posterior means) or 'z' (samples, drawn with ``latent_seed``).
    labels : (N,) class labels for per-class usage (ImageSet labels by default); required by
        'class-conditional', which fits one codebook per class.
    fit_on : name of the fit set in the record ('test' in a '+'-joined name flags leakage).
    max_fit_vectors : fit on a seeded sample of at most this many vectors; all are assigned.
        For millions of tokens, ~256 * K is plenty for k-means.
    random_state : seed of the estimator and of the sample.
    options : other :class:`~posthoc_vq.config.QuantizeConfig` keys: n_neighbors, symmetry,
        graph ('exact' or 'hnsw'), n_stages, max_iter, threads (sets torch's process-wide
        thread count; left alone when not given).

    Returns
    -------
    FittedCodebook : ``.codebook`` (fitted estimator), ``.latents`` (what it saw), ``.meta``.
    """
    q = validate(
        {"method": method, "K": K, "latents": latents, "latent_seed": latent_seed, "max_fit_vectors": max_fit_vectors, "random_state": random_state, **options},
        QuantizeConfig, source="fit_codebook arguments",
    )
    ae = as_autoencoder(model)
    x, labels = as_images(data, labels)
    if labels is None and estimator_class(q.method).needs_labels:  # model_latents would give every image label 0: one class
        raise missing_labels_error(q.method, "fit_codebook(model, data, labels=labels, ...)")
    if "threads" in options:  # torch's thread count is process-wide: changed only when asked
        torch.set_num_threads(q.threads)
    seen = model_latents(ae, x, labels, kind=q.latents, seed=q.latent_seed, split=fit_on, batch_size=batch_size)
    estimator, meta = fit_on_latents(seen, q)
    meta["quantize"].pop("fit_on", None)  # the fit set is ``fit_on`` above, not a run split
    name = q.model_copy(update={"fit_on": fit_on}).default_name()  # default name with this fit set's name
    meta = {"name": name, "run": None, **meta}
    return FittedCodebook(estimator, seen, meta)


def _codebook_and_meta(codebook: Any) -> tuple[CodebookEstimator, dict[str, Any]]:
    if isinstance(codebook, FittedCodebook):
        return codebook.codebook, codebook.meta
    if isinstance(codebook, CodebookEstimator):
        return codebook, {"method": codebook.method, "n_codes": codebook.n_codes}
    if isinstance(codebook, (str, Path)):
        estimator, meta = load_codebook(codebook)
        folder = Path(codebook).parent if Path(codebook).suffix in (".json", ".safetensors") else Path(codebook)
        return estimator, {"name": folder.name, **meta}
    raise TypeError(f"codebook must be a FittedCodebook, a fitted estimator or a saved codebook's path, got {type(codebook).__name__}")


def evaluate(
    model: Any, codebook: Any, data: Any, *, labels: Any = None, split: str = "data", dataset: str | None = None,
    out: str | Path | None = None, batch_size: int = 1000,
) -> dict[str, Any]:
    """Evaluate ``model`` on images ``data``, continuous and (if ``codebook`` is given) quantized.

    Parameters
    ----------
    model : any autoencoder (see :func:`posthoc_vq.autoencoders.as_autoencoder`).
    codebook : a :class:`FittedCodebook`, a fitted estimator, a saved codebook's folder
        (``runs/x/codebooks/kmeans-K1024-mu-train``), or None for the continuous model only.
    data : images (N, C, H, W) in [0, 1] (tensor or array) or an ImageSet: the ground truth.
    labels : (N,) class labels for per-class usage; required by a class-conditional codebook (each
        image is coded with its class's codebook).
    split : name of these images in the result (``usage[split]``).
    dataset : dataset name recorded in the result.
    out : write the JSON result here too.

    Returns
    -------
    dict : the result the CLI writes (``posthoc-vq evaluate [--codebook]``): absolute quality of
    continuous and quantized outputs with 95% CIs, the quantization penalty, per-image PSNR
    change, latent MSE, token usage, bits per image, audit warnings; with ``run`` None and the
    model described by its adapter.

    Raises
    ------
    OutputRangeError : the decoder leaves its declared output range.
    LatentShapeError : the codebook's vectors are not the size of the model's latent tokens.
    """
    ae = as_autoencoder(model)
    x, labels = as_images(data, labels)
    if codebook is None:
        z = encode_split(ae, x, "mu", batch_size=batch_size)
        body, shape, seed = continuous_result(ae, x, batch_size, z=z), tuple(z.shape[1:]), None
    else:
        estimator, meta = _codebook_and_meta(codebook)
        if labels is None and estimator.needs_labels:
            raise missing_labels_error(estimator.method, "evaluate(model, codebook, data, labels=labels, ...)")
        kind = meta.get("latents", "mu")
        lat = model_latents(ae, x, labels, kind=kind, seed=meta.get("latent_seed") or 0, split=split, batch_size=batch_size)
        body = codebook_result(ae, estimator, meta, x, lat, split)
        shape, seed = lat.latent_shape, (meta.get("quantize") or {}).get("random_state")
    result = {**model_header(ae, split, shape, dataset), **body}
    return finish(result, seed, Path(out) if out is not None else None)
