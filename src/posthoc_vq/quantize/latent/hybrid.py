"""Hybrid quantizer: Euclidean k-means places the codes, geodesic k-medoids refines them.

k-means is a cheap, well-spread start; snapping its centroids to fitted points makes them
graph nodes (and latents the decoder has seen), and the geodesic refinement then moves each
medoid to the centre of its region along the kNN graph.
"""

from __future__ import annotations

from numbers import Integral

import numpy as np
import scipy.sparse as sp
from sklearn.utils._param_validation import Interval

from posthoc_vq.quantize.latent.geodesic import GeodesicKMedoids, euclidean_distances
from posthoc_vq.quantize.latent.kmeans import KMeans
from posthoc_vq.quantize.latent.knn import knn_query

#: Nearest fitted points looked up per centroid when snapping; if all are already taken by
#: other centroids, the nearest free point is found by a full scan.
SNAP_CANDIDATES = 8


def snap_to_points(Z: np.ndarray, C: np.ndarray) -> np.ndarray:
    """(K,) int64 distinct indices of fitted points standing in for centroids.

    Each centroid takes its nearest fitted point; on a collision the later one takes its next
    nearest free point. Centroids claim in order of their distance to their nearest point,
    so the centroid that sits closest to a contested point keeps it.

    Parameters
    ----------
    Z : (N, D) float32 fitted latents.
    C : (K, D) float32 centroids, K <= N.
    """
    _, idx = knn_query(Z, C, min(SNAP_CANDIDATES, len(Z)))
    idx = np.asarray(idx, dtype=np.int64)
    nearest_dist = np.linalg.norm(Z[idx[:, 0]] - C, axis=1)
    taken = np.zeros(len(Z), dtype=bool)
    out = np.empty(len(C), dtype=np.int64)
    for c in np.argsort(nearest_dist, kind="stable"):
        free = idx[c][~taken[idx[c]]]
        if len(free):
            j = free[0]
        else:
            pool = np.flatnonzero(~taken)
            j = pool[euclidean_distances(C[c : c + 1], Z[pool]).argmin()]
        out[c], taken[j] = j, True
    return out


class HybridKMeansGeodesic(GeodesicKMedoids):
    """Geodesic k-medoids started from snapped k-means centroids.

    Parameters are those of :class:`GeodesicKMedoids` except ``init``, plus
    ``kmeans_max_iter`` (Lloyd iterations of the initialising :class:`KMeans`, which uses the
    same ``n_clusters`` and ``random_state``). ``init_medoid_indices_`` holds the snapped
    centroids and ``objective_history_[0]`` their objective, so the refinement's gain is
    ``objective_history_[0] - objective_``.
    """

    method = "hybrid"

    _parameter_constraints: dict = {
        **{name: c for name, c in GeodesicKMedoids._parameter_constraints.items() if name != "init"},
        "kmeans_max_iter": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(
        self,
        n_clusters: int = 1024,
        *,
        n_neighbors: int | str = 50,
        symmetry: str = "union",
        graph: str = "exact",
        max_iter: int = 10,
        kmeans_max_iter: int = 20,
        random_state: int = 0,
        join_components: bool = True,
    ):
        # Set directly (not via super().__init__) so that get_params lists exactly these.
        self.n_clusters = n_clusters
        self.n_neighbors = n_neighbors
        self.symmetry = symmetry
        self.graph = graph
        self.max_iter = max_iter
        self.kmeans_max_iter = kmeans_max_iter
        self.random_state = random_state
        self.join_components = join_components

    def _initial_medoids(self, Z: np.ndarray, adj: sp.csr_matrix, rng: np.random.Generator) -> np.ndarray:
        km = KMeans(int(self.n_clusters), max_iter=self.kmeans_max_iter, random_state=self.random_state).fit(Z)
        return snap_to_points(Z, np.ascontiguousarray(km.codebook_, dtype=np.float32))
