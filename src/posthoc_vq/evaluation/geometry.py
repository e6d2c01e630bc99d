"""Latent geometry of a run ("quantization amenability"): ``posthoc-vq geometry RUN``.

:func:`geometry_of_run` reads a run's latents of one split (``mu``; the token vectors of a
spatial run, each labelled with its image's class) and measures, with the pure functions
of :mod:`posthoc_vq.metrics.geometry`:

* the intrinsic dimension by TwoNN and the Levina-Bickel MLE (k = 20), on a seeded sample
  (at most 5,000 vectors) and the package's exact kNN;
* the k-means distortion curve D(K), K = 16, 32, ..., 4096 (capped at n / 4), of the
  package's :class:`~posthoc_vq.quantize.latent.kmeans.KMeans` on a seeded sample (at most
  20,000 vectors), its log-log slope and the effective dimension it implies (Zador:
  D ~ K^(-2/d));
* per-class spread and between-class separation, on all vectors;
* the components of the union-symmetric kNN graph for k = 1 ... 64 on the dimension sample,
  and the smallest k with one component.

Written to ``<run>/eval/geometry-<split>.json`` (:meth:`Run.geometry_file`) under the run's lock.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from posthoc_vq.evaluation.reconstruction import run_header
from posthoc_vq.io import write_json
from posthoc_vq.latents import run_latents
from posthoc_vq.metrics.geometry import (
    class_separation, class_spread, connectivity_curve, mle_dimension, twonn_dimension, zador_slope,
)
from posthoc_vq.progress import ProgressCallback, reporting
from posthoc_vq.provenance import provenance
from posthoc_vq.quantize.latent.kmeans import KMeans
from posthoc_vq.quantize.latent.knn import knn_exact
from posthoc_vq.run import Run
from posthoc_vq.seeding import derived_seed

DIMENSION_SAMPLE = 5_000  # vectors for TwoNN, MLE and connectivity
DISTORTION_SAMPLE = 20_000  # vectors for the k-means curve
DISTORTION_KS = tuple(2**p for p in range(4, 13))  # 16 ... 4096
MLE_K = 20
CONNECTIVITY_KS = tuple(range(1, 33)) + (40, 48, 56, 64)
KMEANS_MAX_ITER = 50


def seeded_sample(n: int, size: int, seed: int, purpose: str) -> np.ndarray:
    """Sorted indices of ``min(n, size)`` of ``n`` rows, drawn without replacement (all rows when n <= size)."""
    if n <= size:
        return np.arange(n)
    return np.sort(np.random.default_rng(derived_seed(seed, purpose)).choice(n, size, replace=False))


def distortion_curve(X: np.ndarray, Ks, seed: int = 0, max_iter: int = KMEANS_MAX_ITER) -> dict[str, list]:
    """k-means distortion of X (N, D) for each K in ``Ks``.

    Returns
    -------
    {"K": [...], "D": [...] mean squared distance of a vector to its centroid (inertia / N, squared
    latent units), "n_iter": [...] Lloyd iterations run}. Each K is fitted with ``random_state=seed``.
    """
    X = np.ascontiguousarray(X, dtype=np.float32)
    out: dict[str, list] = {"K": [], "D": [], "n_iter": []}
    for K in Ks:
        km = KMeans(int(K), max_iter=max_iter, random_state=seed).fit(X)
        out["K"].append(int(K))
        out["D"].append(float(km.inertia_) / len(X))
        out["n_iter"].append(int(km.n_iter_))
    return out


def latent_geometry(X: np.ndarray, y: np.ndarray, *, seed: int = 0, dimension_sample: int = DIMENSION_SAMPLE,
                    distortion_sample: int = DISTORTION_SAMPLE, Ks=DISTORTION_KS, mle_k: int = MLE_K,
                    connectivity_ks=CONNECTIVITY_KS) -> dict[str, Any]:
    """Every geometry measure of vectors X (N, D) with class labels y (N,), as a JSON-ready dict (see the module docstring)."""
    X = np.ascontiguousarray(X, dtype=np.float32)
    N, D = X.shape
    seconds: dict[str, float] = {}

    tic = time.perf_counter()
    dim_idx = seeded_sample(N, dimension_sample, seed, "geometry-dimension")
    S = X[dim_idx]
    ks = [k for k in connectivity_ks if k <= len(S) - 1]
    k_max = max([mle_k, 2, *ks])
    dist, nbr = knn_exact(S, min(k_max, len(S) - 1))
    seconds["knn"] = time.perf_counter() - tic

    tic = time.perf_counter()
    dims = {"twonn": twonn_dimension(dist), "mle": mle_dimension(dist, mle_k), "mle_k": mle_k, "ambient": D}
    seconds["dimension"] = time.perf_counter() - tic

    tic = time.perf_counter()
    conn = connectivity_curve(nbr, ks)
    seconds["connectivity"] = time.perf_counter() - tic

    tic = time.perf_counter()
    km_idx = seeded_sample(N, distortion_sample, seed, "geometry-distortion")
    Ks = [int(K) for K in Ks if K <= len(km_idx) // 4]
    curve = distortion_curve(X[km_idx], Ks, seed)
    fit = zador_slope(curve["K"], curve["D"]) if len(Ks) >= 2 else None
    seconds["distortion"] = time.perf_counter() - tic

    spread = class_spread(X, y)
    sep = class_separation(X, y, spread) if len(spread.classes) >= 2 else None
    return {
        "n_vectors": N, "dim": D, "seed": seed,
        "samples": {"dimension": len(dim_idx), "connectivity": len(dim_idx), "distortion": len(km_idx), "classes": N},
        "intrinsic_dimension": dims,
        "distortion": {**curve, "max_iter": KMEANS_MAX_ITER, "slope": fit.slope if fit else None, "intercept": fit.intercept if fit else None,
                       "d_eff": fit.d_eff if fit else None},
        "classes": {
            "labels": spread.classes.tolist(), "counts": spread.counts.tolist(), "spread": spread.rms.tolist(), "spread_overall": spread.overall,
            **({"centroid_distance_mean": sep.mean_distance, "centroid_distance_min": sep.min_distance, "closest_pair": list(sep.closest_pair),
                "separation": sep.ratio, "separation_min": sep.min_ratio, "fisher_ratio": sep.fisher} if sep else {"separation": None}),
        },
        "connectivity": {"k": conn.ks.tolist(), "components": conn.components.tolist(), "largest_fraction": conn.largest_fraction.tolist(),
                         "connected_k": conn.connected_k},
        "seconds": seconds,
    }


def geometry_of_run(run_dir: str | Path, split: str = "train", data_dir: str | None = None, seed: int = 0,
                    progress: ProgressCallback | None = None) -> dict[str, Any]:
    """Latent geometry of a run's ``mu`` latents on ``split``; writes ``eval/geometry-<split>.json`` and returns its content.

    ``progress``: an optional callback (:mod:`posthoc_vq.progress`) told how far encoding, k-means and the kNN searches have got.
    """
    with reporting(progress):
        return _geometry_of_run(run_dir, split, data_dir, seed)


def _geometry_of_run(run_dir: str | Path, split: str, data_dir: str | None, seed: int) -> dict[str, Any]:
    run = Run.open(run_dir)
    path = run.geometry_file(split)  # checks the split before any work
    config = run.config()
    meta = run.model_record()
    tic = time.perf_counter()
    latents = run_latents(run.root, split, "mu", data_dir=data_dir)  # may encode and cache under the lock itself
    X, y = latents.tokens(), latents.token_labels()
    result = {
        **run_header(run, config, meta, split),
        "latents": "mu", "latent_shape": list(latents.latent_shape), "tokens_per_image": latents.tokens_per_image,
        **latent_geometry(X, y, seed=seed),
    }
    result["seconds"]["total"] = time.perf_counter() - tic
    result["provenance"] = provenance(seed)
    with run.lock("geometry"):
        write_json(path, result)
    return result
