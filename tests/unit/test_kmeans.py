"""KMeans (Lloyd, k-means++ seeding, group-bound pruning) against scikit-learn, faiss and numpy.

References: sklearn.cluster.KMeans (algorithm='lloyd') and faiss.Kmeans started from the same
centroids, and squared distances recomputed in float64 numpy.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans as SkKMeans

from posthoc_vq.quantize.latent.kmeans import KMeans, assign, balanced_groups, contiguous_groups

# --------------------------------------------------------------------------- data


def blobs(n: int = 3000, d: int = 16, centers: int = 8, spread: float = 1.0, sep: float = 6.0, seed: int = 0):
    """Gaussian blobs: points (n, d) float32, labels (n,), centres (centers, d)."""
    rng = np.random.default_rng(seed)
    C = rng.standard_normal((centers, d)) * sep
    y = rng.integers(0, centers, n)
    return (C[y] + spread * rng.standard_normal((n, d))).astype(np.float32), y, C


def uniform(n: int = 3000, d: int = 16, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).random((n, d), dtype=np.float32)


def sq_dist(Z: np.ndarray, C: np.ndarray) -> np.ndarray:
    """(N, K) squared distances in float64."""
    Z, C = Z.astype(np.float64), C.astype(np.float64)
    return np.maximum((Z * Z).sum(1)[:, None] - 2 * Z @ C.T + (C * C).sum(1)[None, :], 0.0)


def first_points(Z: np.ndarray, K: int, seed: int = 0) -> np.ndarray:
    return Z[np.random.default_rng(seed).choice(len(Z), K, replace=False)].copy()


# --------------------------------------------------------------------------- agreement with references


@pytest.mark.parametrize("data", ["blobs", "uniform"])
@pytest.mark.parametrize("K", [5, 17, 64, 300])  # 300: 4 centroid groups, pruned passes search some of them
def test_inertia_matches_sklearn_from_same_init(data, K):
    Z = blobs()[0] if data == "blobs" else uniform()
    init = first_points(Z, K)
    ours = KMeans(K, init=init, max_iter=60, tol=1e-4).fit(Z)
    ref = SkKMeans(K, init=init, n_init=1, max_iter=60, tol=1e-4, algorithm="lloyd").fit(Z)
    assert abs(ours.inertia_ - ref.inertia_) <= 0.01 * ref.inertia_
    # same trajectory in practice: the labels agree almost everywhere
    assert (ours.labels_ == ref.labels_).mean() > 0.99


def test_inertia_matches_faiss_from_same_init():
    import faiss

    Z = np.vstack([blobs(4000, 32, 12, seed=3)[0], uniform(2000, 32)])
    K = 40
    init = first_points(Z, K, seed=5)
    ours = KMeans(K, init=init, max_iter=20, tol=0.0).fit(Z)
    ref = faiss.Kmeans(Z.shape[1], K, niter=20, seed=1, verbose=False, spherical=False)
    ref.train(Z, init_centroids=init)
    ref_inertia = sq_dist(Z, ref.centroids).min(1).sum()
    assert ours.n_iter_ == 20
    assert abs(ours.inertia_ - ref_inertia) <= 0.005 * ref_inertia


def test_inertia_and_labels_recomputed_with_numpy():
    Z = np.vstack([blobs(2500, 24, 6)[0], uniform(1500, 24) * 10])
    km = KMeans(50, random_state=3, max_iter=30).fit(Z)
    d = sq_dist(Z, km.codebook_)
    assert km.codebook_.shape == (50, 24) and km.codebook_.dtype == np.float32
    assert km.labels_.shape == (len(Z),) and km.labels_.dtype == np.int64
    np.testing.assert_allclose(km.inertia_, d.min(1).sum(), rtol=1e-5)
    # labels are the nearest centroids (up to float32 ties)
    chosen = d[np.arange(len(Z)), km.labels_]
    assert np.all(chosen <= d.min(1) + 1e-5 * (1 + d.min(1)))
    assert (km.labels_ == d.argmin(1)).mean() > 0.999
    np.testing.assert_array_equal(km.predict(Z)[km.labels_ == d.argmin(1)], km.labels_[km.labels_ == d.argmin(1)])


def test_inertia_history_decreases_and_ends_at_final_assignment():
    Z = uniform(4000, 8)
    km = KMeans(30, random_state=0, max_iter=25, tol=0.0).fit(Z)
    h = np.array(km.inertia_history_)
    assert len(h) == km.n_iter_ == 25
    assert np.all(np.diff(h) <= 1e-6 * h[:-1])  # Lloyd never increases the objective
    assert km.inertia_ <= h[-1] * (1 + 1e-6)


@pytest.mark.parametrize("K, G", [(37, None), (150, None), (150, 4)])
def test_assign_matches_numpy_with_padding_and_odd_chunks(K, G):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((1001, 7)).astype(np.float32)
    C = rng.standard_normal((K, 7)).astype(np.float32)
    groups = None if G is None else balanced_groups(torch.from_numpy(C), G)
    labels, best, others = assign(torch.from_numpy(X), torch.from_numpy(C), chunk=100, groups=groups)
    groups = contiguous_groups(K) if groups is None else groups  # 150 -> 3 groups of 50
    assert sorted(groups[groups >= 0].tolist()) == list(range(K))
    d = sq_dist(X, C)
    np.testing.assert_array_equal(labels.numpy(), d.argmin(1))
    x_sq = (X.astype(np.float64) ** 2).sum(1)
    np.testing.assert_allclose(best.numpy() + x_sq, d.min(1), atol=1e-4)
    # others[:, w]: nearest centroid of group w other than the label
    d[np.arange(len(X)), d.argmin(1)] = np.inf
    ref = np.stack([d[:, g[g >= 0].numpy()].min(1) for g in groups], 1)
    got = others.numpy() + x_sq[:, None]
    assert np.array_equal(np.isinf(ref), np.isinf(got))
    np.testing.assert_allclose(got[np.isfinite(ref)], ref[np.isfinite(ref)], atol=1e-4)


def test_balanced_groups_are_equal_sized_and_spatial():
    rng = np.random.default_rng(4)
    blob = np.repeat(np.arange(4), 64)
    C = (rng.standard_normal((4, 8)) * 20)[blob] + 0.1 * rng.standard_normal((256, 8))
    g = balanced_groups(torch.from_numpy(C.astype(np.float32)), 4)
    assert g.shape == (4, 64) and sorted(g.reshape(-1).tolist()) == list(range(256))
    assert sorted(len(set(blob[row.numpy()])) for row in g) == [1, 1, 1, 1]  # one blob per group


# --------------------------------------------------------------------------- seeding and determinism


def test_same_random_state_same_codebook_different_state_different():
    Z = uniform(3000, 12)
    a = KMeans(25, random_state=7, max_iter=10).fit(Z)
    b = KMeans(25, random_state=7, max_iter=10).fit(Z)
    c = KMeans(25, random_state=8, max_iter=10).fit(Z)
    np.testing.assert_array_equal(a.codebook_, b.codebook_)
    np.testing.assert_array_equal(a.labels_, b.labels_)
    assert not np.array_equal(a.codebook_, c.codebook_)


@pytest.mark.parametrize("init", ["k-means++", "random"])
def test_seeding_finds_every_well_separated_blob(init):
    Z, y, centres = blobs(4000, 10, 8, spread=0.05, sep=10.0, seed=2)
    km = KMeans(8, init=init, random_state=0, max_iter=50).fit(Z)
    if init == "k-means++":  # D^2 sampling puts one seed in each far blob (almost surely)
        owner = sq_dist(km.codebook_, centres).argmin(1)
        assert sorted(owner) == list(range(8))
        assert km.inertia_ < 2 * len(Z) * 10 * 0.05**2
        # tight blobs: inertia is ~1e-4 of the total sum of squares, and still exact
        np.testing.assert_allclose(km.inertia_, sq_dist(Z, km.codebook_).min(1).sum(), rtol=1e-6)
    else:  # random seeds may double up, but Lloyd still ends with distinct centroids
        assert len(np.unique(km.codebook_.round(3), axis=0)) == 8


def test_kmeanspp_subsample_size_is_honoured_and_changes_seeds():
    Z = uniform(5000, 6)
    a = KMeans(20, init_sample_size=200, max_iter=1).fit(Z)
    b = KMeans(20, init_sample_size=5000, max_iter=1).fit(Z)
    assert not np.array_equal(a.codebook_, b.codebook_)


# --------------------------------------------------------------------------- edge cases


def test_empty_cluster_is_reseeded_and_counted():
    Z = uniform(2000, 5)
    init = first_points(Z, 10)
    init[3] = 1e3  # far from every point: empty after the first assignment
    km = KMeans(10, init=init, max_iter=30).fit(Z)
    assert km.n_reseeded_ >= 1
    assert np.bincount(km.labels_, minlength=10).min() >= 1
    assert np.abs(km.codebook_).max() < 2.0  # the far centroid moved into the data


def test_tolerance_stops_early_and_tol_zero_runs_max_iter():
    Z = blobs(3000, 8, 5, spread=0.3, sep=8.0)[0]
    assert KMeans(5, max_iter=300, tol=1e-4).fit(Z).n_iter_ < 300
    Zu = uniform(3000, 8)
    assert KMeans(40, max_iter=4, tol=0.0).fit(Zu).n_iter_ == 4


def test_chunk_size_does_not_change_the_result():
    Z = uniform(2100, 9)
    a = KMeans(33, random_state=1, max_iter=15).fit(Z)
    b = KMeans(33, random_state=1, max_iter=15, chunk_size=97).fit(Z)
    np.testing.assert_array_equal(a.labels_, b.labels_)
    np.testing.assert_allclose(a.codebook_, b.codebook_, atol=1e-5)


def test_thread_count_does_not_change_the_result_and_is_restored():
    Z = uniform(9000, 8)  # three pieces of rows (PIECE_ROWS) on the thread pool
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        a = KMeans(300, random_state=3, max_iter=15).fit(Z)
        torch.set_num_threads(2)
        b = KMeans(300, random_state=3, max_iter=15).fit(Z)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    np.testing.assert_array_equal(a.labels_, b.labels_)
    np.testing.assert_array_equal(a.codebook_, b.codebook_)


def test_single_cluster_and_k_equals_n():
    Z = uniform(300, 4)
    one = KMeans(1, max_iter=5).fit(Z)
    np.testing.assert_allclose(one.codebook_[0], Z.mean(0), atol=1e-5)
    full = KMeans(300, max_iter=5).fit(Z)
    assert full.inertia_ < 1e-6


def test_state_info_is_json_and_transform_agrees_with_predict():
    Z = uniform(1000, 6)
    km = KMeans(12, max_iter=10).fit(Z)
    info = json.loads(json.dumps(km.state_info()))
    assert info["n_iter"] == km.n_iter_ and info["inertia"] == pytest.approx(km.inertia_)
    np.testing.assert_array_equal(km.transform(Z).argmin(1), km.predict(Z))


@pytest.mark.parametrize(
    "kwargs, match",
    [({"n_clusters": 0}, "n_clusters"), ({"n_clusters": 501}, "n_clusters"), ({"init": "kmeans"}, "init"), ({"init": np.zeros((3, 4))}, "shape"), ({"max_iter": 0}, "max_iter")],
)
def test_invalid_parameters_raise(kwargs, match):
    params = {"n_clusters": 5, **kwargs}
    with pytest.raises(ValueError, match=match):
        KMeans(**params).fit(uniform(500, 4))
