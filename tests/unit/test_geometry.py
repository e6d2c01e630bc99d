"""Latent geometry metrics: intrinsic dimension, Zador slope, class spread/separation, kNN connectivity."""

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from posthoc_vq.evaluation.geometry import distortion_curve, latent_geometry
from posthoc_vq.metrics.geometry import (
    class_separation, class_spread, connectivity_curve, knn_adjacency, mle_dimension, twonn_dimension, zador_slope,
)
from posthoc_vq.quantize.latent.knn import knn_exact


def _linear_subspace(n=2000, d=5, D=20, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, d)) @ rng.standard_normal((d, D))).astype(np.float32)


def _swiss_roll(n=2000, seed=0):
    rng = np.random.default_rng(seed)
    t, h = rng.uniform(1.5 * np.pi, 4.5 * np.pi, n), rng.uniform(0, 21, n)
    return np.stack([t * np.cos(t), h, t * np.sin(t)], 1).astype(np.float32)


@pytest.mark.parametrize("make, d, tol", [(_linear_subspace, 5, 0.15), (_swiss_roll, 2, 0.20)])
def test_intrinsic_dimension_of_known_manifolds(make, d, tol):
    dist, _ = knn_exact(make(), 20)
    assert twonn_dimension(dist) == pytest.approx(d, rel=tol)
    assert mle_dimension(dist, 20) == pytest.approx(d, rel=tol)


@pytest.mark.parametrize("make", [_linear_subspace, _swiss_roll])
def test_intrinsic_dimension_matches_scikit_dimension(make):
    import skdim  # the field's library, the reference (test extras)
    X = make(n=1000)
    dist, _ = knn_exact(X, 20)
    assert twonn_dimension(dist) == pytest.approx(skdim.id.TwoNN().fit(X).dimension_, rel=1e-4)
    assert mle_dimension(dist, 20) == pytest.approx(skdim.id.MLE(K=20).fit(X).dimension_, rel=1e-4)


def test_dimension_estimators_drop_duplicates_and_check_input():
    X = _linear_subspace(n=500)
    dist, _ = knn_exact(np.concatenate([X, X[:10]]), 20)  # 20 points now have a twin at distance 0
    assert np.isfinite(twonn_dimension(dist)) and np.isfinite(mle_dimension(dist, 20))
    with pytest.raises(ValueError, match="ascending"):
        twonn_dimension(dist[:, ::-1])
    with pytest.raises(ValueError, match=">= 20"):
        mle_dimension(dist[:, :5], 20)


@pytest.mark.parametrize("d, n, Ks", [(2, 8000, (16, 32, 64, 128)), (4, 40000, (64, 128, 256))])
def test_zador_slope_of_uniform_data(d, n, Ks):
    X = np.random.default_rng(0).uniform(size=(n, d)).astype(np.float32)
    curve = distortion_curve(X, Ks, seed=0, max_iter=100)
    assert np.all(np.diff(curve["D"]) < 0)
    fit = zador_slope(curve["K"], curve["D"])
    assert fit.slope == pytest.approx(-2 / d, rel=0.10)
    assert fit.d_eff == pytest.approx(-2 / fit.slope)


def test_zador_slope_of_an_exact_power_law():
    K = np.array([16, 64, 256, 1024])
    fit = zador_slope(K, 3.0 * K ** -0.25)
    assert (fit.slope, fit.intercept, fit.d_eff) == pytest.approx((-0.25, np.log(3.0), 8.0))
    assert zador_slope(K, np.ones(4)).d_eff == float("inf")


def test_class_spread_and_separation_by_hand():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, (300, 3))
    b = rng.normal(0, 2, (200, 3)) + np.array([10.0, 0, 0])
    X, y = np.concatenate([a, b]), np.array([3] * 300 + [7] * 200)
    s = class_spread(X, y)
    ma, mb = a.mean(0), b.mean(0)
    rms_a, rms_b = np.sqrt(((a - ma) ** 2).sum(1).mean()), np.sqrt(((b - mb) ** 2).sum(1).mean())
    pooled = np.sqrt((((a - ma) ** 2).sum() + ((b - mb) ** 2).sum()) / 500)
    assert s.classes.tolist() == [3, 7] and s.counts.tolist() == [300, 200]
    np.testing.assert_allclose(s.rms, [rms_a, rms_b])
    assert s.overall == pytest.approx(pooled)
    sep = class_separation(X, y)
    gap = np.linalg.norm(ma - mb)
    mu = X.mean(0)
    between = (300 * ((ma - mu) ** 2).sum() + 200 * ((mb - mu) ** 2).sum()) / 500
    assert (sep.mean_distance, sep.min_distance, sep.ratio, sep.min_ratio) == pytest.approx((gap, gap, gap / pooled, gap / pooled))
    assert sep.fisher == pytest.approx(between / pooled**2)
    assert sep.closest_pair == (3, 7)
    with pytest.raises(ValueError, match="two classes"):
        class_separation(a, np.zeros(300))


def test_connectivity_of_two_far_clusters():
    rng = np.random.default_rng(0)
    m = 30
    X = np.concatenate([rng.normal(0, 1, (m, 4)), rng.normal(100, 1, (m, 4))]).astype(np.float32)
    _, idx = knn_exact(X, m + 2)
    ks = np.arange(1, m + 3)
    curve = connectivity_curve(idx, ks)
    for k, c in zip(curve.ks, curve.components):  # scipy on the same union-symmetric graph
        rows = np.repeat(np.arange(2 * m), k)
        A = sp.coo_matrix((np.ones(rows.size), (rows, idx[:, :k].ravel())), shape=(2 * m, 2 * m))
        assert c == connected_components(A + A.T, directed=False)[0]
        assert (knn_adjacency(idx, k) != knn_adjacency(idx, k).T).nnz == 0
    big = curve.ks >= 4  # from a few neighbours on, each cluster is one piece
    assert np.all(curve.components[big & (curve.ks < m)] == 2)
    assert curve.connected_k == m  # the m-th neighbour is the first in the other cluster
    assert curve.largest_fraction[curve.ks == m][0] == 1.0
    assert connectivity_curve(idx, [1, 2]).connected_k is None
    with pytest.raises(ValueError, match="ks must lie"):
        connectivity_curve(idx, [m + 3])


def test_latent_geometry_records_samples_and_caps_K():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(600, 6)).astype(np.float32)
    y = rng.integers(0, 3, 600)
    r = latent_geometry(X, y, dimension_sample=400, distortion_sample=500, Ks=(16, 32, 64, 128, 256))
    assert r["samples"] == {"dimension": 400, "connectivity": 400, "distortion": 500, "classes": 600}
    assert r["distortion"]["K"] == [16, 32, 64]  # K <= n / 4 = 125
    assert r["intrinsic_dimension"]["twonn"] == pytest.approx(6, rel=0.3)
    again = latent_geometry(X, y, dimension_sample=400, distortion_sample=500, Ks=(16, 32, 64, 128, 256))
    r.pop("seconds"), again.pop("seconds")
    assert r == again  # same seed, same numbers
