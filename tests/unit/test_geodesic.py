"""Geodesic k-medoids and its k-means-initialised variant, checked against brute-force Dijkstra."""

import heapq
import json
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from scipy.sparse.csgraph import dijkstra
from sklearn.neighbors import NearestNeighbors

from posthoc_vq.quantize.latent import geodesic, knn
from posthoc_vq.quantize.latent.base import CodebookEstimator
from posthoc_vq.quantize.latent.geodesic import GeodesicKMedoids
from posthoc_vq.quantize.latent.graph import DisconnectedGraphWarning
from posthoc_vq.quantize.latent.hybrid import HybridKMeansGeodesic, snap_to_points
from posthoc_vq.quantize.latent.kmeans import KMeans
from posthoc_vq.quantize.latent.knn import knn_query

R_IN, R_OUT = 1.0, 2.5


def rings(n_in=150, n_out=250, seed=0):
    """Two concentric noisy circles in 3-D (evenly spaced angles, so each ring is one kNN piece)."""
    rng = np.random.default_rng(seed)
    parts = []
    for r, n in [(R_IN, n_in), (R_OUT, n_out)]:
        t = np.linspace(0, 2 * np.pi, n, endpoint=False) + rng.uniform(0, 0.5 / n, n)
        parts.append(np.stack([r * np.cos(t), r * np.sin(t), np.zeros(n)], 1) + rng.normal(0, 0.02, (n, 3)))
    return np.concatenate(parts).astype(np.float32), np.repeat([0, 1], [n_in, n_out])


@pytest.fixture(scope="module")
def data():
    return rings()


@pytest.fixture(scope="module")
def fitted(data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DisconnectedGraphWarning)  # the two rings get joined
        return GeodesicKMedoids(6, n_neighbors=8, random_state=0).fit(data[0])


def per_medoid_distances(model):
    """(K, N) graph distances, one single-source Dijkstra per medoid."""
    return np.stack([dijkstra(model.graph_.adjacency, indices=int(m)) for m in model.medoid_indices_])


def heap_dijkstra(adjacency, source):
    """Plain single-source Dijkstra (binary heap) on a CSR matrix: (N,) float64 distances."""
    dist = np.full(adjacency.shape[0], np.inf)
    dist[source], heap = 0.0, [(0.0, source)]
    while heap:
        d, u = heapq.heappop(heap)
        if d > dist[u]:
            continue
        row = slice(adjacency.indptr[u], adjacency.indptr[u + 1])
        for v, w in zip(adjacency.indices[row], adjacency.data[row]):
            if d + w < dist[v]:
                dist[v] = d + w
                heapq.heappush(heap, (d + w, v))
    return dist


def test_assignment_matches_per_medoid_dijkstra(fitted):
    assert fitted.graph_stats_["joined_edges"] == 1  # paths may cross between the rings
    G = per_medoid_distances(fitted)
    best = G.min(0)
    np.testing.assert_allclose(fitted.node_distance_, best, rtol=1e-6, atol=1e-7)
    # The assigned medoid attains the minimum (exact ties may pick either medoid).
    np.testing.assert_allclose(G[fitted.labels_, np.arange(G.shape[1])], best, rtol=1e-6, atol=1e-7)
    gap = np.sort(G, 0)[1] - best
    assert (fitted.labels_[gap > 1e-6] == G.argmin(0)[gap > 1e-6]).all()
    assert fitted.objective_ == pytest.approx(best.sum(), rel=1e-6)


def test_codebook_is_fitted_points_and_medoids_are_locally_optimal(fitted, data):
    Z = data[0]
    m = fitted.medoid_indices_
    assert fitted.codebook_.shape == (6, 3) and len(np.unique(m)) == 6
    np.testing.assert_array_equal(fitted.codebook_, Z[m])
    np.testing.assert_array_equal(fitted.labels_[m], np.arange(6))
    assert (fitted.node_distance_[m] == 0).all()
    assert fitted.n_iter_ < fitted.max_iter  # converged: no medoid moved in the last update
    h = fitted.objective_history_
    assert all(b <= a * (1 + 1e-6) for a, b in zip(h, h[1:])) and h[-1] == pytest.approx(fitted.objective_)
    # Converged medoid = minimiser of summed in-cluster (induced-subgraph) distances.
    for c, med in enumerate(m):
        members = np.flatnonzero(fitted.labels_ == c)
        D = dijkstra(fitted.graph_.adjacency[members][:, members])
        cost = D.sum(1)
        assert cost[members == med][0] <= cost.min() * (1 + 1e-9)


