"""Per-channel diagnostic of a latent space and of its codebooks: which channels spread, how many dimensions the
tokens really use, and which channels carry the quantization error.

For the tokens (one C-vector per latent position) of the fit split:

* ``spread``: each channel's mean and standard deviation;
* ``effective_dimension``: the participation ratio ``(sum l)^2 / sum l^2`` of the eigenvalues ``l`` of the tokens'
  covariance (C when every direction carries the same variance, 1 when one does), and the number of principal
  directions that hold 90 % and 99 % of the variance.

For each codebook, on the evaluated split's tokens: the mean squared error ``(z - q(z))^2`` per channel, and each
channel's share of the total, beside its share of the variance (a channel whose error share is far above its
variance share is one the codebook serves badly).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from posthoc_vq.latents import run_latents
from posthoc_vq.quantize.codebooks import open_codebook
from posthoc_vq.quantize.latent.base import predict_codes
from posthoc_vq.run import Run


def effective_dimension(tokens: np.ndarray) -> dict[str, Any]:
    """Participation ratio and the dimensions holding 90 % / 99 % of the variance of tokens (N, C)."""
    x = np.asarray(tokens, dtype=np.float64)
    cov = np.cov(x, rowvar=False)
    eig = np.clip(np.linalg.eigvalsh(cov)[::-1], 0.0, None)  # descending
    cumulative = np.cumsum(eig) / eig.sum()
    return {
        "participation_ratio": float(eig.sum() ** 2 / np.sum(eig**2)),
        "dims_90": int(np.searchsorted(cumulative, 0.90) + 1),
        "dims_99": int(np.searchsorted(cumulative, 0.99) + 1),
        "eigenvalues": eig.tolist(),
    }


def channel_errors(tokens: np.ndarray, reconstructed: np.ndarray) -> dict[str, Any]:
    """Per-channel mean squared error of reconstructed tokens (N, C) and each channel's share of the total."""
    err = np.mean((np.asarray(tokens, dtype=np.float64) - np.asarray(reconstructed, dtype=np.float64)) ** 2, axis=0)
    return {"mse": err.tolist(), "share": (err / err.sum()).tolist() if err.sum() > 0 else [0.0] * len(err), "total_mse": float(err.sum())}


def channel_diagnostic(run: Run | str, codebooks: Sequence[str] = (), *, split: str = "test", fit_split: str = "train",
                       data_dir: str | None = None) -> dict[str, Any]:
    """The diagnostic of a run's latents (``fit_split``) and of its ``codebooks`` on ``split`` (see the module docstring)."""
    run = Run.open(run)
    fit = run_latents(run.root, fit_split, "mu", data_dir=data_dir).tokens()
    test = run_latents(run.root, split, "mu", data_dir=data_dir).tokens()
    variance = fit.var(axis=0, dtype=np.float64)
    out: dict[str, Any] = {
        "fit_split": fit_split, "split": split, "n_fit_tokens": len(fit), "n_tokens": len(test), "channels": fit.shape[1],
        "spread": {"mean": fit.mean(axis=0, dtype=np.float64).tolist(), "std": np.sqrt(variance).tolist(),
                   "variance_share": (variance / variance.sum()).tolist()},
        "effective_dimension": effective_dimension(fit),
        "codebooks": {},
    }
    for name in codebooks:
        estimator, _ = open_codebook(run, name)
        codes = predict_codes(estimator, test)
        out["codebooks"][name] = channel_errors(test, estimator.inverse_transform(codes))
    return out
