"""Interpolation smoothness: decode paths between pairs of test latents and measure how images change.

Paths (each ``steps`` points, endpoints included, from z_a to z_b):

* ``linear``: z(t) = (1 - t) z_a + t z_b, t evenly spaced in [0, 1].
* ``graph geodesic``: for a codebook that keeps its kNN graph (geodesic, hybrid), on vector
  latents (the graph links whole latents; on a grid it would link tokens): each
  endpoint is attached to its nearest fitted latent, the shortest path between those two
  nodes is taken in the graph (Euclidean edge weights, scipy Dijkstra), and the polyline
  z_a -> nodes -> z_b is resampled at ``steps`` points evenly spaced in arc length, so it
  has as many steps as the linear path.
* either path quantized: every point replaced by its codebook vector (the post-hoc VQ
  model's own interpolation; piecewise constant, so changes come in jumps). A codebook that
  needs class labels (``class-conditional``) codes each point with the class of the nearer end
  of its path (:func:`path_labels`: the first half with z_a's class, the second with z_b's),
  so the class switches once, at the middle.

Per path, with x_s the decoded images: step change c_s = mean |x_{s+1} - x_s| over pixels
(intensity units, images in [0, 1]); reported are the mean over steps, the max over steps
and their ratio max/mean (1 for evenly spread change, up to steps - 1 for a single jump).
``endpoint_class_fraction``: the fraction of intermediate images (endpoints excluded)
that the domain classifier assigns to the class it assigns to either of the path's own
end images; the path is judged against its own ends, not the true labels, so
reconstruction errors do not count against it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse.csgraph import dijkstra

from posthoc_vq.evaluation.generation import quantize_latents
from posthoc_vq.evaluation.reconstruction import decode
from posthoc_vq.metrics.intervals import mean_ci
from posthoc_vq.quantize.latent.base import CodebookEstimator
from posthoc_vq.quantize.latent.knn import knn_query
from posthoc_vq.seeding import derived_seed

_SOURCE_CHUNK = 16  # Dijkstra sources per call: (chunk, N) float64 distances and int32 predecessors


def interpolation_pairs(labels: np.ndarray, n_pairs: int, seed: int = 0) -> np.ndarray:
    """(n_pairs, 2) int64 indices of distinct images, drawn with ``seed``; the two have different labels when the set has 2+ classes."""
    labels = np.asarray(labels)
    if len(labels) < 2:
        raise ValueError(f"need at least 2 images to interpolate, got {len(labels)}")
    rng = np.random.default_rng(derived_seed(seed, "interpolation-pairs"))
    mixed = len(np.unique(labels)) > 1
    pairs: list[tuple[int, int]] = []
    while len(pairs) < n_pairs:
        a, b = rng.integers(len(labels), size=2)
        if a != b and (not mixed or labels[a] != labels[b]):
            pairs.append((int(a), int(b)))
    return np.asarray(pairs, dtype=np.int64).reshape(-1, 2)


def linear_paths(z_a: np.ndarray, z_b: np.ndarray, steps: int) -> np.ndarray:
    """(P, steps, *L) float32 points (1 - t) z_a + t z_b for t = linspace(0, 1, steps); z_a, z_b (P, *L)."""
    if steps < 3:
        raise ValueError(f"steps must be >= 3 (two endpoints and an intermediate point), got {steps}")
    t = np.linspace(0.0, 1.0, steps, dtype=np.float32).reshape(1, steps, *([1] * (z_a.ndim - 1)))  # (1, S, 1...)
    return ((1 - t) * z_a[:, None] + t * z_b[:, None]).astype(np.float32)


def resample_polyline(points: np.ndarray, steps: int) -> np.ndarray:
    """(steps, D) points evenly spaced in arc length along the polyline through ``points`` (m, D), ends included."""
    seg = np.linalg.norm(np.diff(points, axis=0), axis=1)  # (m - 1,)
    cum = np.concatenate([[0.0], np.cumsum(seg)])
    if cum[-1] == 0:
        return np.repeat(points[:1], steps, axis=0).astype(np.float32)
    target = np.linspace(0.0, cum[-1], steps)
    i = np.clip(np.searchsorted(cum, target, side="right") - 1, 0, len(seg) - 1)
    frac = np.where(seg[i] > 0, (target - cum[i]) / np.where(seg[i] > 0, seg[i], 1.0), 0.0)
    return (points[i] + frac[:, None] * (points[i + 1] - points[i])).astype(np.float32)


def graph_geodesic_paths(fit_points: np.ndarray, adjacency: sp.spmatrix, z_a: np.ndarray, z_b: np.ndarray,
                         steps: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Shortest paths through a kNN graph of fitted latents, resampled to ``steps`` points.

    Parameters
    ----------
    fit_points : (N, D) float32 graph nodes' latents.
    adjacency : (N, N) symmetric sparse graph with Euclidean edge weights.
    z_a, z_b : (P, D) float32 endpoints (attached to their nearest nodes).

    Returns
    -------
    paths : (P, steps, D) float32.
    info : ``nodes_mean`` (graph nodes per path), ``length_ratio_mean`` (polyline length over
        ||z_b - z_a||, >= 1).

    Raises
    ------
    ValueError if an endpoint's node cannot reach the other's (a disconnected graph).
    """
    _, na = knn_query(fit_points, z_a, 1)
    _, nb = knn_query(fit_points, z_b, 1)
    na, nb = na[:, 0], nb[:, 0]
    adj = sp.csr_matrix(adjacency, dtype=np.float64)
    sources = np.unique(na)
    row_of = {int(s): r for r, s in enumerate(sources)}
    preds = np.empty((len(sources), adj.shape[0]), dtype=np.int32)
    for s in range(0, len(sources), _SOURCE_CHUNK):
        _, preds[s : s + _SOURCE_CHUNK] = dijkstra(adj, indices=sources[s : s + _SOURCE_CHUNK], return_predecessors=True)
    paths, n_nodes, ratios = [], [], []
    for p in range(len(z_a)):
        pred = preds[row_of[int(na[p])]]
        nodes = [int(nb[p])]
        while nodes[-1] != na[p]:
            nxt = int(pred[nodes[-1]])
            if nxt < 0:
                raise ValueError(f"graph node {nb[p]} is not reachable from node {na[p]}: the kNN graph is disconnected")
            nodes.append(nxt)
        poly = np.concatenate([z_a[p : p + 1], fit_points[nodes[::-1]], z_b[p : p + 1]])
        paths.append(resample_polyline(poly, steps))
        n_nodes.append(len(nodes))
        direct = float(np.linalg.norm(z_b[p] - z_a[p]))
        ratios.append(float(np.linalg.norm(np.diff(poly, axis=0), axis=1).sum()) / direct if direct > 0 else 1.0)
    return np.stack(paths), {"nodes_mean": float(np.mean(n_nodes)), "length_ratio_mean": float(np.mean(ratios))}