def test_deterministic_for_random_state(data, fitted):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DisconnectedGraphWarning)
        again = GeodesicKMedoids(6, n_neighbors=8, random_state=0).fit(data[0])
        other = GeodesicKMedoids(6, n_neighbors=8, random_state=1).fit(data[0])
    np.testing.assert_array_equal(again.medoid_indices_, fitted.medoid_indices_)
    np.testing.assert_array_equal(again.labels_, fitted.labels_)
    assert not np.array_equal(other.init_medoid_indices_, fitted.init_medoid_indices_)


def query_to_medoids(model, query, neighbours, shortest):
    """Shortest-path distances from ``query``, linked by Euclidean edges to the fitted points
    ``neighbours``, to every medoid: the fitted graph plus the query as node n, solved by ``shortest(graph, n)``."""
    n = len(model.fit_points_)
    A = model.graph_.adjacency.tocoo()
    w = np.linalg.norm(model.fit_points_[neighbours].astype(np.float64) - query, axis=1)
    rows = np.r_[A.row, np.full(len(w), n), neighbours]
    cols = np.r_[A.col, neighbours, np.full(len(w), n)]
    aug = sp.csr_matrix((np.r_[A.data, w, w], (rows, cols)), shape=(n + 1, n + 1))
    return shortest(aug, n)[model.medoid_indices_]


def test_held_out_predict_matches_augmented_graph(fitted):
    Q, _ = rings(20, 30, seed=5)
    labels, dist = fitted.predict(Q, return_distance=True)
    _, idx = knn_query(fitted.fit_points_, Q, fitted.n_neighbors)
    for q in range(len(Q)):
        to_medoid = query_to_medoids(fitted, Q[q], idx[q], heap_dijkstra)
        assert dist[q] == pytest.approx(to_medoid.min(), rel=1e-5)
        assert to_medoid[labels[q]] == pytest.approx(to_medoid.min(), rel=1e-5)


def test_fitted_points_get_their_own_codes(fitted, data):
    labels, dist = fitted.predict(data[0], return_distance=True)
    np.testing.assert_array_equal(labels, fitted.labels_)
    np.testing.assert_array_equal(dist, fitted.node_distance_)


def test_transform_consistent_with_predict(fitted, data):
    Q = np.concatenate([rings(20, 30, seed=6)[0], data[0][:50]])
    T = fitted.transform(Q)
    labels, dist = fitted.predict(Q, return_distance=True)
    assert T.shape == (len(Q), 6) and T.dtype == np.float32
    np.testing.assert_array_equal(T.argmin(1), labels)
    np.testing.assert_allclose(T.min(1), dist, rtol=1e-6)
    # A fitted point's row is exactly its column of per-medoid graph distances.
    np.testing.assert_allclose(T[20 + 30 :], per_medoid_distances(fitted)[:, :50].T, rtol=1e-6)


def test_save_load_round_trip(fitted, data):
    blob = st_save(fitted.state_tensors())
    info = json.loads(json.dumps(fitted.state_info()))
    loaded = GeodesicKMedoids(**fitted.get_params())
    loaded.load_state(st_load(blob), info)
    Q = np.concatenate([rings(20, 30, seed=7)[0], data[0][::10]])
    np.testing.assert_array_equal(loaded.predict(Q), fitted.predict(Q))
    np.testing.assert_array_equal(loaded.transform(Q), fitted.transform(Q))
    np.testing.assert_array_equal(loaded.codebook_, fitted.codebook_)
    assert loaded.graph_stats_ == fitted.graph_stats_ and loaded.objective_ == fitted.objective_
    assert (loaded.graph_.adjacency != fitted.graph_.adjacency).nnz == 0


