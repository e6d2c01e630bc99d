"""Codebooks of a trained run: fit one from a :class:`QuantizeConfig`, save it, list them.

Saved as ``<run>/codebooks/<name>.{safetensors,json}``. The JSON records the
latents (``mu`` or ``z`` with its seed), the fit set (and whether it contains the
test split), code usage on the fit set, graph statistics for graph methods, the
fit time, and provenance.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from posthoc_vq.config import QuantizeConfig
from posthoc_vq.errors import CheckpointError
from posthoc_vq.latents import run_latents
from posthoc_vq.metrics.codebook import codebook_usage
from posthoc_vq.provenance import provenance
from posthoc_vq.quantize.latent.base import CodebookEstimator
from posthoc_vq.quantize.latent.store import load_codebook, make_estimator, save_codebook
from posthoc_vq.train import load_run_config

CODEBOOK_DIR = "codebooks"


def estimator_params(q: QuantizeConfig) -> dict[str, Any]:
    """Constructor arguments of the configured method."""
    params: dict[str, Any] = {"n_clusters": q.K, "random_state": q.random_state}
    if q.max_iter is not None and q.method != "random-prior":
        params["max_iter"] = q.max_iter
    if q.method in ("geodesic", "hybrid"):
        params |= {"n_neighbors": q.n_neighbors, "symmetry": q.symmetry, "graph": q.graph}
    if q.method == "residual":
        params["n_stages"] = q.n_stages
    return params


def fit_codebook_for_run(run_dir: str | Path, q: QuantizeConfig, *, data_dir: str | None = None) -> tuple[str, CodebookEstimator, dict[str, Any]]:
    """Fit the configured codebook on the run's latents and save it.

    Returns
    -------
    (name, fitted estimator, saved JSON record)
    """
    run_dir = Path(run_dir)
    config = load_run_config(run_dir)
    torch.set_num_threads(q.threads)
    latents = run_latents(run_dir, q.fit_on, q.latents, seed=q.latent_seed, data_dir=data_dir)
    estimator = make_estimator(q.method, **estimator_params(q))
    tic = time.perf_counter()
    estimator.fit(latents.values)
    seconds = time.perf_counter() - tic
    codes = estimator.predict(latents.values)
    name = q.default_name()
    meta = {
        "name": name,
        "run": str(run_dir),
        "dataset": config.data.name,
        "latents": q.latents,
        "latent_seed": q.latent_seed if q.latents == "z" else None,
        "fit_on": q.fit_on,
        "fit_includes_test": "test" in q.fit_on.split("+"),
        "n_fit": len(latents),
        "fit_seconds": seconds,
        "quantize": q.model_dump(mode="json"),
        "fit_usage": codebook_usage(codes, estimator.n_codes, latents.labels),
        "graph": getattr(estimator, "graph_stats_", None),
        "provenance": provenance(seed=q.random_state),
    }
    save_codebook(run_dir / CODEBOOK_DIR / name, estimator, meta)
    return name, estimator, meta


def open_codebook(run_dir: str | Path, name: str) -> tuple[CodebookEstimator, dict[str, Any]]:
    """Load codebook ``name`` of a run, checked against the run's latent size."""
    run_dir = Path(run_dir)
    stem = run_dir / CODEBOOK_DIR / name
    if not stem.with_suffix(".json").exists():
        have = list_codebooks(run_dir)
        raise CheckpointError(
            f"no codebook '{name}' in {run_dir / CODEBOOK_DIR}; available: {', '.join(have) or 'none'} "
            f"(fit one with `posthoc-vq quantize {run_dir} --method kmeans`)"
        )
    return load_codebook(stem, expected_dim=load_run_config(run_dir).model.latent_dim)


def list_codebooks(run_dir: str | Path) -> list[str]:
    return sorted(p.stem for p in (Path(run_dir) / CODEBOOK_DIR).glob("*.json"))
