"""Geodesic k-medoids: a codebook of real latent points, assigned along a kNN graph.

Distances are shortest-path lengths through the Euclidean-weighted kNN graph of the fitted
latents (:mod:`.graph`), an estimate of geodesic distance on the data manifold; codes are
regions of the graph around medoids rather than Euclidean Voronoi cells. Every codebook
vector is a fitted latent (a medoid), so it decodes to something the model has seen.

Fitting alternates a multi-source Dijkstra assignment with a per-cluster medoid update
(Voronoi iteration). Unseen points are attached to the fitted graph by their
``n_neighbors_`` nearest fitted points (:meth:`GeodesicKMedoids.predict`).

``n_neighbors='auto'`` picks k at fit time by a stated rule (:func:`.graph.auto_knn_graph`):
twice (:data:`.graph.AUTO_SAFETY`) the smallest k whose kNN graph over the fit set is
connected, at most :data:`.graph.AUTO_MAX_NEIGHBORS` and N - 1. The result is exactly the
estimator with that fixed k; the chosen k is ``n_neighbors_`` and the search is recorded in
``graph_stats_['auto_search']`` (so in a saved codebook's JSON).

Disconnected graphs (``join_components=False``): a node that no medoid can reach is assigned
to its Euclidean-nearest medoid, and its distances are Euclidean distances to the medoids;
reachable nodes keep infinite distances to medoids in other components.
"""

from __future__ import annotations

from numbers import Integral
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse.csgraph import dijkstra
from sklearn.base import _fit_context
from sklearn.utils._param_validation import Interval, StrOptions

from posthoc_vq.progress import report
from posthoc_vq.quantize.latent.base import CodebookEstimator, squared_distances
from posthoc_vq.quantize.latent.graph import KNNGraph, auto_knn_graph, build_knn_graph, graph_stats
from posthoc_vq.quantize.latent.knn import knn_query

#: Clusters larger than this evaluate only their this-many members geodesically closest to the
#: current medoid as new medoid candidates (bounds the all-pairs Dijkstra of the update).
MAX_MEDOID_CANDIDATES = 512
_SOURCE_CHUNK = 64  # Dijkstra sources per call: (chunk, N) float64 at a time
_QUERY_CHUNK = 1024  # held-out queries per block: (chunk, n_neighbors, D) float32 at a time


def euclidean_distances(Q: np.ndarray, C: np.ndarray) -> np.ndarray:
    """(len(Q), len(C)) float32 Euclidean distances."""
    return squared_distances(torch.from_numpy(Q), torch.from_numpy(C)).sqrt_().numpy()


