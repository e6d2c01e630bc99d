"""k-NN manifold precision/recall against a brute-force scikit-learn reference."""

import numpy as np
import pytest
import torch
from sklearn.neighbors import NearestNeighbors

from posthoc_vq.metrics.precision_recall import knn_radii, manifold_precision_recall


def reference(real: np.ndarray, fake: np.ndarray, k: int) -> tuple[float, float]:
    """Kynkäänniemi et al.'s definition with sklearn neighbours and scipy-free numpy distances."""
    def radii(x):
        d, _ = NearestNeighbors(n_neighbors=k + 1, algorithm="brute").fit(x).kneighbors(x)
        return d[:, k]  # column 0 is the point itself

    def inside(points, centres, r):
        d = np.sqrt(((points[:, None, :] - centres[None, :, :]) ** 2).sum(-1))
        return (d <= r[None, :]).any(1).mean()

    return float(inside(fake, real, radii(real))), float(inside(real, fake, radii(fake)))


@pytest.mark.parametrize("shift, k", [(0.0, 3), (0.5, 3), (1.5, 5), (0.3, 1)])
def test_matches_sklearn_reference(shift, k):
    rng = np.random.default_rng(int(10 * shift) + k)
    real = rng.normal(size=(600, 8))
    fake = rng.normal(size=(500, 8)) * 1.2 + shift
    ours = manifold_precision_recall(torch.from_numpy(real), torch.from_numpy(fake), k=k)
    p, r = reference(real, fake, k)
    # borderline points (distance == radius up to float32 rounding) may flip: allow one point
    assert ours["precision"] == pytest.approx(p, abs=1 / 500 + 1e-12)
    assert ours["recall"] == pytest.approx(r, abs=1 / 600 + 1e-12)
    assert (ours["k"], ours["n_real"], ours["n_fake"]) == (k, 600, 500)


def test_radii_match_sklearn_and_exclude_self():
    x = np.random.default_rng(0).normal(size=(300, 5)).astype(np.float32)
    d, _ = NearestNeighbors(n_neighbors=4).fit(x).kneighbors(x)
    np.testing.assert_allclose(knn_radii(torch.from_numpy(x), 3, chunk=64).numpy(), d[:, 3], rtol=1e-4)


def test_limits_identical_disjoint_and_collapsed_sets():
    rng = np.random.default_rng(1)
    real = torch.from_numpy(rng.normal(size=(400, 4)))
    same = manifold_precision_recall(real, real.clone())
    assert same["precision"] == 1.0 and same["recall"] == 1.0
    far = manifold_precision_recall(real, real + 100.0)
    assert far["precision"] == 0.0 and far["recall"] == 0.0
    # mode collapse: fake covers one small region of the data -> precise, but poor recall
    centre = real[0]
    collapsed = centre + 0.05 * torch.from_numpy(rng.normal(size=(400, 4)))
    c = manifold_precision_recall(real, collapsed)
    assert c["precision"] > 0.9 and c["recall"] < 0.1


def test_repeated_samples_do_not_collapse_the_manifold():
    """A finite codebook's samples repeat: the balls are built on distinct points, as if drawn once."""
    rng = np.random.default_rng(2)
    real = rng.normal(size=(500, 4))
    distinct = rng.normal(size=(60, 4)) * 1.1
    repeated = distinct[rng.integers(60, size=600)]
    ours = manifold_precision_recall(torch.from_numpy(real), torch.from_numpy(repeated))
    p_ref, r_ref = reference(real, np.unique(repeated, axis=0), 3)
    assert ours["recall"] == pytest.approx(r_ref, abs=1 / 500 + 1e-12) and ours["recall"] > 0.2
    # precision counts every sample: the repeat-weighted fraction of samples inside the data's balls
    radius = NearestNeighbors(n_neighbors=4).fit(real).kneighbors(real)[0][:, 3]
    inside = (np.linalg.norm(repeated[:, None] - real[None], axis=2) <= radius[None]).any(1)  # per sample
    assert ours["precision"] == pytest.approx(inside.mean(), abs=1 / 600 + 1e-12)
    assert ours["n_fake"] == 600 and ours["n_fake_distinct"] == len(np.unique(repeated, axis=0))


def test_bad_input():
    with pytest.raises(ValueError, match="k must lie"):
        knn_radii(torch.zeros(3, 2), k=3)
    with pytest.raises(ValueError, match="differ in width"):
        manifold_precision_recall(torch.zeros(5, 2), torch.zeros(5, 3))
