"""Fréchet distance and kernel (KID) distance between two sets of domain features.

Both are computed by torchmetrics (the 'metrics' extra, imported when called; ``FrechetInceptionDistance`` and
``KernelInceptionDistance``) with a custom ``feature`` module. The features are computed
once per image set by the domain feature network (:mod:`.features`) and handed to the
metrics through :class:`PrecomputedFeatures`, a pass-through module; so the test set's
features are reused for every comparison, and no Inception network is ever built (it
would be downloaded).

FD: ||mu_r - mu_f||^2 + Tr(S_r + S_f - 2 (S_r S_f)^{1/2}), feature means and unbiased
covariances accumulated in float64. Unit: squared feature units. It is biased upward for
small sets, so compare FDs only at equal set sizes. Named ``FD-<dataset>``, never FID.

KID: the unbiased MMD^2 estimate with the cubic polynomial kernel
k(x, y) = (x.y / d + 1)^3, averaged over ``subsets`` random subsets of ``subset_size``
from each set; reported with its standard deviation over subsets. Its expected value is
0 when both sets come from one distribution.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

from posthoc_vq.extras import require

KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000


def require_torchmetrics(what: str = "FD/KID (--metrics fd, kid)") -> None:
    """Fail naming the 'metrics' extra unless torchmetrics (and its FID/KID modules) import."""
    require("torchmetrics.image.fid", "metrics", what)
    require("torchmetrics.image.kid", "metrics", what)


class PrecomputedFeatures(nn.Module):
    """Identity on (N, d) feature rows: the ``feature`` module torchmetrics calls on already-embedded sets."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = int(num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != self.num_features:
            raise ValueError(f"expected (N, {self.num_features}) features, got {tuple(x.shape)}")
        return x


def _check_pair(real: torch.Tensor, fake: torch.Tensor, min_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    real, fake = torch.as_tensor(real), torch.as_tensor(fake)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"features must be (N, d) and (M, d) with one d, got {tuple(real.shape)} and {tuple(fake.shape)}")
    if len(real) < min_rows or len(fake) < min_rows:
        raise ValueError(f"need at least {min_rows} feature rows per set, got {len(real)} and {len(fake)}")
    if not (torch.isfinite(real).all() and torch.isfinite(fake).all()):
        raise ValueError("features contain NaN or infinite values")
    return real.float(), fake.float()


def frechet_distance(real: torch.Tensor, fake: torch.Tensor, batch_size: int = 4096) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets.

    Parameters
    ----------
    real : (N, d) float features of the reference set (N >= 2).
    fake : (M, d) float features of the compared set (M >= 2).

    Returns
    -------
    float, >= 0 up to rounding (squared feature units).
    """
    fid = require("torchmetrics.image.fid", "metrics", "The Fréchet distance (--metrics fd)")
    real, fake = _check_pair(real, fake, 2)
    metric = fid.FrechetInceptionDistance(feature=PrecomputedFeatures(real.shape[1]))
    for rows, is_real in ((real, True), (fake, False)):
        for i in range(0, len(rows), batch_size):
            metric.update(rows[i : i + batch_size], real=is_real)
    return float(metric.compute())


def kernel_distance(
    real: torch.Tensor, fake: torch.Tensor, *, subsets: int = KID_SUBSETS, subset_size: int = KID_SUBSET_SIZE, seed: int = 0,
) -> dict[str, Any]:
    """Kernel (KID-style) distance between two feature sets, with its spread over subsets.

    Parameters
    ----------
    real, fake : (N, d) and (M, d) float features.
    subsets : number of random subset pairs.
    subset_size : rows per subset, clipped to ``min(N, M)``.
    seed : seeds the subset draws (torchmetrics draws them from torch's global generator,
        which is forked here, so the caller's random state is left untouched).

    Returns
    -------
    dict with ``mean`` and ``std`` (over subsets; squared kernel-feature units), ``subsets``,
    ``subset_size``.
    """
    kid = require("torchmetrics.image.kid", "metrics", "The kernel distance (--metrics kid)")
    real, fake = _check_pair(real, fake, 2)
    size = min(subset_size, len(real), len(fake))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        metric = kid.KernelInceptionDistance(feature=PrecomputedFeatures(real.shape[1]), subsets=subsets, subset_size=size)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return {"mean": float(mean), "std": float(std), "subsets": subsets, "subset_size": size}