class GeodesicKMedoids(CodebookEstimator):
    """k-medoids under shortest-path distance on a kNN graph of the latents.

    Parameters
    ----------
    n_clusters : int
        Codebook size K (1 <= K <= N).
    n_neighbors : int or 'auto'
        Neighbours per point in the graph, and fitted points a held-out query links to.
        ``'auto'``: chosen at fit time by the connectivity rule of :func:`.graph.auto_knn_graph`
        (module docstring).
    symmetry : {'union', 'mutual'}
        Graph symmetrisation (:func:`.graph.build_knn_graph`).
    graph : {'exact', 'hnsw'}
        Neighbour search used to build the graph.
    max_iter : int
        Maximum assignment/update rounds.
    init : 'spread' or (K,) int array
        ``'spread'``: k-means++-style D^2 sampling on graph distance, in doubling batches: the
        first seed is uniform from ``rng(random_state)``; each round runs one multi-source
        Dijkstra from the current seeds and draws as many new seeds as there are seeds already
        (without replacement, probability proportional to squared distance), so K seeds cost
        ceil(log2 K) Dijkstra runs. An array gives the initial medoids' node indices.
    random_state : int
        Seed of the initialisation and of an HNSW graph.
    join_components : bool
        Join a disconnected graph's components (see :mod:`.graph`); if False, unreachable nodes
        fall back to Euclidean distance (module docstring).

    Attributes
    ----------
    codebook_ : (K, D) float32, ``fit_points_[medoid_indices_]``.
    medoid_indices_ : (K,) int64 node indices of the medoids.
    init_medoid_indices_ : (K,) int64 medoids before the first update.
    labels_ : (N,) int64 code of every fitted point.
    node_distance_ : (N,) float32 graph distance (latent units) to the assigned medoid.
    fit_points_ : (N, D) float32 the fitted latents (graph nodes).
    n_neighbors_ : int the k in use (``n_neighbors``, or the value the 'auto' rule chose).
    auto_search_ : dict or None, the 'auto' search (:func:`.graph.auto_knn_graph`), also stored
        as ``graph_stats_['auto_search']``; None for a fixed k.
    graph_ : KNNGraph; graph_stats_ : dict (:func:`.graph.graph_stats`).
    n_iter_ : int rounds run; objective_ : float, ``node_distance_.sum()``;
    objective_history_ : list of float, the objective after each assignment (non-increasing
        when the graph is connected).
    """

    method = "geodesic"

    _parameter_constraints: dict = {
        "n_clusters": [Interval(Integral, 1, None, closed="left")],
        "n_neighbors": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "symmetry": [StrOptions({"union", "mutual"})],
        "graph": [StrOptions({"exact", "hnsw"})],
        "max_iter": [Interval(Integral, 0, None, closed="left")],
        "init": [StrOptions({"spread"}), "array-like"],
        "random_state": [Interval(Integral, 0, None, closed="left"), None],  # a numpy.random.default_rng seed
        "join_components": ["boolean"],
    }

    def __init__(
        self,
        n_clusters: int = 1024,
        *,
        n_neighbors: int | str = 50,
        symmetry: str = "union",
        graph: str = "exact",
        max_iter: int = 10,
        init: Any = "spread",
        random_state: int = 0,
        join_components: bool = True,
    ):
        self.n_clusters = n_clusters
        self.n_neighbors = n_neighbors
        self.symmetry = symmetry
        self.graph = graph
        self.max_iter = max_iter
        self.init = init
        self.random_state = random_state
        self.join_components = join_components

    # ------------------------------------------------------------------ fitting
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, Z, y=None) -> "GeodesicKMedoids":
        Z = self._validate_latents(Z, reset=True)
        self._check_n_samples(len(Z))
        options = dict(symmetry=self.symmetry, method=self.graph, join_components=self.join_components, random_state=self.random_state)
        if self.n_neighbors == "auto":
            graph, search = auto_knn_graph(Z, **options)
            n_neighbors = search["n_neighbors"]
        else:
            graph, search, n_neighbors = build_knn_graph(Z, self.n_neighbors, **options), None, int(self.n_neighbors)
        adj = graph.adjacency.astype(np.float64)  # Dijkstra works in float64; convert once
        medoids = self._initial_medoids(Z, adj, np.random.default_rng(self.random_state))
        self.init_medoid_indices_ = medoids.copy()
        history, n_iter = [], 0
        for n_iter in range(1, self.max_iter + 1):
            report("geodesic medoid iterations", n_iter - 1, self.max_iter)  # the total is the cap: a converged fit ends early
            labels, dist, reach = self._assign(Z, adj, medoids)
            history.append(float(dist.sum(dtype=np.float64)))
            new = self._update_medoids(adj, medoids, labels, dist, reach)
            if np.array_equal(new, medoids):
                break
            medoids = new
        else:  # stopped by max_iter (or max_iter == 0): assign to the medoids we return
            labels, dist, _ = self._assign(Z, adj, medoids)
            history.append(float(dist.sum(dtype=np.float64)))
        report("geodesic medoid iterations", n_iter, n_iter)
        self._set_state(Z, graph, medoids, labels, dist, n_neighbors, search)
        self.n_iter_ = n_iter
        self.objective_history_ = history
        return self

    def _initial_medoids(self, Z: np.ndarray, adj: sp.csr_matrix, rng: np.random.Generator) -> np.ndarray:
        """(K,) int64 distinct node indices to start from."""
        n, k = len(Z), int(self.n_clusters)
        if isinstance(self.init, str):  # 'spread' (_parameter_constraints)
            return self._spread_seeds(Z, adj, k, rng)
        medoids = np.asarray(self.init)
        if medoids.shape != (k,) or not np.issubdtype(medoids.dtype, np.integer):
            raise ValueError(f"init array must be ({k},) integer node indices, got {medoids.dtype} {medoids.shape}")
        if medoids.min() < 0 or medoids.max() >= n or len(np.unique(medoids)) != k:
            raise ValueError(f"init indices must be distinct and lie in [0, {n})")
        return medoids.astype(np.int64)

    @staticmethod
    def _spread_seeds(Z: np.ndarray, adj: sp.csr_matrix, k: int, rng: np.random.Generator) -> np.ndarray:
        n = len(Z)
        seeds = np.array([rng.integers(n)], dtype=np.int64)
        while len(seeds) < k:
            d = dijkstra(adj, indices=seeds, min_only=True)
            lost = ~np.isfinite(d)
            if lost.any():  # unreachable from every seed: Euclidean stand-in
                d[lost] = euclidean_distances(Z[lost], Z[seeds]).min(1)
            w = d * d  # zero exactly at the seeds, positive elsewhere (edge weights are > 0)
            batch = min(len(seeds), k - len(seeds))
            take = min(batch, int(np.count_nonzero(w)))
            new = rng.choice(n, size=take, replace=False, p=w / w.sum()) if take else np.empty(0, np.int64)
            if take < batch:  # fewer weighted candidates than needed: fill uniformly
                free = np.setdiff1d(np.arange(n), np.concatenate([seeds, new]))
                new = np.concatenate([new, rng.choice(free, size=batch - take, replace=False)])
            seeds = np.concatenate([seeds, new.astype(np.int64)])
        return seeds

    @staticmethod
    def _assign(Z: np.ndarray, adj: sp.csr_matrix, medoids: np.ndarray):
        """Nearest medoid of every node: labels (N,) int64, distance (N,) float32, reachable (N,) bool."""
        dist, _, source = dijkstra(adj, indices=medoids, min_only=True, return_predecessors=True)
        reach = np.isfinite(dist)
        code_of = np.full(len(Z), -1, dtype=np.int64)
        code_of[medoids] = np.arange(len(medoids))
        labels = np.full(len(Z), -1, dtype=np.int64)
        labels[reach] = code_of[source[reach]]
        dist = dist.astype(np.float32)
        if not reach.all():
            e = euclidean_distances(Z[~reach], Z[medoids])
            labels[~reach], dist[~reach] = e.argmin(1), e.min(1)
        return labels, dist, reach

    @staticmethod
    def _update_medoids(adj, medoids, labels, dist, reach) -> np.ndarray:
        """Per cluster, the member minimising the summed distance to the cluster's other members.

        Distances are shortest paths inside the cluster's induced subgraph, not global
        geodesics (which would need Dijkstra over the whole graph per candidate); they can only
        be longer. Only graph-reached members take part. The current medoid's shortest-path
        tree lies inside its cluster (Dijkstra grows each source's region from itself), so its
        induced distances equal its global ones: the chosen medoid's cost is at most the
        current cost, so the objective never increases (on a connected graph; nodes under the
        Euclidean fallback are not covered by this argument). A candidate that cannot reach every
        member inside the cluster has infinite cost and is never chosen. Ties keep the
        current medoid, so the iteration cannot cycle.
        """
        nodes = np.flatnonzero(reach)
        # Grouped by cluster, ascending distance within: each group starts with its medoid
        # (distance exactly 0; every edge weight is > 0), followed by its nearest members.
        order = nodes[np.lexsort((dist[nodes], labels[nodes]))]
        bounds = np.concatenate([[0], np.cumsum(np.bincount(labels[order], minlength=len(medoids)))])
        permuted = adj[order][:, order].tocsr()
        new = medoids.copy()
        for c in range(len(medoids)):
            s, e = bounds[c], bounds[c + 1]
            if e - s < 3:  # one or two members: every member has the same cost
                continue
            block = permuted[s:e, s:e]
            n_cand = min(e - s, MAX_MEDOID_CANDIDATES)
            cost = np.concatenate(
                [
                    dijkstra(block, indices=np.arange(a, min(a + _SOURCE_CHUNK, n_cand))).sum(1)
                    for a in range(0, n_cand, _SOURCE_CHUNK)
                ]
            )
            new[c] = order[s + int(np.argmin(cost))]  # argmin takes the first: position 0 = current
        return new

    def _set_state(self, Z, graph: KNNGraph, medoids, labels, dist, n_neighbors: int, search: dict | None) -> None:
        self.fit_points_ = Z
        self.graph_ = graph
        self.n_neighbors_ = int(n_neighbors)
        self.auto_search_ = search
        self.graph_stats_ = graph_stats(graph) | ({"auto_search": search} if search is not None else {})
        self.medoid_indices_ = np.asarray(medoids, dtype=np.int64)
        self.codebook_ = Z[self.medoid_indices_].copy()
        self.labels_ = np.asarray(labels, dtype=np.int64)
        self.node_distance_ = np.asarray(dist, dtype=np.float32)
        self.objective_ = float(self.node_distance_.sum(dtype=np.float64))
        self._medoid_distances = None  # (N_fit, K) cache for transform, built on first use

    # ------------------------------------------------------------------ held-out points
    def _link(self, Q: np.ndarray):
        """Each query's edges into the fitted graph: node indices (Nq, k) and weights (Nq, k).

        A query equal to a fitted point is that node: its extra edges are dropped (set to inf),
        so it gets the node's own code and distance rather than shortcuts past the node's edges.
        """
        k = min(self.n_neighbors_, len(self.fit_points_))
        _, idx = knn_query(self.fit_points_, Q, k)
        idx = np.asarray(idx, dtype=np.int64)
        d = np.empty(idx.shape, dtype=np.float32)
        for s in range(0, len(Q), _QUERY_CHUNK):
            diff = Q[s : s + _QUERY_CHUNK, None, :] - self.fit_points_[idx[s : s + _QUERY_CHUNK]]
            d[s : s + _QUERY_CHUNK] = np.sqrt(np.einsum("nkd,nkd->nk", diff, diff))
        same = (d == 0).any(1, keepdims=True)
        d[same & (d > 0)] = np.inf
        return idx, d

    def predict(self, Z, return_distance: bool = False):
        """Code of the geodesically nearest medoid.

        A query is linked to its ``n_neighbors_`` nearest fitted points with Euclidean edge
        weights; its distance to the nearest medoid is then min_j (||z - z_j|| +
        node_distance_[j]) and its code is that of the minimising j. This is exact on the
        fitted graph plus that query's edges (queries are not linked to each other, so a batch
        gives the same answers as one query at a time).

        Returns
        -------
        labels : (N,) int64
        distance : (N,) float32 geodesic distance in latent units (if ``return_distance``).
        """
        idx, d = self._link(self._validate_latents(Z, reset=False))
        total = d + self.node_distance_[idx]
        best = total.argmin(1)
        rows = np.arange(len(idx))
        labels = self.labels_[idx[rows, best]]
        return (labels, total[rows, best]) if return_distance else labels

    def _medoid_distance_matrix(self) -> np.ndarray:
        """(N_fit, K) float32 graph distance from every fitted node to every medoid.

        Built on first use and cached: K * N_fit * 4 bytes (287 MiB for K=1024, N=70,000).
        Nodes no medoid reaches get Euclidean distances, as in fitting.
        """
        if self._medoid_distances is None:
            adj = self.graph_.adjacency.astype(np.float64)
            m = self.medoid_indices_
            out = np.empty((len(self.fit_points_), len(m)), dtype=np.float32)
            for a in range(0, len(m), _SOURCE_CHUNK):
                out[:, a : a + _SOURCE_CHUNK] = dijkstra(adj, indices=m[a : a + _SOURCE_CHUNK]).T
            lost = ~np.isfinite(out).any(1)
            if lost.any():
                out[lost] = euclidean_distances(self.fit_points_[lost], self.codebook_)
            self._medoid_distances = out
        return self._medoid_distances

    def transform(self, Z) -> np.ndarray:
        """(N, K) float32 geodesic distances to every medoid, linking queries as in :meth:`predict`.

        Entries are inf for medoids in graph components the query cannot reach.
        ``transform(Z).argmin(1) == predict(Z)`` up to exact ties.
        """
        idx, d = self._link(self._validate_latents(Z, reset=False))
        to_medoid = self._medoid_distance_matrix()
        out = np.empty((len(idx), self.n_codes), dtype=np.float32)
        for s in range(0, len(idx), _QUERY_CHUNK):
            i, w = idx[s : s + _QUERY_CHUNK], d[s : s + _QUERY_CHUNK]
            block = np.full((len(i), self.n_codes), np.inf, dtype=np.float32)
            for j in range(i.shape[1]):
                np.minimum(block, w[:, j : j + 1] + to_medoid[i[:, j]], out=block)
            out[s : s + _QUERY_CHUNK] = block
        return out

    # ------------------------------------------------------------------ persistence
    def state_tensors(self) -> dict[str, torch.Tensor]:
        self._check_fitted()
        adj = self.graph_.adjacency
        arrays = {
            "codebook": self.codebook_,
            "fit_points": self.fit_points_,
            "medoid_indices": self.medoid_indices_,
            "labels": self.labels_,
            "node_distance": self.node_distance_,
            "graph_indptr": adj.indptr.astype(np.int64),
            "graph_indices": adj.indices.astype(np.int64),
            "graph_data": adj.data.astype(np.float32),
        }
        return {name: torch.from_numpy(np.ascontiguousarray(a)) for name, a in arrays.items()}

    def state_info(self) -> dict[str, Any]:
        return {
            "graph_stats": self.graph_stats_,
            "n_neighbors": self.n_neighbors_,
            "n_iter": self.n_iter_,
            "objective": self.objective_,
            "objective_history": self.objective_history_,
        }

    def load_state(self, tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> None:
        t = {name: v.numpy() for name, v in tensors.items()}
        n = len(t["fit_points"])
        adjacency = sp.csr_matrix((t["graph_data"], t["graph_indices"], t["graph_indptr"]), shape=(n, n))
        stats = info["graph_stats"]
        graph = KNNGraph(adjacency, stats["n_neighbors"], stats["symmetry"], stats["joined_edges"])
        # records written before n_neighbors='auto' existed hold only the configured (integer) k
        n_neighbors = info.get("n_neighbors", self.n_neighbors)
        if not isinstance(n_neighbors, Integral):
            raise ValueError(f"the record's state has no fitted n_neighbors (params say {self.n_neighbors!r})")
        self._set_state(
            t["fit_points"].astype(np.float32), graph, t["medoid_indices"], t["labels"], t["node_distance"],
            n_neighbors, stats.get("auto_search"),
        )
        self.n_features_in_ = self.dim
        self.n_iter_ = int(info["n_iter"])
        self.objective_history_ = list(info.get("objective_history", [self.objective_]))
