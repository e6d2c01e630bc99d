"""Samples of a VAE used as a generative model, with and without a post-hoc codebook, and their diversity.

* Continuous model: z ~ N(0, I), decoded (the VAE's own prior).
* Post-hoc VQ model: codes drawn from the empirical code distribution of the codebook's fit
  set (``'empirical'``: the codes of uniformly drawn fit-set tokens, which for a residual
  quantizer keeps the joint distribution of its stage codes), or uniformly over the
  codebook (``'uniform'``: every stage independently); the drawn codes' codebook vectors
  are decoded. A latent grid (C, h, w) gets an independent draw per position: there is no
  learned prior over code grids, so this is the codebook's marginal prior, not a model of
  spatial structure. For vector latents a token is the whole latent. The draws need no class
  labels: a class-conditional codebook's code names its class, so the empirical draw keeps the fit
  set's class frequencies and the uniform one draws a class and a code within it uniformly.
* Diversity of a set: the mean pairwise Euclidean distance of its domain features (on at
  most ``max_points`` of them) and the number of distinct classes the domain classifier
  predicts, with the predicted-class entropy.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import torch

from posthoc_vq.evaluation.reconstruction import decode
from posthoc_vq.latents import from_tokens, to_tokens
from posthoc_vq.quantize.latent.base import CodebookEstimator, predict_codes
from posthoc_vq.seeding import derived_seed

CodeSampling = Literal["empirical", "uniform"]
CODE_SAMPLINGS: tuple[str, ...] = ("empirical", "uniform")


def prior_latents(n: int, latent_shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """(n, *latent_shape) float32 draws from N(0, I), from a generator seeded by ``seed``."""
    return torch.randn(n, *latent_shape, generator=torch.Generator().manual_seed(derived_seed(seed, "prior-samples")))


def prior_samples(model: Any, n: int, latent_shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """(n, C, H, W) images in [0, 1]: the continuous VAE's samples decode(z), z ~ N(0, I) of shape (n, *latent_shape)."""
    return decode(model, prior_latents(n, tuple(latent_shape), seed))


def quantize_latents(codebook: CodebookEstimator, values: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
    """(N, *L) float32: every token of latents ``values`` (N, *L) replaced by its codebook vector.

    ``labels`` (N,) are the latents' class labels, each token taking its latent's; a codebook that
    needs them (``class-conditional``) raises its missing-label error without them, the others ignore them.
    """
    values = np.ascontiguousarray(values, dtype=np.float32)
    tokens = to_tokens(values)
    token_labels = None if labels is None else np.repeat(np.asarray(labels, dtype=np.int64), len(tokens) // max(1, len(values)))
    return from_tokens(codebook.inverse_transform(predict_codes(codebook, tokens, token_labels)), values.shape[1:]).astype(np.float32)


def sample_codes(codebook: CodebookEstimator, fit_codes: np.ndarray, n: int, mode: CodeSampling, seed: int = 0) -> np.ndarray:
    """Codes of ``n`` samples from a post-hoc codebook's prior.

    Parameters
    ----------
    codebook : fitted estimator (its ``n_codes`` is K; a residual quantizer's codes are (N, M)).
    fit_codes : (N_fit,) or (N_fit, M) int64 codes of the codebook's fit-set tokens.
    n : number of tokens to draw (images x tokens per image).
    mode : ``'empirical'`` (codes of fit-set vectors drawn uniformly with replacement, i.e. the
        fit set's code frequencies) or ``'uniform'`` (each code, or each stage's code, uniform on [0, K)).
    seed : seeds the draw.

    Returns
    -------
    (n,) or (n, M) int64 codes, the same layout as ``fit_codes``.
    """
    rng = np.random.default_rng(derived_seed(seed, f"codes-{mode}"))
    fit_codes = np.asarray(fit_codes, dtype=np.int64)
    if mode == "empirical":
        if len(fit_codes) == 0:
            raise ValueError("the fit set has no codes to draw from")
        return fit_codes[rng.integers(len(fit_codes), size=n)]
    if mode == "uniform":
        return rng.integers(codebook.n_codes, size=(n, *fit_codes.shape[1:]), dtype=np.int64)
    raise ValueError(f"code sampling must be one of {CODE_SAMPLINGS}, got {mode!r}")


def codebook_samples(model: Any, codebook: CodebookEstimator, fit_codes: np.ndarray, n: int, mode: CodeSampling,
                     latent_shape: tuple[int, ...], seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """Images (n, C, H, W) in [0, 1] decoded from codes drawn by :func:`sample_codes` (one per token of
    ``latent_shape``), and the codes (n * tokens, ...)."""
    tokens = int(np.prod(latent_shape[1:], dtype=np.int64))
    codes = sample_codes(codebook, fit_codes, n * tokens, mode, seed)
    z = from_tokens(np.ascontiguousarray(codebook.inverse_transform(codes), dtype=np.float32), tuple(latent_shape))
    return decode(model, torch.from_numpy(z)), codes


def mean_pairwise_distance(features: torch.Tensor, max_points: int = 2000, seed: int = 0) -> float:
    """Mean Euclidean distance over all unordered pairs of (at most ``max_points``, drawn with ``seed``) rows of (N, d) features."""
    x = torch.as_tensor(features, dtype=torch.float64)
    if len(x) < 2:
        raise ValueError(f"need at least 2 feature rows for a pairwise distance, got {len(x)}")
    if len(x) > max_points:
        keep = np.random.default_rng(derived_seed(seed, "diversity")).choice(len(x), size=max_points, replace=False)
        x = x[torch.from_numpy(np.sort(keep))]
    return float(torch.nn.functional.pdist(x).mean())


def diversity(features: torch.Tensor, predicted: torch.Tensor, n_classes: int, *, max_points: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Diversity of a set from its features (N, d) and predicted classes (N,).

    Returns
    -------
    dict with ``mean_pairwise_feature_distance`` (feature units), ``distinct_samples`` (rows with
    distinct features: a codebook prior makes at most K distinct images), ``distinct_classes`` (of
    ``n_classes``), ``class_entropy_bits`` (of the predicted-class histogram; log2(n_classes)
    when balanced), ``class_counts`` (n_classes,), ``n``.
    """
    counts = np.bincount(np.asarray(predicted, dtype=np.int64), minlength=n_classes)
    p = counts[counts > 0] / counts.sum()
    return {
        "n": int(len(features)),
        "distinct_samples": int(len(torch.unique(torch.as_tensor(features), dim=0))),
        "mean_pairwise_feature_distance": mean_pairwise_distance(features, max_points, seed),
        "distinct_classes": int((counts > 0).sum()),
        "n_classes": int(n_classes),
        "class_entropy_bits": float(-(p * np.log2(p)).sum()),
        "max_class_entropy_bits": math.log2(n_classes),
        "class_counts": counts.tolist(),
    }
