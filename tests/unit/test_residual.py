"""Residual k-means: one stage is k-means; more stages lower distortion; bits add up."""

import numpy as np
import pytest

from posthoc_vq.quantize.latent.kmeans import KMeans
from posthoc_vq.quantize.latent.residual import ResidualKMeans


@pytest.fixture(scope="module")
def Z():
    return np.random.default_rng(0).normal(size=(2000, 16)).astype(np.float32)


def test_one_stage_equals_kmeans(Z):
    r = ResidualKMeans(32, n_stages=1, random_state=5, max_iter=30).fit(Z)
    k = KMeans(32, random_state=5, max_iter=30).fit(Z)
    assert np.array_equal(r.codebooks_[0], k.codebook_)
    assert np.array_equal(r.predict(Z)[:, 0], k.predict(Z))


def test_distortion_falls_with_stages_and_bits_add(Z):
    errs = []
    for m in (1, 2, 4):
        r = ResidualKMeans(16, n_stages=m, random_state=0, max_iter=30).fit(Z)
        errs.append(np.mean(np.square(Z - r.quantize(Z))))
        assert r.bits_per_vector == pytest.approx(4 * m)
        assert r.inertia_[-1] == pytest.approx(np.square(Z - r.quantize(Z), dtype=np.float64).sum(), rel=1e-4)
    assert errs[0] > errs[1] > errs[2]


def test_inverse_transform_is_the_sum_of_stage_vectors(Z):
    r = ResidualKMeans(8, n_stages=3, random_state=0, max_iter=10).fit(Z)
    codes = r.predict(Z[:5])
    manual = r.codebooks_[0][codes[:, 0]] + r.codebooks_[1][codes[:, 1]] + r.codebooks_[2][codes[:, 2]]
    assert np.allclose(r.inverse_transform(codes), manual)
    with pytest.raises(ValueError, match=r"\(N, 3\) stage indices"):
        r.inverse_transform(codes[:, :2])
