"""k-nearest-neighbour graphs over latent vectors, the substrate of the geodesic quantizers.

A :class:`KNNGraph` holds a symmetric sparse adjacency whose edge weights are Euclidean
distances, so shortest paths through it approximate geodesic distances on the data
manifold. Two symmetrisations are offered:

* ``'union'``: i and j are linked if either is among the other's ``n_neighbors`` nearest;
* ``'mutual'``: only if each is among the other's nearest (sparser, more often disconnected).

Zero-distance edges (duplicate latent vectors) are stored with weight :data:`ZERO_WEIGHT`
rather than 0: sparse arithmetic (``A + B``, ``maximum``, ``eliminate_zeros``) silently drops
explicit zeros, and some scipy versions' ``csgraph`` treat them as missing edges, which would
split duplicates apart.

A disconnected graph emits :class:`DisconnectedGraphWarning`; by default its components are
then joined by their closest inter-component pairs (:func:`connect_components`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse.csgraph import connected_components

from posthoc_vq.quantize.latent.base import as_latents, squared_distances
from posthoc_vq.quantize.latent.knn import knn_exact, knn_hnsw

#: Weight stored for an edge between identical points (see the module docstring).
ZERO_WEIGHT = 1e-12

SYMMETRIES = ("union", "mutual")
METHODS = ("exact", "hnsw")


class DisconnectedGraphWarning(UserWarning):
    """The kNN graph has more than one connected component."""


@dataclass
class KNNGraph:
    """A symmetric kNN graph.

    Attributes
    ----------
    adjacency : scipy.sparse.csr_matrix, (N, N) float32
        Symmetric, no self-loops; entry (i, j) is the Euclidean distance between points i and j
        (:data:`ZERO_WEIGHT` for duplicates); absent entries are non-edges.
    n_neighbors : int
        Neighbours per point used to build it (after clipping to N - 1).
    symmetry : str
        ``'union'`` or ``'mutual'``.
    joined_edges : int
        Undirected edges added by :func:`connect_components` (0 if none).
    """

    adjacency: sp.csr_matrix
    n_neighbors: int
    symmetry: str
    joined_edges: int = 0


def pair_distances(Z: np.ndarray, rows: np.ndarray, cols: np.ndarray, chunk: int = 1 << 16) -> np.ndarray:
    """(E,) float32 Euclidean distances ||Z[rows] - Z[cols]||, computed from differences.

    Differences (not the ``|a|^2 - 2ab + |b|^2`` expansion) give exactly 0 for duplicates and
    exactly the same value for (i, j) and (j, i), which keeps the adjacency symmetric.
    """
    out = np.empty(len(rows), dtype=np.float32)
    for s in range(0, len(rows), chunk):
        diff = Z[rows[s : s + chunk]] - Z[cols[s : s + chunk]]
        out[s : s + chunk] = np.sqrt(np.einsum("ij,ij->i", diff, diff))
    return out


def _edge_weights(Z: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    return np.maximum(pair_distances(Z, rows, cols), np.float32(ZERO_WEIGHT))


def build_knn_graph(
    Z,
    n_neighbors: int = 50,
    *,
    symmetry: str = "union",
    method: str = "exact",
    join_components: bool = True,
    random_state: int = 0,
) -> KNNGraph:
    """Symmetric kNN graph of ``Z`` with Euclidean edge weights.

    Parameters
    ----------
    Z : (N, D) float32 array or tensor
        Latent vectors.
    n_neighbors : int
        Neighbours per point, clipped to N - 1.
    symmetry : {'union', 'mutual'}
        How the directed kNN relation is made symmetric (see the module docstring).
    method : {'exact', 'hnsw'}
        ``knn_exact`` (brute force) or ``knn_hnsw`` (approximate, faiss HNSW).
    join_components : bool
        If the graph is disconnected, add closest-pair edges until it is connected.
    random_state : int
        Seed of the HNSW index (ignored by ``'exact'``).

    Returns
    -------
    KNNGraph
        Edge weights are recomputed from coordinate differences (see :func:`pair_distances`),
        so they do not carry the search's rounding.

    Warns
    -----
    DisconnectedGraphWarning
        If the graph (before joining) has more than one connected component.
    """
    if symmetry not in SYMMETRIES:
        raise ValueError(f"symmetry must be one of {SYMMETRIES}, got {symmetry!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if n_neighbors < 1:
        raise ValueError(f"n_neighbors must be >= 1, got {n_neighbors}")
    Z = as_latents(Z)
    n = len(Z)
    k = min(int(n_neighbors), n - 1)
    if k < 1:
        return KNNGraph(sp.csr_matrix((n, n), dtype=np.float32), max(k, 0), symmetry, 0)
    return graph_from_neighbors(Z, neighbor_indices(Z, k, method, random_state), symmetry, join_components)


def neighbor_indices(Z: np.ndarray, k: int, method: str, random_state: int = 0) -> np.ndarray:
    """(N, k) int64 indices of each point's k nearest other points, nearest first (HNSW pads with -1)."""
    if method == "exact":
        _, idx = knn_exact(Z, k, exclude_self=True)
    else:
        _, idx = knn_hnsw(Z, k, random_state=random_state, exclude_self=True)
    return np.asarray(idx, dtype=np.int64)


