"""Exact and HNSW k-nearest neighbours against float64 numpy brute force and scikit-learn.

Indices must agree except among tied distances; distances to 1e-4.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.neighbors import NearestNeighbors

from posthoc_vq.quantize.latent import knn
from posthoc_vq.quantize.latent.knn import knn_exact, knn_hnsw, knn_query, knn_recall


def points(n: int, d: int, seed: int = 0, duplicates: bool = True) -> np.ndarray:
    """Clustered float32 points; with ``duplicates`` some rows repeat exactly (3 copies of row 0, ...)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((6, d)) * 4
    Z = (centres[rng.integers(0, 6, n)] + rng.standard_normal((n, d))).astype(np.float32)
    if duplicates:
        Z[n // 2 : n // 2 + 3] = Z[0]
        Z[n // 3] = Z[7]
    return Z


def brute(Q: np.ndarray, Z: np.ndarray, k: int, exclude_self: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(M, N) float64 distances, and the reference k nearest (distances, indices)."""
    Q64, Z64 = Q.astype(np.float64), Z.astype(np.float64)
    D = np.sqrt(np.maximum((Q64**2).sum(1)[:, None] - 2 * Q64 @ Z64.T + (Z64**2).sum(1)[None, :], 0))
    if exclude_self:
        np.fill_diagonal(D, np.inf)
    idx = np.argsort(D, 1, kind="stable")[:, :k]
    return D, idx


def check(dist, idx, D, ref_idx, exclude_self: bool = False) -> None:
    """Distances equal to the reference to 1e-4; indices equal except where distances tie."""
    M, k = ref_idx.shape
    assert dist.shape == idx.shape == (M, k) and dist.dtype == np.float32 and idx.dtype == np.int64
    ref_d = np.take_along_axis(D, ref_idx, 1)
    np.testing.assert_allclose(dist, ref_d, atol=1e-4, rtol=1e-5)
    # the returned distances are those of the returned indices, rows ascending, no repeats
    np.testing.assert_allclose(np.take_along_axis(D, idx, 1), dist, atol=1e-4, rtol=1e-5)
    assert np.all(np.diff(dist, axis=1) >= 0)
    assert all(len(set(row)) == k for row in idx)
    if exclude_self:
        assert not (idx == np.arange(M)[:, None]).any()
    # an index may differ only where its distance ties with the reference's
    differ = idx != ref_idx
    assert np.all(np.abs(np.take_along_axis(D, idx, 1)[differ] - ref_d[differ]) <= 1e-4)


@pytest.mark.parametrize("exclude_self", [True, False])
@pytest.mark.parametrize("n, d, k, chunk", [(1000, 8, 10, None), (1500, 32, 50, 256), (777, 5, 7, 48), (60, 4, 20, 16)])
def test_knn_exact_matches_brute_force(n, d, k, chunk, exclude_self):
    Z = points(n, d, seed=n)
    dist, idx = knn_exact(Z, k, exclude_self=exclude_self, chunk_size=chunk)
    D, ref = brute(Z, Z, k, exclude_self)
    check(dist, idx, D, ref, exclude_self)


def test_knn_exact_matches_sklearn_without_exclusion():
    Z = points(1200, 16, seed=4, duplicates=False)
    dist, idx = knn_exact(Z, 15, exclude_self=False, chunk_size=300)
    ref_d, ref_i = NearestNeighbors(n_neighbors=15, algorithm="brute").fit(Z).kneighbors(Z)
    np.testing.assert_allclose(dist, ref_d, atol=1e-4)
    assert (idx == ref_i).mean() > 0.999
    assert (idx[:, 0] == np.arange(len(Z))).all()  # each point is its own nearest


def test_many_exact_duplicates():
    rng = np.random.default_rng(3)
    Z = np.vstack([np.repeat(rng.standard_normal((1, 8)), 150, 0), rng.standard_normal((600, 8))]).astype(np.float32)
    dist, idx = knn_exact(Z, 10, chunk_size=64)
    assert np.all(dist[:150] == 0) and np.all(idx[:150] < 150) and not (idx[:150] == np.arange(150)[:, None]).any()
    D, ref = brute(Z, Z, 10, exclude_self=True)
    check(dist[150:], idx[150:], D[150:], ref[150:])


def test_exclude_self_keeps_duplicates_at_distance_zero():
    Z = points(500, 6, seed=9)  # rows 0, 250, 251, 252 are one point
    dist, idx = knn_exact(Z, 5, exclude_self=True, chunk_size=64)
    assert set(idx[0, :3]) == {250, 251, 252} and np.all(dist[0, :3] == 0)
    assert set(idx[250, :3]) == {0, 251, 252}
    assert 0 not in idx[0] and 250 not in idx[250]


@pytest.mark.parametrize("chunk", [None, 112, 1000])
def test_knn_query_matches_sklearn(chunk):
    Z = points(2300, 12, seed=5)
    Q = np.vstack([points(300, 12, seed=6, duplicates=False), Z[:20]])  # some queries coincide with fitted points
    dist, idx = knn_query(Z, Q, 25, chunk_size=chunk)
    D, ref = brute(Q, Z, 25)
    check(dist, idx, D, ref)
    ref_d, _ = NearestNeighbors(n_neighbors=25, algorithm="brute").fit(Z).kneighbors(Q)
    np.testing.assert_allclose(dist, ref_d, atol=1e-4)
    assert np.all(dist[300:, 0] == 0)


def test_knn_query_skips_far_blocks_exactly(monkeypatch):
    P = points(3500, 8, seed=11, duplicates=False)  # six clusters
    Z, Q = P[:3000], np.vstack([P[3000:], P[:10]])
    scanned, chunks = [], []
    group_minima, nearest = knn._FittedBlocks._group_minima, knn._FittedBlocks.nearest
    monkeypatch.setattr(knn._FittedBlocks, "_group_minima", lambda self, J, L: scanned.append(J) or group_minima(self, J, L))
    monkeypatch.setattr(knn._FittedBlocks, "nearest", lambda self, Xq, k: chunks.append(len(self.width)) or nearest(self, Xq, k))
    monkeypatch.setattr(knn, "QUERY_CHUNK", 16)
    dist, idx = knn_query(Z, Q, 20, chunk_size=64)
    D, ref = brute(Q, Z, 20)
    check(dist, idx, D, ref)
    assert 0 < len(scanned) < 0.5 * sum(chunks)  # clustered points: most (block, chunk) pairs are never multiplied


def test_knn_query_few_queries_and_k_equals_n():
    Z = points(200, 3, seed=8)
    dist, idx = knn_query(Z, Z[:5] + 0.01, 200)
    D, ref = brute(Z[:5] + 0.01, Z, 200)
    check(dist, idx, D, ref)
    dist, idx = knn_query(Z, Z[:0], 3)
    assert dist.shape == idx.shape == (0, 3)


def test_bad_k_raises():
    Z = points(50, 3)
    with pytest.raises(ValueError, match="k must"):
        knn_exact(Z, 50, exclude_self=True)
    with pytest.raises(ValueError, match="k must"):
        knn_query(Z, Z, 51)
    with pytest.raises(ValueError, match="dimension"):
        knn_query(Z, np.zeros((2, 4), np.float32), 3)


def test_hnsw_recall_on_random_data():
    Z = np.random.default_rng(0).standard_normal((5000, 32)).astype(np.float32)
    _, exact = knn_exact(Z, 10)
    dist, approx = knn_hnsw(Z, 10, random_state=0)
    assert approx.shape == (5000, 10) and approx.dtype == np.int64 and dist.dtype == np.float32
    assert not (approx == np.arange(5000)[:, None]).any()
    assert np.all(np.diff(dist, axis=1) >= -1e-6)
    assert knn_recall(approx, exact) >= 0.95
    # distances are Euclidean distances of the returned pairs
    np.testing.assert_allclose(dist[:50], np.linalg.norm(Z[:50, None] - Z[approx[:50]], axis=-1), rtol=1e-4, atol=1e-4)


def test_hnsw_without_exclusion_finds_self_first():
    Z = np.random.default_rng(1).standard_normal((800, 8)).astype(np.float32)
    dist, idx = knn_hnsw(Z, 5, exclude_self=False)
    assert (idx[:, 0] == np.arange(800)).mean() > 0.99 and np.all(dist[:, 0] < 1e-3)


def test_knn_recall_hand_case():
    exact = np.array([[1, 2, 3], [4, 5, 6]])
    approx = np.array([[3, 9, 1], [7, 8, 6]])  # 2 of 3, then 1 of 3
    assert knn_recall(approx, exact) == pytest.approx(0.5)
    assert knn_recall(exact, exact) == 1.0
    assert knn_recall(np.array([[5, 6, 4], [3, 2, 1]]), exact) == 0.0  # right indices, wrong rows