def path_labels(labels_a: np.ndarray, labels_b: np.ndarray, steps: int) -> np.ndarray:
    """(P, steps) int64 class label of each path point: its nearer end's, step s < steps / 2 taking ``labels_a`` (P,)
    (so does the middle point t = 0.5 of an odd ``steps``), the rest ``labels_b`` (P,)."""
    first = (np.arange(steps) < steps / 2)[None, :]  # (1, S)
    return np.where(first, np.asarray(labels_a, dtype=np.int64)[:, None], np.asarray(labels_b, dtype=np.int64)[:, None])


def quantize_paths(codebook: CodebookEstimator, paths: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
    """(P, S, *L) float32: every token of ``paths`` (P, S, *L) replaced by its codebook vector.

    ``labels`` (P, S): class label of each path point (:func:`path_labels`), needed by a
    class-conditional codebook and ignored by the others.
    """
    flat = None if labels is None else np.asarray(labels).reshape(-1)
    return quantize_latents(codebook, paths.reshape(-1, *paths.shape[2:]), flat).reshape(paths.shape)


def decode_paths(model: Any, paths: np.ndarray) -> torch.Tensor:
    """(P, S, C, H, W) images in [0, 1] of latent paths (P, S, *L)."""
    p, s = paths.shape[:2]
    images = decode(model, torch.from_numpy(np.ascontiguousarray(paths.reshape(p * s, *paths.shape[2:]))))
    return images.view(p, s, *images.shape[1:])


def path_smoothness(images: torch.Tensor, predicted: torch.Tensor) -> dict[str, Any]:
    """Smoothness of decoded paths.

    Parameters
    ----------
    images : (P, S, C, H, W) decoded path images in [0, 1].
    predicted : (P, S) int64 classes the domain classifier assigns to them.

    Returns
    -------
    dict with ``step_change_mean`` and ``step_change_max`` (per-path mean and max of the step
    change, each as a mean with 95% CI over paths), ``step_change_max_overall``, ``max_over_mean``
    (mean over paths that change at all), ``endpoint_class_fraction`` (mean with CI over paths),
    ``endpoint_classes_differ`` (fraction of paths), ``n_paths``, ``steps``.
    """
    p, s = images.shape[:2]
    change = (images[:, 1:] - images[:, :-1]).abs().flatten(2).mean(2).double().numpy()  # (P, S - 1)
    per_mean, per_max = change.mean(1), change.max(1)
    moving = per_mean > 0
    ends = torch.stack([predicted[:, :1], predicted[:, -1:]], 2)  # (P, 1, 2)
    inner = predicted[:, 1:-1, None]  # (P, S - 2, 1)
    in_ends = (inner == ends).any(2).double().mean(1).numpy()  # (P,)
    return {
        "n_paths": int(p),
        "steps": int(s),
        "step_change_mean": mean_ci(per_mean).to_dict(),
        "step_change_max": mean_ci(per_max).to_dict(),
        "step_change_max_overall": float(change.max()),
        "max_over_mean": float(np.mean(per_max[moving] / per_mean[moving])) if moving.any() else None,
        "endpoint_class_fraction": mean_ci(in_ends).to_dict(),
        "endpoint_classes_differ": float((predicted[:, 0] != predicted[:, -1]).double().mean()),
    }