def test_rings_are_followed_where_euclidean_cuts_across(data):
    Z, ring = data
    start = [0, 150]  # one medoid on each ring, both at angle ~0
    with pytest.warns(DisconnectedGraphWarning, match="2 connected components; left disconnected"):
        model = GeodesicKMedoids(2, n_neighbors=8, init=np.array(start), join_components=False).fit(Z)
    ring_of_code = ring[model.medoid_indices_]
    np.testing.assert_array_equal(ring_of_code[model.labels_], ring)  # each code is exactly one ring
    # Euclidean nearest medoid sends the far side of the outer ring to the inner medoid.
    euclid = CodebookEstimator.predict(model, Z)
    assert (ring_of_code[euclid] != ring).mean() > 0.1
    Q, q_ring = rings(10, 10, seed=8)
    np.testing.assert_array_equal(ring_of_code[model.predict(Q)], q_ring)


def test_unreachable_nodes_fall_back_to_euclidean(data):
    Z, ring = data
    with pytest.warns(DisconnectedGraphWarning):
        model = GeodesicKMedoids(2, n_neighbors=8, init=np.array([150, 275]), join_components=False).fit(Z)
    assert (ring[model.medoid_indices_] == 1).all()  # both medoids stay on the outer ring
    inner = ring == 0
    e = np.linalg.norm(Z[inner, None] - model.codebook_[None], axis=-1)
    np.testing.assert_array_equal(model.labels_[inner], e.argmin(1))
    np.testing.assert_allclose(model.node_distance_[inner], e.min(1), rtol=1e-5)
    T = model.transform(Z)
    assert np.isfinite(T).all() and (T.argmin(1) == model.predict(Z)).all()


def test_candidate_cap_and_max_iter(data, monkeypatch):
    monkeypatch.setattr(geodesic, "MAX_MEDOID_CANDIDATES", 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DisconnectedGraphWarning)
        capped = GeodesicKMedoids(3, n_neighbors=8, max_iter=1).fit(data[0])
    assert capped.n_iter_ == 1 and len(capped.objective_history_) in (1, 2)
    h = capped.objective_history_
    assert h[-1] <= h[0] * (1 + 1e-6)
    G = per_medoid_distances(capped)
    np.testing.assert_allclose(capped.node_distance_, G.min(0), rtol=1e-6, atol=1e-7)


def test_parameter_checks(data):
    Z = data[0]
    with pytest.raises(ValueError, match="n_clusters"):
        GeodesicKMedoids(len(Z) + 1).fit(Z)
    with pytest.raises(ValueError, match="distinct"):
        GeodesicKMedoids(2, init=np.array([3, 3])).fit(Z)
    with pytest.raises(ValueError, match="init"):
        GeodesicKMedoids(2, init="k-means++").fit(Z)
    with pytest.raises(ValueError, match="dimension"):
        GeodesicKMedoids(2, n_neighbors=8).fit(Z[:50]).predict(Z[:5, :2])


def test_hybrid_improves_on_its_init(data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DisconnectedGraphWarning)
        model = HybridKMeansGeodesic(6, n_neighbors=8, random_state=0).fit(data[0])
    assert model.method == "hybrid"
    np.testing.assert_array_equal(model.codebook_, data[0][model.medoid_indices_])
    centroids = KMeans(6, max_iter=20, random_state=0).fit(data[0]).codebook_
    np.testing.assert_array_equal(model.init_medoid_indices_, snap_to_points(data[0], centroids))
    assert model.objective_ <= model.objective_history_[0] * (1 + 1e-6)
    assert set(model.get_params()) == set(GeodesicKMedoids().get_params()) - {"init"} | {"kmeans_max_iter"}
    G = per_medoid_distances(model)
    np.testing.assert_allclose(model.node_distance_, G.min(0), rtol=1e-6, atol=1e-7)


