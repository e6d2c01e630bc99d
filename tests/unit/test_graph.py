"""kNN graph construction, symmetrisation, component joining and statistics."""

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components, dijkstra, minimum_spanning_tree, shortest_path

from posthoc_vq.quantize.latent.graph import (
    ZERO_WEIGHT,
    DisconnectedGraphWarning,
    KNNGraph,
    build_knn_graph,
    connect_components,
    graph_stats,
)


def edge_set(adjacency):
    coo = sp.triu(adjacency, k=1).tocoo()
    return {(int(i), int(j)) for i, j in zip(coo.row, coo.col)}


def line_points():
    # On a line: 0, 1, 3, 7, 8.5. 2-NN: 0->{1,2} 1->{0,2} 2->{1,0} 3->{4,2} 4->{3,2}.
    x = np.array([0.0, 1.0, 3.0, 7.0, 8.5], dtype=np.float32)
    return np.stack([x, np.zeros_like(x)], 1)


@pytest.mark.parametrize(
    "symmetry, expected",
    [
        ("union", {(0, 1), (0, 2), (1, 2), (3, 4), (2, 3), (2, 4)}),
        ("mutual", {(0, 1), (0, 2), (1, 2), (3, 4)}),
    ],
)
def test_symmetrisation_hand_built(symmetry, expected):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DisconnectedGraphWarning)  # mutual splits {0,1,2} | {3,4}
        g = build_knn_graph(line_points(), 2, symmetry=symmetry, join_components=False)
    assert edge_set(g.adjacency) == expected
    assert (g.adjacency != g.adjacency.T).nnz == 0
    assert g.n_neighbors == 2 and g.symmetry == symmetry and g.joined_edges == 0


def test_one_neighbour_union_vs_mutual():
    # 1-NN: 0->1 1->0 2->1 3->4 4->3
    Z = line_points()
    with pytest.warns(DisconnectedGraphWarning, match="2 connected components; left disconnected"):
        union = build_knn_graph(Z, 1, symmetry="union", join_components=False)
    with pytest.warns(DisconnectedGraphWarning, match="3 connected components"):
        mutual = build_knn_graph(Z, 1, symmetry="mutual", join_components=False)
    assert edge_set(union.adjacency) == {(0, 1), (1, 2), (3, 4)}
    assert edge_set(mutual.adjacency) == {(0, 1), (3, 4)}


def test_weights_are_euclidean_and_symmetric():
    Z = np.random.default_rng(0).normal(size=(200, 5)).astype(np.float32)
    g = build_knn_graph(Z, 8)
    coo = g.adjacency.tocoo()
    ref = np.linalg.norm(Z[coo.row].astype(np.float64) - Z[coo.col], axis=1)
    np.testing.assert_allclose(coo.data, ref, rtol=1e-6)
    assert (g.adjacency != g.adjacency.T).nnz == 0
    assert g.adjacency.diagonal().sum() == 0
    # Every point keeps at least its own 8 nearest neighbours (union).
    assert np.diff(g.adjacency.indptr).min() >= 8


def test_shortest_paths_match_floyd_warshall():
    Z = np.random.default_rng(1).normal(size=(40, 3)).astype(np.float32)
    g = build_knn_graph(Z, 4)
    assert connected_components(g.adjacency)[0] == 1
    W = np.full((40, 40), np.inf)
    coo = g.adjacency.tocoo()
    W[coo.row, coo.col] = coo.data
    np.fill_diagonal(W, 0.0)
    for m in range(40):  # Floyd-Warshall, vectorised over (i, j)
        W = np.minimum(W, W[:, m : m + 1] + W[m : m + 1, :])
    np.testing.assert_allclose(dijkstra(g.adjacency), W, rtol=1e-9)
    np.testing.assert_allclose(shortest_path(g.adjacency, method="FW"), W, rtol=1e-9)
    # Triangle inequality: no graph path is shorter than the straight line.
    direct = np.linalg.norm(Z[:, None].astype(np.float64) - Z[None], axis=-1)
    assert (W >= direct - 1e-5).all()


def test_stats_three_components():
    # {0,1,2,3}: triangle 0-1-2 plus 2-3; {4,5}; {6} isolated.
    edges = [(0, 1, 1.0), (1, 2, 2.0), (0, 2, 2.5), (2, 3, 1.0), (4, 5, 3.0)]
    r, c, w = zip(*edges)
    A = sp.coo_matrix((w + w, (r + c, c + r)), shape=(7, 7)).tocsr()
    s = graph_stats(A)
    assert (s["nodes"], s["edges"], s["components"], s["largest_component"], s["isolated"]) == (7, 5, 3, 4, 1)
    assert (s["degree_min"], s["degree_max"]) == (0, 3)
    assert s["degree_mean"] == pytest.approx(10 / 7)
    s = graph_stats(KNNGraph(A, 2, "union", 0))
    assert (s["n_neighbors"], s["symmetry"], s["joined_edges"]) == (2, "union", 0)


def blobs():
    # Three far-apart blobs of different sizes along x: components {A}, {B}, {C}.
    rng = np.random.default_rng(2)
    centres, sizes = [0.0, 10.0, 25.0], [20, 30, 40]
    Z = np.concatenate([rng.normal(size=(n, 2)) * 0.5 + [c, 0.0] for c, n in zip(centres, sizes)])
    return Z.astype(np.float32), np.repeat([0, 1, 2], sizes)


