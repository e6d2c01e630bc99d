"""Samples of the continuous and post-hoc VQ priors, and sample diversity, against direct computations."""

import math

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.spatial.distance import pdist

from posthoc_vq.config import VAEConfig
from posthoc_vq.evaluation.generation import (
    codebook_samples, diversity, mean_pairwise_distance, prior_latents, prior_samples, quantize_latents, sample_codes,
)
from posthoc_vq.models import build_vae
from posthoc_vq.quantize.latent.kmeans import KMeans
from posthoc_vq.quantize.latent.residual import ResidualKMeans


@pytest.fixture(scope="module")
def latents():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(6, 4)) * 4
    return (centres[rng.choice(6, size=3000, p=[0.4, 0.3, 0.1, 0.1, 0.05, 0.05])] + rng.normal(size=(3000, 4)) * 0.3).astype(np.float32)


@pytest.fixture(scope="module")
def kmeans(latents):
    return KMeans(n_clusters=6, random_state=0).fit(latents)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_vae(VAEConfig(image_size=8, in_channels=1, latent_dim=4, channels=[8, 16])).eval()


def test_prior_latents_are_standard_normal_and_seeded():
    z = prior_latents(20000, (3,), seed=0)
    assert z.shape == (20000, 3)
    assert torch.equal(z, prior_latents(20000, (3,), seed=0)) and not torch.equal(z, prior_latents(20000, (3,), seed=1))
    for j in range(3):  # Kolmogorov-Smirnov against N(0, 1)
        assert stats.kstest(z[:, j].numpy(), "norm").pvalue > 1e-3
    assert prior_latents(5, (2, 3, 3), seed=0).shape == (5, 2, 3, 3)


def test_prior_samples_decode_the_prior_latents(model):
    x = prior_samples(model, 7, (4,), seed=3)
    with torch.no_grad():
        expected = model.decode(prior_latents(7, (4,), seed=3))
    assert torch.allclose(x, expected) and x.shape == (7, 1, 8, 8)


def test_empirical_codes_follow_the_fit_frequencies(kmeans, latents):
    fit_codes = kmeans.predict(latents)
    drawn = sample_codes(kmeans, fit_codes, 30000, "empirical", seed=0)
    observed = np.bincount(drawn, minlength=6)
    expected = np.bincount(fit_codes, minlength=6) / len(fit_codes) * len(drawn)
    assert stats.chisquare(observed, expected).pvalue > 1e-3
    assert np.array_equal(drawn, sample_codes(kmeans, fit_codes, 30000, "empirical", seed=0))


def test_uniform_codes_are_uniform(kmeans, latents):
    drawn = sample_codes(kmeans, kmeans.predict(latents), 30000, "uniform", seed=0)
    assert stats.chisquare(np.bincount(drawn, minlength=6)).pvalue > 1e-3
    with pytest.raises(ValueError, match="code sampling"):
        sample_codes(kmeans, kmeans.predict(latents), 3, "frequent")


def test_residual_codes_keep_their_joint_distribution(latents):
    rq = ResidualKMeans(n_clusters=4, n_stages=2, random_state=0).fit(latents)
    fit_codes = rq.predict(latents)  # (N, 2)
    drawn = sample_codes(rq, fit_codes, 5000, "empirical", seed=0)
    assert drawn.shape == (5000, 2)
    fit_pairs = {tuple(r) for r in fit_codes}
    assert {tuple(r) for r in drawn} <= fit_pairs  # only stage-code tuples that occur in the fit set
    assert sample_codes(rq, fit_codes, 10, "uniform", seed=0).shape == (10, 2)


def test_codebook_samples_decode_codebook_vectors(model, kmeans, latents):
    x, codes = codebook_samples(model, kmeans, kmeans.predict(latents), 9, "empirical", (4,), seed=1)
    with torch.no_grad():
        expected = model.decode(torch.from_numpy(kmeans.codebook_[codes]))
    assert torch.allclose(x, expected, atol=1e-6)


def test_quantize_latents_maps_grid_tokens_to_codebook_vectors(kmeans):
    grid = np.random.default_rng(2).normal(size=(3, 4, 2, 2)).astype(np.float32) * 4  # (N, C=4, h, w)
    q = quantize_latents(kmeans, grid)
    assert q.shape == grid.shape
    for n in range(3):
        for i in range(2):
            for j in range(2):
                token = grid[n, :, i, j]
                nearest = kmeans.codebook_[np.argmin(((kmeans.codebook_ - token) ** 2).sum(1))]
                np.testing.assert_allclose(q[n, :, i, j], nearest)


def test_mean_pairwise_distance_matches_scipy():
    f = np.random.default_rng(3).normal(size=(300, 5))
    assert mean_pairwise_distance(torch.from_numpy(f)) == pytest.approx(pdist(f).mean(), rel=1e-9)
    sub = mean_pairwise_distance(torch.from_numpy(f), max_points=100, seed=0)
    assert sub == mean_pairwise_distance(torch.from_numpy(f), max_points=100, seed=0)
    assert sub == pytest.approx(pdist(f).mean(), rel=0.1)  # a subsample estimates the same mean


def test_diversity_counts_classes_and_entropy():
    f = torch.from_numpy(np.random.default_rng(4).normal(size=(40, 3)))
    pred = torch.tensor([0] * 20 + [3] * 20)
    d = diversity(f, pred, n_classes=10)
    assert d["distinct_classes"] == 2 and d["class_entropy_bits"] == pytest.approx(1.0)
    assert d["class_counts"][3] == 20 and d["max_class_entropy_bits"] == pytest.approx(math.log2(10))
    assert d["distinct_samples"] == 40
    collapsed = diversity(torch.zeros(40, 3), torch.zeros(40, dtype=torch.int64), n_classes=10)
    assert collapsed["mean_pairwise_feature_distance"] == 0 and collapsed["distinct_classes"] == 1
    assert collapsed["distinct_samples"] == 1
