"""Latent geometry ("quantization amenability"): pure functions on arrays.

* intrinsic dimension from nearest-neighbour distances: TwoNN (Facco et al. 2017, the
  line-through-the-origin fit of scikit-dimension's ``TwoNN``) and the Levina-Bickel MLE
  pooled over points as MacKay and Ghahramani advise (the mean of the per-point inverse
  estimates, inverted);
* the Zador slope of a k-means distortion curve: a d-dimensional density quantized with K
  codes has distortion D(K) ~ K^(-2/d) for large K, so the log-log slope s gives the
  effective dimension d_eff = -2 / s;
* per-class spread (RMS distance to the class mean) and between-class separation
  (centroid distances over the within-class spread);
* kNN-graph connectivity against k (union symmetry: i ~ j when either lists the other).

The neighbour lists and the distortions come in as arrays: they are computed by the
package's exact kNN (:func:`posthoc_vq.quantize.latent.knn.knn_exact`) and k-means, which
live in a higher layer (see :mod:`posthoc_vq.evaluation.geometry`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components


def _distances(knn_dist: np.ndarray, need: int) -> np.ndarray:
    d = np.asarray(knn_dist, dtype=np.float64)
    if d.ndim != 2 or d.shape[1] < need:
        raise ValueError(f"need (N, >= {need}) neighbour distances, got shape {d.shape}")
    if (np.diff(d, axis=1) < 0).any():
        raise ValueError("neighbour distances must be ascending along each row")
    return d


def twonn_dimension(knn_dist: np.ndarray, discard_fraction: float = 0.1) -> float:
    """TwoNN intrinsic dimension.

    Parameters
    ----------
    knn_dist : (N, k >= 2) ascending Euclidean distances of each point to its nearest
        neighbours (itself excluded); only the first two columns are used.
    discard_fraction : share of the largest ratios mu = r2 / r1 left out of the fit (they
        come from points off the manifold or at its boundary).

    Returns
    -------
    d : the slope of -log(1 - F(mu)) against log(mu), fitted through the origin, where F is
        the empirical distribution function of mu. Points with r1 = 0 (duplicates) are dropped.
    """
    d = _distances(knn_dist, 2)
    r1, r2 = d[:, 0], d[:, 1]
    keep = r1 > 0
    mu = np.sort(r2[keep] / r1[keep])
    n = len(mu)
    if not 0 <= discard_fraction < 1:
        raise ValueError(f"discard_fraction must lie in [0, 1), got {discard_fraction}")
    if n < 3:
        raise ValueError(f"TwoNN needs at least 3 points with distinct nearest neighbours, got {n}")
    m = int(n * (1 - discard_fraction))
    F = np.arange(1, m + 1) / n  # empirical CDF at the m smallest ratios (scikit-dimension's)
    x, y = np.log(mu[:m]), -np.log(1 - F)
    return float(np.dot(x, y) / np.dot(x, x))


def mle_dimension(knn_dist: np.ndarray, k: int = 20) -> float:
    """Levina-Bickel maximum-likelihood intrinsic dimension from ``k`` neighbours.

    Parameters
    ----------
    knn_dist : (N, >= k) ascending Euclidean distances to the nearest neighbours (self excluded).
    k : neighbours per point, k >= 2.

    Returns
    -------
    d : 1 / mean_i [ (1 / (k - 1)) sum_{j < k} log(T_k(x_i) / T_j(x_i)) ], the pooled
        estimate of MacKay and Ghahramani (averaging inverses removes the upward bias of
        averaging the per-point estimates). Points with T_1 = 0 (duplicates) are dropped.
    """
    if k < 2:
        raise ValueError(f"k must be >= 2, got {k}")
    d = _distances(knn_dist, k)[:, :k]
    d = d[d[:, 0] > 0]
    if not len(d):
        raise ValueError("every point has a duplicate at distance 0")
    inv = np.log(d[:, -1:] / d[:, :-1]).sum(1) / (k - 1)  # (N,) per-point 1 / m_k
    return float(1.0 / inv.mean())


@dataclass(frozen=True)
class ZadorFit:
    """Least-squares line log D = intercept + slope * log K, and d_eff = -2 / slope (inf if slope >= 0)."""

    slope: float
    intercept: float
    d_eff: float


def zador_slope(Ks: np.ndarray, D: np.ndarray) -> ZadorFit:
    """Log-log slope of a distortion curve D(K) (Ks (M,) codebook sizes, D (M,) mean squared distances, M >= 2)."""
    K, Dv = np.asarray(Ks, dtype=np.float64), np.asarray(D, dtype=np.float64)
    if K.shape != Dv.shape or K.ndim != 1 or len(K) < 2:
        raise ValueError(f"Ks and D must be 1-D of equal length >= 2, got {K.shape} and {Dv.shape}")
    if (K <= 0).any() or (Dv <= 0).any():
        raise ValueError("Ks and D must be positive for a log-log fit")
    slope, intercept = np.polyfit(np.log(K), np.log(Dv), 1)
    return ZadorFit(float(slope), float(intercept), float(-2.0 / slope) if slope < 0 else float("inf"))


@dataclass(frozen=True)
class ClassSpread:
    """Within-class spread.

    Attributes
    ----------
    classes : (C,) int64 class labels present, ascending.
    counts : (C,) int64 vectors per class.
    centroids : (C, D) float64 class means.
    rms : (C,) float64 RMS distance of each class's vectors to its mean, sqrt(mean ||x - mu_c||^2).
    overall : pooled RMS over all vectors, sqrt(sum_c counts_c rms_c^2 / N).
    """

    classes: np.ndarray
    counts: np.ndarray
    centroids: np.ndarray
    rms: np.ndarray
    overall: float


def class_spread(X: np.ndarray, y: np.ndarray) -> ClassSpread:
    """:class:`ClassSpread` of vectors X (N, D) with class labels y (N,)."""
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y)
    if X.ndim != 2 or y.shape != (len(X),) or not len(X):
        raise ValueError(f"need X (N, D) and y (N,) with N > 0, got {X.shape} and {y.shape}")
    classes, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    sums = np.zeros((len(classes), X.shape[1]))
    np.add.at(sums, inverse, X)
    centroids = sums / counts[:, None]
    sq = ((X - centroids[inverse]) ** 2).sum(1)  # (N,)
    per_class = np.bincount(inverse, weights=sq, minlength=len(classes))
    return ClassSpread(classes.astype(np.int64), counts.astype(np.int64), centroids, np.sqrt(per_class / counts), float(np.sqrt(sq.mean())))


@dataclass(frozen=True)
class ClassSeparation:
    """Between-class separation.

    Attributes
    ----------
    centroid_distances : (C, C) float64 Euclidean distances between class means.
    mean_distance, min_distance : over the C (C - 1) / 2 pairs.
    closest_pair : the two classes whose means are closest.
    ratio : mean_distance / pooled within-class RMS spread.
    min_ratio : min_distance / pooled within-class RMS spread.
    fisher : tr(S_B) / tr(S_W): between-class over within-class scatter, each per vector
        (S_B = sum_c n_c (mu_c - mu)(mu_c - mu)^T / N, S_W = sum_i (x_i - mu_{y_i})(...)^T / N).
    """

    centroid_distances: np.ndarray
    mean_distance: float
    min_distance: float
    closest_pair: tuple[int, int]
    ratio: float
    min_ratio: float
    fisher: float


def class_separation(X: np.ndarray, y: np.ndarray, spread: ClassSpread | None = None) -> ClassSeparation:
    """:class:`ClassSeparation` of vectors X (N, D) with labels y (N,) of at least two classes."""
    s = spread or class_spread(X, y)
    C = len(s.classes)
    if C < 2:
        raise ValueError(f"class separation needs at least two classes, got {C}")
    diff = s.centroids[:, None, :] - s.centroids[None, :, :]
    dist = np.sqrt((diff**2).sum(-1))  # (C, C)
    iu = np.triu_indices(C, 1)
    pairs = dist[iu]
    a = int(np.argmin(pairs))
    mean = (s.counts[:, None] * s.centroids).sum(0) / s.counts.sum()
    between = float((s.counts * ((s.centroids - mean) ** 2).sum(1)).sum() / s.counts.sum())
    within = s.overall**2
    safe = lambda v: float(v / s.overall) if s.overall > 0 else float("inf")  # noqa: E731
    return ClassSeparation(
        dist, float(pairs.mean()), float(pairs.min()), (int(s.classes[iu[0][a]]), int(s.classes[iu[1][a]])),
        safe(pairs.mean()), safe(pairs.min()), float(between / within) if within > 0 else float("inf"),
    )


@dataclass(frozen=True)
class ConnectivityCurve:
    """Connected components of the union-symmetric kNN graph for each k.

    Attributes
    ----------
    ks : (M,) int64 neighbours per node, ascending.
    components : (M,) int64 connected components at each k.
    largest_fraction : (M,) float64 share of the nodes in the largest component.
    connected_k : smallest k in ``ks`` with one component, None if none.
    """

    ks: np.ndarray
    components: np.ndarray
    largest_fraction: np.ndarray
    connected_k: int | None


def knn_adjacency(knn_idx: np.ndarray, k: int) -> sp.csr_matrix:
    """(N, N) symmetric 0/1 adjacency of the first ``k`` neighbours of each node (union: A or A^T)."""
    idx = np.asarray(knn_idx, dtype=np.int64)[:, :k]
    N = len(idx)
    rows = np.repeat(np.arange(N), idx.shape[1])
    A = sp.csr_matrix((np.ones(rows.size, dtype=np.int8), (rows, idx.ravel())), shape=(N, N))
    return ((A + A.T) > 0).astype(np.int8).tocsr()


def connectivity_curve(knn_idx: np.ndarray, ks) -> ConnectivityCurve:
    """Components of the kNN graph against k.

    Parameters
    ----------
    knn_idx : (N, k_max) int64 neighbour indices, nearest first, self excluded.
    ks : neighbour counts to try, each in [1, k_max].
    """
    idx = np.asarray(knn_idx)
    ks = np.unique(np.asarray(ks, dtype=np.int64))
    if idx.ndim != 2 or not len(ks) or ks[0] < 1 or ks[-1] > idx.shape[1]:
        raise ValueError(f"ks must lie in [1, {idx.shape[1] if idx.ndim == 2 else '?'}] (the neighbours given), got {ks.tolist()}")
    comps, largest = [], []
    for k in ks:
        n, labels = connected_components(knn_adjacency(idx, int(k)), directed=False)
        comps.append(n)
        largest.append(np.bincount(labels).max() / len(idx))
    comps = np.asarray(comps, dtype=np.int64)
    one = np.flatnonzero(comps == 1)
    return ConnectivityCurve(ks, comps, np.asarray(largest), int(ks[one[0]]) if len(one) else None)