def test_snap_resolves_collisions_with_next_nearest(data):
    Z = data[0]
    C = np.concatenate([Z[:1] + 0.01, np.repeat(Z[:1], 19, 0)])  # 20 centroids on one spot
    idx = snap_to_points(Z, C)
    assert len(np.unique(idx)) == 20
    assert idx[1] == 0  # the centroid exactly on point 0 claims it first
    # Together they take the 20 points nearest that spot (beyond the 8 looked-up candidates).
    d = np.linalg.norm(Z - Z[0], axis=1)
    np.testing.assert_array_equal(np.sort(idx), np.sort(np.argsort(d, kind="stable")[:20]))


def mixture(n, d=8, seed=0):
    """Token-like points: a seeded mixture of anisotropic Gaussians (as bench/codebooks.py's stand-in)."""
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 5, n)
    means, scales = 2.0 * rng.standard_normal((5, d)), np.exp(rng.uniform(-2.0, 0.5, (5, d)))
    return (means[label] + rng.standard_normal((n, d)) * scales[label]).astype(np.float32)


def reference_predict(model, Q):
    """Held-out assignment as first implemented: brute-force k nearest (scikit-learn), edge
    weights from the differences, queries on a fitted point are that node, argmin of weight + node distance."""
    Z = model.fit_points_
    _, idx = NearestNeighbors(n_neighbors=model.n_neighbors_, algorithm="brute").fit(Z).kneighbors(Q)
    diff = Q[:, None, :] - Z[idx]
    d = np.sqrt(np.einsum("nkd,nkd->nk", diff, diff))
    same = (d == 0).any(1, keepdims=True)
    d[same & (d > 0)] = np.inf
    total = d + model.node_distance_[idx]
    best = total.argmin(1)
    rows = np.arange(len(Q))
    return model.labels_[idx[rows, best]], total[rows, best]


@pytest.fixture(scope="module")
def tokens():
    """A geodesic codebook on 3,000 8-D mixture points (exact graph) and 2,000 held-out queries plus 100 fitted ones."""
    Z = mixture(5000, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DisconnectedGraphWarning)
        model = GeodesicKMedoids(24, n_neighbors=12, max_iter=3, random_state=0).fit(Z[:3000])
    return model, np.concatenate([Z[3000:], Z[:100]])


@pytest.mark.parametrize("block, chunk", [(None, None), (64, 32), (256, 100)])
def test_token_predict_matches_reference(tokens, block, chunk, monkeypatch):
    model, Q = tokens
    if block is not None:  # small blocks and chunks: many of them, far blocks skipped
        monkeypatch.setattr(knn, "QUERY_FIT_BLOCK", block)
        monkeypatch.setattr(knn, "QUERY_CHUNK", chunk)
    labels, dist = model.predict(Q, return_distance=True)
    ref_labels, ref_dist = reference_predict(model, Q)
    np.testing.assert_array_equal(labels, ref_labels)
    np.testing.assert_allclose(dist, ref_dist, rtol=1e-6)
    np.testing.assert_array_equal(labels[-100:], model.labels_[:100])  # fitted points keep their codes
    np.testing.assert_array_equal(dist[-100:], model.node_distance_[:100])
    np.testing.assert_array_equal(model.transform(Q[:300]).argmin(1), labels[:300])


def test_token_predict_matches_per_query_dijkstra(tokens, monkeypatch):
    model, Q = tokens
    monkeypatch.setattr(knn, "QUERY_FIT_BLOCK", 128)
    monkeypatch.setattr(knn, "QUERY_CHUNK", 16)
    Q = Q[:25]
    labels, dist = model.predict(Q, return_distance=True)
    _, idx = NearestNeighbors(n_neighbors=model.n_neighbors_, algorithm="brute").fit(model.fit_points_).kneighbors(Q)
    for q in range(len(Q)):
        to_medoid = query_to_medoids(model, Q[q], idx[q], lambda graph, source: dijkstra(graph, indices=source))
        assert dist[q] == pytest.approx(to_medoid.min(), rel=1e-5)
        assert to_medoid[labels[q]] == pytest.approx(to_medoid.min(), rel=1e-5)
