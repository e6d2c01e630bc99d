"""Interpolation paths and their smoothness, against hand computations and scipy shortest paths."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from scipy.sparse.csgraph import shortest_path

from posthoc_vq.evaluation.interpolation import (
    graph_geodesic_paths, interpolation_pairs, linear_paths, path_smoothness, resample_polyline,
)
from posthoc_vq.quantize.latent.graph import build_knn_graph


def test_pairs_are_distinct_of_different_labels_and_seeded():
    labels = np.repeat(np.arange(5), 20)
    pairs = interpolation_pairs(labels, 50, seed=0)
    assert pairs.shape == (50, 2) and (pairs[:, 0] != pairs[:, 1]).all()
    assert (labels[pairs[:, 0]] != labels[pairs[:, 1]]).all()
    assert np.array_equal(pairs, interpolation_pairs(labels, 50, seed=0))
    assert not np.array_equal(pairs, interpolation_pairs(labels, 50, seed=1))
    assert len(interpolation_pairs(np.zeros(10), 5)) == 5  # one class: any distinct pair


def test_linear_paths_hit_the_endpoints_and_are_evenly_spaced():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(3, 4)).astype(np.float32), rng.normal(size=(3, 4)).astype(np.float32)
    p = linear_paths(a, b, 5)
    assert p.shape == (3, 5, 4)
    np.testing.assert_allclose(p[:, 0], a, atol=1e-6)
    np.testing.assert_allclose(p[:, -1], b, atol=1e-6)
    np.testing.assert_allclose(p[:, 2], (a + b) / 2, atol=1e-6)
    steps = np.linalg.norm(np.diff(p, axis=1), axis=2)
    np.testing.assert_allclose(steps, steps[:, :1].repeat(4, 1), rtol=1e-5)
    grid = linear_paths(np.zeros((2, 3, 2, 2), np.float32), np.ones((2, 3, 2, 2), np.float32), 3)
    assert grid.shape == (2, 3, 3, 2, 2) and np.allclose(grid[:, 1], 0.5)
    with pytest.raises(ValueError, match="steps"):
        linear_paths(a, b, 2)


def test_resample_polyline_is_even_in_arc_length():
    poly = np.array([[0, 0], [3, 0], [3, 0], [3, 1]], dtype=np.float32)  # length 4, with a repeated point
    r = resample_polyline(poly, 5)
    np.testing.assert_allclose(r, [[0, 0], [1, 0], [2, 0], [3, 0], [3, 1]], atol=1e-6)
    assert resample_polyline(np.ones((3, 2), np.float32), 4).shape == (4, 2)


def test_graph_geodesic_paths_follow_the_manifold():
    """Points on a half circle: the graph path stays on it, the straight line cuts through the middle."""
    theta = np.linspace(0, np.pi, 200)
    fit = np.stack([np.cos(theta), np.sin(theta)], 1).astype(np.float32)
    graph = build_knn_graph(fit, 4)
    a, b = fit[[0]] * 1.01, fit[[-1]] * 1.01
    paths, info = graph_geodesic_paths(fit, graph.adjacency, a, b, 9)
    radii = np.linalg.norm(paths[0], axis=1)
    assert radii.min() > 0.95  # on the circle
    assert np.linalg.norm(linear_paths(a, b, 9)[0, 4]) < 0.05  # the chord's midpoint is the centre
    assert info["length_ratio_mean"] == pytest.approx(np.pi / 2, rel=0.02)
    assert 50 <= info["nodes_mean"] <= 200  # hops of up to 2 neighbours along the arc


def test_graph_path_length_equals_scipy_shortest_path():
    rng = np.random.default_rng(1)
    fit = rng.normal(size=(300, 3)).astype(np.float32)
    graph = build_knn_graph(fit, 6)
    dist = shortest_path(sp.csr_matrix(graph.adjacency, dtype=np.float64), directed=False)
    a, b = fit[[5, 17]], fit[[40, 99]]  # endpoints on nodes: path length = graph distance
    paths, _ = graph_geodesic_paths(fit, graph.adjacency, a, b, 4000)  # fine resampling: corners cut by < 1e-3
    for p, (i, j) in enumerate([(5, 40), (17, 99)]):
        length = np.linalg.norm(np.diff(paths[p], axis=0), axis=1).sum()
        assert length == pytest.approx(dist[i, j], rel=1e-3)


def test_disconnected_graph_is_an_error():
    fit = np.array([[0, 0], [0.1, 0], [10, 0], [10.1, 0]], dtype=np.float32)
    adj = sp.csr_matrix(([0.1, 0.1, 0.1, 0.1], ([0, 1, 2, 3], [1, 0, 3, 2])), shape=(4, 4))
    with pytest.raises(ValueError, match="disconnected"):
        graph_geodesic_paths(fit, adj, fit[[0]], fit[[3]], 5)


def test_smoothness_of_a_ramp_and_of_a_jump():
    s = 5
    ramp = torch.linspace(0, 1, s).view(1, s, 1, 1, 1).expand(1, s, 1, 2, 2)
    jump = torch.tensor([0.0, 0, 0, 1, 1]).view(1, s, 1, 1, 1).expand(1, s, 1, 2, 2)
    images = torch.cat([ramp, jump])  # (2, 5, 1, 2, 2)
    predicted = torch.tensor([[0, 0, 2, 1, 1], [0, 5, 5, 5, 1]])
    r = path_smoothness(images, predicted)
    assert r["step_change_mean"]["mean"] == pytest.approx((0.25 + 0.25) / 2)
    assert r["step_change_max"]["mean"] == pytest.approx((0.25 + 1.0) / 2)
    assert r["step_change_max_overall"] == pytest.approx(1.0)
    assert r["max_over_mean"] == pytest.approx((1.0 + 4.0) / 2)  # ramp 1, a single jump steps - 1
    # intermediates: path 0 -> [0, 2, 1]: 2 of 3 in {0, 1}; path 1 -> [5, 5, 5]: none
    assert r["endpoint_class_fraction"]["mean"] == pytest.approx((2 / 3 + 0) / 2)
    assert r["endpoint_classes_differ"] == 1.0 and r["n_paths"] == 2 and r["steps"] == 5
    still = path_smoothness(torch.zeros(1, 4, 1, 2, 2), torch.zeros(1, 4, dtype=torch.int64))
    assert still["max_over_mean"] is None and still["endpoint_class_fraction"]["mean"] == 1.0
