"""Codebooks of latents: fit one from a :class:`QuantizeConfig` (on any model's latents, or a
run's), save it, open and list a run's codebooks.

Latents that are grids (N, C, h, w) are quantized per position: one shared codebook is fitted
on the N * h * w token vectors (C values each) and every position gets its own code, so an
image costs h * w * bits_per_vector bits (a VQGAN-style tokenizer). One-vector latents (N, D)
are the case h * w = 1.

Class labels: every token carries its image's label (``LatentSet.token_labels()``); the fit and
the assignment pass them on through :func:`~posthoc_vq.quantize.latent.base.predict_codes`, so a
``class-conditional`` codebook (one k-means codebook per class, ``needs_labels``) codes each token
with its class's codebook. A fit set whose images all share one label (a dataset without class
labels, such as CelebA) is refused for it (:func:`check_fit_labels`).

Scaling: ``max_fit_vectors`` fits on a seeded uniform sample (``random_state``) of at most that
many vectors, then assigns *every* vector, so usage statistics count all tokens. For k-means
256 samples per code (faiss's default, 262,144 for K = 1024) is plenty: on 2 shared cores,
K=1024 on 262,144 of the 2.6 million 8-D Fashion-MNIST train tokens fitted in 15 s (100 Lloyd
iterations), and assigning all 2.6 million takes seconds; a full fit costs ~10x per iteration
(K=256 on 2.6 million stand-in vectors: 35 s for 30 iterations). Graph methods (geodesic,
hybrid) build a kNN graph over the fitted vectors: the
exact graph is quadratic and refused beyond ``MAX_EXACT_GRAPH_VECTORS``, the approximate
(HNSW) one beyond ``MAX_GRAPH_VECTORS``; the error says to subsample.

Saved as ``<run>/codebooks/<name>/codebook.{safetensors,json}``, published as one folder. The JSON records the latents
(``mu`` or ``z`` with its seed), their shape, the fit set (and whether it contains the test
split), the number of vectors fitted, code usage on the whole fit set, graph statistics for
graph methods, the fit time, what the fit and the encoding of its latents cost (``compute``,
``encoding_compute``: wall seconds, optimiser steps (0), images), and provenance.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from posthoc_vq.config import QuantizeConfig
from posthoc_vq.derivation import check_source, recorded_sha256, warn_replaced
from posthoc_vq.errors import ConfigError, NotFoundError
from posthoc_vq.devices import resolve_device
from posthoc_vq.latents import LatentSet, run_latents
from posthoc_vq.metrics.codebook import codebook_usage
from posthoc_vq.progress import ProgressCallback, reporting
from posthoc_vq.provenance import provenance
from posthoc_vq.quantize.latent.base import CodebookEstimator, predict_codes
from posthoc_vq.quantize.priors import codes_grid, fit_priors, prior_summary
from posthoc_vq.quantize.latent.store import estimator_class, load_codebook, make_estimator, save_codebook
from posthoc_vq.records import compute_record
from posthoc_vq.run import Run, check_codebook_name
GRAPH_METHODS = ("geodesic", "hybrid")
MAX_EXACT_GRAPH_VECTORS = 100_000  # exact kNN graph: N^2 distances (70,000 single vectors is ~1 min on 2 cores)
MAX_GRAPH_VECTORS = 500_000  # HNSW graph plus Dijkstra over the nodes: memory and time grow with N * n_neighbors


def estimator_params(q: QuantizeConfig) -> dict[str, Any]:
    """Constructor arguments of the configured method."""
    params: dict[str, Any] = {"n_clusters": q.K, "random_state": q.random_state}
    if q.max_iter is not None and q.method != "random-prior":
        params["max_iter"] = q.max_iter
    if q.method in GRAPH_METHODS:
        params |= {"n_neighbors": q.n_neighbors, "symmetry": q.symmetry, "graph": q.graph}
    if q.method == "residual":
        params["n_stages"] = q.n_stages
    return params


def check_fit_size(q: QuantizeConfig, n_vectors: int, latent_shape: tuple[int, ...]) -> None:
    """Refuse a graph method on more vectors than its kNN graph can hold, saying how to subsample."""
    if q.method not in GRAPH_METHODS:
        return
    limit = MAX_EXACT_GRAPH_VECTORS if q.graph == "exact" else MAX_GRAPH_VECTORS
    if n_vectors <= limit:
        return
    per = f" ({n_vectors // max(1, int(np.prod(latent_shape[1:])))} images x {int(np.prod(latent_shape[1:]))} positions)" if len(latent_shape) > 1 else ""
    hint = f"quantize.graph=hnsw (up to {MAX_GRAPH_VECTORS:,} vectors) or " if q.graph == "exact" else ""
    raise ConfigError(
        f"quantize.method={q.method} builds a kNN graph over every fitted vector, and this fit set has {n_vectors:,}{per}; "
        f"the {q.graph} graph is limited to {limit:,} (exact kNN compares every pair of vectors). "
        f"Use {hint}quantize.max_fit_vectors=50000 to fit on a seeded sample (every vector is still assigned), or method kmeans / residual"
    )


def check_fit_labels(q: QuantizeConfig, latents: LatentSet) -> None:
    """Refuse a method that needs class labels (``class-conditional``) on a fit set without them: every
    image of one class (CelebA's labels are all 0; images given without labels get label 0)."""
    if not estimator_class(q.method).needs_labels:
        return
    classes = np.unique(latents.labels)
    if len(classes) < 2:
        raise ConfigError(
            f"quantize.method={q.method} needs each image's class label, but every image of fit set '{latents.split}' has the same label "
            f"({classes.tolist()}): the dataset has no class labels (CelebA's are all 0; images given without labels get 0). "
            "Use a method that needs no labels (kmeans), or a labelled dataset (digits, mnist, fashion-mnist, cifar-10, image-folder)"
        )


def sample_rows(n: int, max_rows: int | None, seed: int) -> np.ndarray | None:
    """Sorted indices of a seeded uniform sample of ``max_rows`` of ``n`` rows, or None for all rows."""
    if max_rows is None or max_rows >= n:
        return None
    return np.sort(np.random.default_rng(seed).choice(n, max_rows, replace=False))


MAX_CODEBOOK_BYTES = 2 * 2**30  # a codebook's vectors (K x stages x D float32) are held several times over while fitting


def fit_on_latents(latents: LatentSet, q: QuantizeConfig) -> tuple[CodebookEstimator, dict[str, Any]]:
    """Fit the configured codebook on a set of latents, per token for latent grids.

    Parameters
    ----------
    latents : LatentSet, (N, D) or (N, C, h, w); its ``split`` names the fit set.
    q : the method, K and options; ``q.max_fit_vectors`` subsamples (module docstring).

    Returns
    -------
    (fitted estimator, JSON-able record): latents kind and seed, ``latent_shape``,
    ``tokens_per_image``, ``bits_per_image``, fit set, ``n_fit`` (vectors fitted),
    ``n_fit_images``, ``n_fit_tokens`` (all tokens of the fit set), fit time, the config,
    ``fit_usage`` (on every token of the fit set), graph statistics, ``priors`` (the coding priors fitted on the
    fit set's codes, :mod:`posthoc_vq.quantize.priors`; the estimator carries them as ``priors_`` to be saved), ``compute`` (the fit: its
    ``fit_seconds``, 0 optimiser steps, the fit set's images, ``vectors_fitted``),
    ``encoding_compute`` (``latents.compute``: what encoding the fit set cost, None if unknown), provenance.
    """
    tokens, token_labels = latents.tokens(), latents.token_labels()  # (N * T, C), (N * T,): each token carries its image's label
    check_fit_labels(q, latents)
    check_fit_size(q, len(tokens) if q.max_fit_vectors is None else min(len(tokens), q.max_fit_vectors), latents.latent_shape)
    if q.K > len(tokens) and q.method != "random-prior":
        raise ConfigError(f"quantize.K={q.K} is more than the {len(tokens)} latent vectors of fit set '{latents.split}'; lower K")
    stages = q.n_stages if q.method == "residual" else 1
    if q.K * stages * tokens.shape[1] * 4 > MAX_CODEBOOK_BYTES:
        raise ConfigError(f"quantize.K={q.K} x {stages} stage(s) x {tokens.shape[1]} dimensions is a codebook of "
                          f"{q.K * stages * tokens.shape[1] * 4 / 2**30:.1f} GiB (float32), over the {MAX_CODEBOOK_BYTES // 2**30} GiB limit; lower K")
    estimator = make_estimator(q.method, **estimator_params(q))
    rows = sample_rows(len(tokens), q.max_fit_vectors, q.random_state)
    fit_set, fit_labels = (tokens, token_labels) if rows is None else (tokens[rows], token_labels[rows])
    tic = time.perf_counter()
    estimator.fit(fit_set, fit_labels)  # labels are used by class-conditional codebooks only (``needs_labels``)
    seconds = time.perf_counter() - tic
    codes = predict_codes(estimator, tokens, token_labels)
    grid = codes_grid(codes, len(latents), latents.latent_shape)
    estimator.priors_ = fit_priors(estimator, grid)  # the coding side: saved beside the codebook (save_codebook)
    meta = {
        "latents": latents.kind,
        "latent_seed": latents.seed if latents.kind == "z" else None,
        "latent_shape": list(latents.latent_shape),
        "tokens_per_image": latents.tokens_per_image,
        "bits_per_image": latents.tokens_per_image * estimator.bits_per_vector,
        "fit_on": latents.split,
        "fit_includes_test": "test" in latents.split.split("+"),
        "n_fit": len(fit_set),
        "n_fit_images": len(latents),
        "n_fit_tokens": len(tokens),
        "fit_seconds": seconds,
        "compute": compute_record(seconds, 0, len(latents), vectors_fitted=len(fit_set)),
        "encoding_compute": latents.compute,
        "quantize": q.model_dump(mode="json"),
        "fit_usage": codebook_usage(codes, estimator.n_codes, token_labels),
        "graph": getattr(estimator, "graph_stats_", None),
        "priors": prior_summary(estimator.priors_, grid),
        "provenance": provenance(seed=q.random_state),
    }
    return estimator, meta


def fit_codebook_for_run(run_dir: str | Path | Run, q: QuantizeConfig, *, data_dir: str | None = None,
                         progress: ProgressCallback | None = None, device: str | torch.device | None = None) -> tuple[str, CodebookEstimator, dict[str, Any]]:
    """Fit the configured codebook on the run's latents and save it, under the run's writer lock.

    ``device``: where the fit set's images are encoded when their latents are not cached
    (:func:`~posthoc_vq.devices.resolve_device`; default CPU); the fit itself runs on CPU. Recorded as ``device``.

    ``progress``: an optional callback (:mod:`posthoc_vq.progress`) told how far encoding, the fit
    (k-means iterations, kNN blocks, geodesic medoid updates) and the assignment have got.

    Returns
    -------
    (name, fitted estimator, saved JSON record)
    """
    run = Run.open(run_dir)
    name = check_codebook_name(q.default_name())  # a bad name fails before any work
    with run.lock("quantize"), reporting(progress):
        config = run.config()
        torch.set_num_threads(q.threads)
        dev = resolve_device(device)
        latents = run_latents(run.root, q.fit_on, q.latents, seed=q.latent_seed, data_dir=data_dir, device=dev)
        estimator, fit_meta = fit_on_latents(latents, q)
        meta = {"name": name, "run": str(run.root), "dataset": config.data.name, **fit_meta, "device": str(dev),
                "model_sha256": run.model_record()["sha256"]}  # what its latents came from: checked whenever it is opened
        folder = run.new_artifact("codebooks", name)
        before = recorded_sha256(run.codebook_files(name)[1])
        save_codebook(folder, estimator, meta)
        warn_replaced(f"codebook '{name}' of {run.root}", run.codebook_files(name)[1], before)
    return name, estimator, meta


def open_codebook(run_dir: str | Path | Run, name: str) -> tuple[CodebookEstimator, dict[str, Any]]:
    """Load codebook ``name`` of a run, checked against the run's latent size and against the model it was fitted with
    (:func:`~posthoc_vq.derivation.check_source`: a codebook of an earlier version of the model is an error)."""
    run = Run.open(run_dir)
    _, record = run.codebook_files(name)
    if not record.exists():
        have = run.codebook_names()
        raise NotFoundError(
            f"no codebook '{name}' in {run.root / 'codebooks'}; available: {', '.join(have) or 'none'} "
            f"(fit one with `posthoc-vq quantize {run.root} --method kmeans`)"
        )
    estimator, meta = load_codebook(record.parent, expected_dim=run.config().model.latent_dim)
    if "fine_tuned_from" not in meta:  # a fine-tune's codebook belongs to that fine-tune, made with its model
        q = meta.get("quantize") or {}
        check_source(f"codebook '{name}'", record, meta.get("model_sha256"), run.model_record()["sha256"], "the run's model",
                     f"fit it again on the model as it is now: `posthoc-vq quantize {run.root} --method {q.get('method', meta.get('method'))} "
                     f"--K {q.get('K', meta.get('n_codes'))}` (its other settings are in {record})")
    return estimator, meta


def list_codebooks(run_dir: str | Path | Run) -> list[str]:
    return Run.open(run_dir).codebook_names()