def _directed_pairs(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Deduplicated (rows, cols) of the directed kNN relation, without padding and self-pairs."""
    n = len(idx)
    rows = np.repeat(np.arange(n, dtype=np.int64), idx.shape[1])
    cols = idx.ravel()
    # HNSW pads missing neighbours with -1; with duplicates a search may return the point itself.
    # A pair listed twice would have its weight summed by the COO -> CSR conversion: dedupe.
    keep = (cols >= 0) & (cols != rows)
    pairs = np.unique(rows[keep] * n + cols[keep])
    return pairs // n, pairs % n


def graph_from_neighbors(Z: np.ndarray, idx: np.ndarray, symmetry: str, join_components: bool) -> KNNGraph:
    """The symmetric graph of a neighbour table ``idx`` (N, k), as :func:`build_knn_graph` builds it."""
    n, k = idx.shape
    rows, cols = _directed_pairs(idx)
    directed = sp.csr_matrix((_edge_weights(Z, rows, cols), (rows, cols)), shape=(n, n))
    # maximum() keeps an edge present in either direction; minimum() with an absent (0) entry
    # gives 0, which scipy drops, so only edges present in both directions survive.
    if symmetry == "union":
        adjacency = directed.maximum(directed.T)
    else:
        adjacency = directed.minimum(directed.T)
    adjacency = sp.csr_matrix(adjacency, dtype=np.float32)
    adjacency.eliminate_zeros()
    adjacency.sort_indices()

    n_comp = connected_components(adjacency, directed=False)[0]
    joined = 0
    if n_comp > 1:
        strategy = (
            "joining them by closest inter-component pairs"
            if join_components
            else "left disconnected (join_components=False)"
        )
        warnings.warn(
            f"kNN graph (n_neighbors={k}, symmetry={symmetry!r}) has {n_comp} connected components; {strategy}",
            DisconnectedGraphWarning,
            stacklevel=3,
        )
        if join_components:
            adjacency, joined = connect_components(adjacency, Z)
    return KNNGraph(adjacency, k, symmetry, joined)


# ---------------------------------------------------------------------------- n_neighbors='auto'

#: ``n_neighbors='auto'`` takes this many times the smallest connecting k (:func:`auto_knn_graph`).
AUTO_SAFETY = 2
#: ... and at most this many neighbours (also the deepest connectivity search).
AUTO_MAX_NEIGHBORS = 200


def _n_components(idx: np.ndarray, k: int, symmetry: str) -> int:
    """Connected components of the ``symmetry`` graph of the first k columns of ``idx`` (structure only)."""
    n = len(idx)
    rows, cols = _directed_pairs(idx[:, :k])
    a = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(n, n))
    if symmetry == "mutual":
        a = a.multiply(a.T)
    # directed=False: an edge in either direction links its ends, i.e. the union graph
    return int(connected_components(a, directed=False)[0])


def smallest_connected_k(idx: np.ndarray, symmetry: str = "union") -> tuple[int | None, list[list[int]]]:
    """Smallest k <= idx.shape[1] whose kNN graph (first k columns of ``idx``) is connected.

    The k-graph is a subgraph of the (k+1)-graph (neighbour lists are nested, for both
    symmetries), so connectivity is monotone in k: k = 1, 2, 4, ... (capped at ``idx.shape[1]``)
    until one connects, then bisection between the last disconnected and the first connected k.

    Returns
    -------
    k : int, or None if even ``idx.shape[1]`` neighbours leave the graph disconnected.
    tried : list of [k, components], in the order evaluated.
    """
    k_max = idx.shape[1]
    tried: list[list[int]] = []

    def connected(k: int) -> bool:
        tried.append([k, _n_components(idx, k, symmetry)])
        return tried[-1][1] == 1

    lo, k = 0, 1
    while not connected(k):
        if k == k_max:
            return None, tried
        lo, k = k, min(2 * k, k_max)
    hi = k
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if connected(mid):
            hi = mid
        else:
            lo = mid
    return hi, tried


def auto_knn_graph(
    Z, *, symmetry: str = "union", method: str = "exact", join_components: bool = True, random_state: int = 0
) -> tuple[KNNGraph, dict[str, Any]]:
    """The kNN graph with k chosen by the ``n_neighbors='auto'`` rule.

    Rule: k0 = the smallest k whose ``symmetry`` kNN graph over ``Z`` (neighbours from the
    ``method`` search) has one connected component (:func:`smallest_connected_k`), and
    k = min(:data:`AUTO_SAFETY` * k0, :data:`AUTO_MAX_NEIGHBORS`, N - 1). If no
    k <= min(AUTO_MAX_NEIGHBORS, N - 1) connects, k is that cap (and the graph is then joined as
    by :func:`build_knn_graph`). The neighbour search runs once, for the cap; every candidate
    and the final graph use the first k columns of its (nearest-first) table, so for
    ``'exact'`` the result is the graph ``build_knn_graph(Z, k)`` builds.

    Returns
    -------
    graph : KNNGraph
    search : dict
        ``smallest_connected_k`` (None if none up to the cap), ``safety_factor``,
        ``max_neighbors``, ``n_neighbors`` (the chosen k), ``tried`` ([k, components] pairs).
    """
    Z = as_latents(Z)
    n = len(Z)
    k_max = min(AUTO_MAX_NEIGHBORS, n - 1)
    if k_max < 1:  # 0 or 1 point: connected without any edge
        smallest, tried, chosen = (1 if n else None), [], 1
        graph = build_knn_graph(Z, 1, symmetry=symmetry, method=method, join_components=join_components)
    else:
        idx = neighbor_indices(Z, k_max, method, random_state)
        smallest, tried = smallest_connected_k(idx, symmetry)
        chosen = k_max if smallest is None else min(AUTO_SAFETY * smallest, k_max)
        graph = graph_from_neighbors(Z, idx[:, :chosen], symmetry, join_components)
    search = {
        "smallest_connected_k": smallest,
        "safety_factor": AUTO_SAFETY,
        "max_neighbors": AUTO_MAX_NEIGHBORS,
        "n_neighbors": int(chosen),
        "tried": tried,
    }
    return graph, search


def _component_gaps(Z: torch.Tensor, starts: np.ndarray) -> np.ndarray:
    """(C, C) squared closest-pair distance between components (inf on the diagonal).

    ``Z`` is sorted by component, component c occupying rows ``starts[c]:starts[c + 1]``.
    Each pair of components is scanned once (component c against the components after it),
    sum over pairs of |A| |B| distances in all.
    """
    n_comp = len(starts) - 1
    z_sq = (Z * Z).sum(1)
    gaps = np.full((n_comp, n_comp), np.inf, dtype=np.float32)
    for c in range(n_comp - 1):
        lo = starts[c + 1]
        chunk = max(1, (1 << 24) // (len(Z) - lo))  # (chunk, N - lo) float32 distances: 64 MiB
        for s in range(starts[c], lo, chunk):
            d = squared_distances(Z[s : min(s + chunk, lo)], Z[lo:], z_sq[lo:]).numpy()
            block = np.minimum.reduceat(d, starts[c + 1 : -1] - lo, axis=1).min(0)
            gaps[c, c + 1 :] = np.minimum(gaps[c, c + 1 :], block)
    gaps = np.minimum(gaps, gaps.T)
    np.fill_diagonal(gaps, np.inf)
    return gaps


def _closest_pair(Z: torch.Tensor, a: slice, b: slice) -> tuple[int, int]:
    """Row indices (i in a, j in b) of the closest pair between two row ranges of ``Z``."""
    zb = Z[b]
    zb_sq = (zb * zb).sum(1)
    chunk = max(1, (1 << 24) // len(zb))
    best = (np.inf, -1, -1)
    for s in range(a.start, a.stop, chunk):
        d = squared_distances(Z[s : min(s + chunk, a.stop)], zb, zb_sq)
        flat = int(d.argmin())
        if float(d.view(-1)[flat]) < best[0]:
            best = (float(d.view(-1)[flat]), s + flat // d.shape[1], b.start + flat % d.shape[1])
    return best[1], best[2]


def connect_components(adjacency: sp.spmatrix, Z) -> tuple[sp.csr_matrix, int]:
    """Join the components of a symmetric graph by closest pairs until it is connected.

    Single linkage on components (Kruskal): the closest-pair distance between every two
    components is tabulated, then components are joined in increasing order of that distance,
    skipping pairs already connected. Each added edge is the closest (Euclidean) pair between
    the two components it joins, and the C - 1 edges form a minimum spanning tree of the
    components, so a small component attaches to its nearest neighbour, not to a hub.

    Cost: every pair of points in different components is compared once, about
    sum over component pairs of |A| |B| D multiply-adds: at most half a brute-force kNN pass
    (N^2 D / 2), and small when one component holds nearly everything (the usual case).

    Parameters
    ----------
    adjacency : (N, N) sparse, symmetric
    Z : (N, D) float32 latent vectors of the nodes.

    Returns
    -------
    adjacency : (N, N) csr_matrix float32 with the new edges (both directions).
    n_added : int
        Undirected edges added: (number of components) - 1.
    """
    Z = as_latents(Z)
    adjacency = sp.csr_matrix(adjacency, dtype=np.float32)
    n_comp, labels = connected_components(adjacency, directed=False)
    if n_comp <= 1:
        return adjacency, 0
    order = np.argsort(labels, kind="stable")  # points grouped by component
    sizes = np.bincount(labels, minlength=n_comp)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    Zs = torch.from_numpy(Z[order])
    gaps = _component_gaps(Zs, starts)
    ca, cb = np.triu_indices(n_comp, k=1)
    root = np.arange(n_comp)  # union-find over components

    def find(c: int) -> int:
        while root[c] != c:
            root[c] = root[root[c]]
            c = root[c]
        return c

    new_rows, new_cols = [], []
    for e in np.argsort(gaps[ca, cb], kind="stable"):
        a, b = find(ca[e]), find(cb[e])
        if a == b:
            continue
        root[a] = b
        i, j = _closest_pair(Zs, slice(starts[ca[e]], starts[ca[e] + 1]), slice(starts[cb[e]], starts[cb[e] + 1]))
        new_rows.append(order[i])
        new_cols.append(order[j])
        if len(new_rows) == n_comp - 1:
            break
    rows = np.array(new_rows + new_cols, dtype=np.int64)
    cols = np.array(new_cols + new_rows, dtype=np.int64)
    extra = sp.csr_matrix((_edge_weights(Z, rows, cols), (rows, cols)), shape=adjacency.shape)
    joined = sp.csr_matrix(adjacency + extra, dtype=np.float32)
    joined.sort_indices()
    return joined, n_comp - 1


def graph_stats(graph_or_adjacency: KNNGraph | sp.spmatrix) -> dict[str, Any]:
    """JSON-able summary of a graph.

    Returns
    -------
    dict
        ``nodes``, ``edges`` (undirected, self-loops excluded), ``components``,
        ``largest_component`` (nodes), ``isolated`` (nodes of degree 0), ``degree_min``,
        ``degree_mean``, ``degree_max``, ``joined_edges``, ``symmetry`` and ``n_neighbors``
        (the last three ``0``/``None``/``None`` for a bare adjacency).
    """
    if isinstance(graph_or_adjacency, KNNGraph):
        g = graph_or_adjacency
        adjacency, joined, symmetry, k = g.adjacency, g.joined_edges, g.symmetry, g.n_neighbors
    else:
        adjacency, joined, symmetry, k = graph_or_adjacency, 0, None, None
    adjacency = sp.csr_matrix(adjacency)
    n = adjacency.shape[0]
    offdiag = adjacency - sp.diags(adjacency.diagonal())
    offdiag.eliminate_zeros()
    degree = np.diff(offdiag.indptr)
    n_comp, labels = connected_components(adjacency, directed=False)
    return {
        "nodes": int(n),
        "edges": int(sp.triu(offdiag, k=1).nnz),
        "components": int(n_comp),
        "largest_component": int(np.bincount(labels).max()) if n else 0,
        "isolated": int((degree == 0).sum()),
        "degree_min": int(degree.min()) if n else 0,
        "degree_mean": float(degree.mean()) if n else 0.0,
        "degree_max": int(degree.max()) if n else 0,
        "joined_edges": int(joined),
        "symmetry": symmetry,
        "n_neighbors": None if k is None else int(k),
    }