def closest_pair(Z, a, b):
    ia, ib = np.flatnonzero(a), np.flatnonzero(b)
    d = np.linalg.norm(Z[ia, None].astype(np.float64) - Z[None, ib], axis=-1)
    i, j = np.unravel_index(d.argmin(), d.shape)
    return tuple(sorted((int(ia[i]), int(ib[j])))), d.min()


def test_disconnected_warns_and_joins_by_closest_pairs():
    Z, blob = blobs()
    with pytest.warns(DisconnectedGraphWarning, match="3 connected components; joining"):
        g = build_knn_graph(Z, 5)
    with pytest.warns(DisconnectedGraphWarning):
        raw = build_knn_graph(Z, 5, join_components=False)
    assert graph_stats(raw)["components"] == 3
    n_comp, labels = connected_components(g.adjacency, directed=False)
    assert n_comp == 1 and g.joined_edges == 2 and graph_stats(g)["joined_edges"] == 2
    added = edge_set(g.adjacency) - edge_set(raw.adjacency)
    assert edge_set(raw.adjacency) <= edge_set(g.adjacency) and len(added) == 2
    # Components joined as a minimum spanning tree: A-B and B-C, never the far pair A-C.
    expected = {closest_pair(Z, blob == 0, blob == 1)[0], closest_pair(Z, blob == 1, blob == 2)[0]}
    assert added == expected
    for i, j in added:
        assert g.adjacency[i, j] == pytest.approx(np.linalg.norm(Z[i] - Z[j]), rel=1e-6)


def test_joining_is_a_minimum_spanning_tree_of_components():
    rng = np.random.default_rng(5)
    sizes = [3, 25, 1, 40, 12, 7]
    centres = rng.uniform(-30, 30, size=(len(sizes), 4))
    Z = np.concatenate([rng.normal(size=(n, 4)) + c for c, n in zip(centres, sizes)]).astype(np.float32)
    comp = np.repeat(np.arange(len(sizes)), sizes)
    # Components are cliques (unit weights), so the bare graph has exactly these 6 components.
    A = sp.csr_matrix((comp[:, None] == comp[None, :]) & ~np.eye(len(Z), dtype=bool), dtype=np.float32)
    joined, n_added = connect_components(A, Z)
    assert n_added == 5 and connected_components(joined)[0] == 1
    added = edge_set(joined) - edge_set(A)
    gaps = np.zeros((6, 6))
    for a in range(6):
        for b in range(a + 1, 6):
            _, gaps[a, b] = closest_pair(Z, comp == a, comp == b)
    mst = minimum_spanning_tree(gaps).tocoo()
    expected = {closest_pair(Z, comp == a, comp == b)[0] for a, b in zip(mst.row, mst.col)}
    assert added == expected


def test_connect_components_on_bare_adjacency():
    Z, blob = blobs()
    # Only within-blob chains: 3 components; connect_components adds components - 1 edges.
    r = np.flatnonzero(blob[:-1] == blob[1:])
    A = sp.coo_matrix((np.ones(2 * len(r)), (np.r_[r, r + 1], np.r_[r + 1, r])), shape=(90, 90))
    joined, n_added = connect_components(A, Z)
    assert n_added == 2 and connected_components(joined)[0] == 1
    same, n0 = connect_components(joined, Z)
    assert n0 == 0 and (same != joined).nnz == 0


def test_duplicates_get_epsilon_weights_and_stay_connected():
    rng = np.random.default_rng(3)
    Z = rng.normal(size=(60, 2)).astype(np.float32)
    Z = np.concatenate([Z, Z[:5], Z[:2]])  # 0..4 doubled, 0..1 tripled
    with warnings.catch_warnings():
        warnings.simplefilter("error", DisconnectedGraphWarning)
        g = build_knn_graph(Z, 6)
    for i, j in [(0, 60), (4, 64), (0, 65), (60, 65), (1, 66)]:
        assert g.adjacency[i, j] == np.float32(ZERO_WEIGHT) > 0
    assert (g.adjacency.data > 0).all()
    dist = dijkstra(g.adjacency, indices=[0])[0]
    assert dist[60] == pytest.approx(ZERO_WEIGHT) and np.isfinite(dist).all()


def test_parameter_checks_and_tiny_inputs():
    Z = line_points()
    with pytest.raises(ValueError, match="symmetry"):
        build_knn_graph(Z, 2, symmetry="both")
    with pytest.raises(ValueError, match="method"):
        build_knn_graph(Z, 2, method="annoy")
    assert build_knn_graph(Z, 50).n_neighbors == 4  # clipped to N - 1: complete graph
    assert graph_stats(build_knn_graph(Z, 50))["edges"] == 10
    assert build_knn_graph(Z[:1], 5).adjacency.nnz == 0


def test_hnsw_graph_close_to_exact():
    Z = np.random.default_rng(4).normal(size=(300, 8)).astype(np.float32)
    exact, approx = build_knn_graph(Z, 10), build_knn_graph(Z, 10, method="hnsw")
    overlap = len(edge_set(exact.adjacency) & edge_set(approx.adjacency)) / len(edge_set(exact.adjacency))
    assert overlap > 0.98
