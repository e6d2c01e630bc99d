"""k-NN manifold precision and recall of a generated set (Kynkäänniemi et al., 2019).

Each set's manifold is estimated as the union of balls around its points, each ball's
radius being the distance to that point's k-th nearest neighbour within its own set:

* precision = fraction of generated points inside the real manifold (quality: samples
  look like data);
* recall = fraction of real points inside the generated manifold (coverage: the data's
  variety is reproduced).

Repeated points are merged before a set's balls are built: a sample set drawn from a
finite codebook repeats images, and with repeats the k-th neighbour is a copy at distance
0, which would shrink every ball to a point and drive recall to 0 whatever the coverage.
The manifold of a set is the union of balls around its *distinct* points; precision still
counts every generated sample.

Distances are Euclidean in the domain feature space (:mod:`.features`), computed on
(chunk, N) tiles so memory stays at ``chunk * N * 4`` bytes.
"""

from __future__ import annotations

from typing import Any

import torch

DEFAULT_K = 3
_CHUNK = 1024


def _as_features(x, name: str) -> torch.Tensor:
    x = torch.as_tensor(x, dtype=torch.float32)
    if x.ndim != 2:
        raise ValueError(f"{name} must be (N, d) features, got shape {tuple(x.shape)}")
    return x


def knn_radii(features: torch.Tensor, k: int = DEFAULT_K, chunk: int = _CHUNK) -> torch.Tensor:
    """(N,) float32 distance of each row of ``features`` (N, d) to its k-th nearest other row."""
    x = _as_features(features, "features")
    if not 1 <= k < len(x):
        raise ValueError(f"k must lie in [1, N-1={len(x) - 1}], got {k}")
    out = torch.empty(len(x))
    for s in range(0, len(x), chunk):
        d = torch.cdist(x[s : s + chunk], x)  # (chunk, N)
        d[torch.arange(d.shape[0]), torch.arange(s, s + d.shape[0])] = float("inf")  # not its own neighbour
        out[s : s + chunk] = d.topk(k, dim=1, largest=False).values[:, -1]
    return out


def coverage_fraction(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, chunk: int = _CHUNK) -> float:
    """Fraction of ``points`` (M, d) within ``radii[j]`` (N,) of at least one ``centres[j]`` (N, d)."""
    points, centres = _as_features(points, "points"), _as_features(centres, "centres")
    inside = 0
    for s in range(0, len(points), chunk):
        d = torch.cdist(points[s : s + chunk], centres)  # (chunk, N)
        inside += int((d <= radii[None, :]).any(1).sum())
    return inside / len(points)


def manifold_precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = DEFAULT_K) -> dict[str, Any]:
    """k-NN precision and recall of ``fake`` (M, d) against ``real`` (N, d) features.

    Returns
    -------
    dict with ``precision`` and ``recall`` (fractions in [0, 1]), ``k``, ``n_real``, ``n_fake`` and
    their distinct counts ``n_real_distinct``, ``n_fake_distinct`` (k < each distinct count).
    """
    real, fake = _as_features(real, "real"), _as_features(fake, "fake")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"real and fake features differ in width: {real.shape[1]} vs {fake.shape[1]}")
    real_set, fake_set = torch.unique(real, dim=0), torch.unique(fake, dim=0)  # distinct points carry the manifold
    return {
        "precision": coverage_fraction(fake, real_set, knn_radii(real_set, k)),
        "recall": coverage_fraction(real, fake_set, knn_radii(fake_set, k)),
        "k": k,
        "n_real": len(real),
        "n_fake": len(fake),
        "n_real_distinct": len(real_set),
        "n_fake_distinct": len(fake_set),
    }
