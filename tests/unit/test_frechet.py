"""FD and KID in a domain feature space, checked against direct scipy/numpy implementations."""

import numpy as np
import pytest
import scipy.linalg
import torch
from scipy.ndimage import gaussian_filter

from posthoc_vq.data import load_dataset
from posthoc_vq.metrics.features import train_feature_net
from posthoc_vq.metrics.frechet import PrecomputedFeatures, frechet_distance, kernel_distance


def fd_scipy(a: np.ndarray, b: np.ndarray) -> float:
    """The textbook Fréchet distance with scipy.linalg.sqrtm (as pytorch-fid computes it)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def mmd2_unbiased_poly(a: np.ndarray, b: np.ndarray) -> float:
    """Unbiased MMD^2 with k(x, y) = (x.y / d + 1)^3, written out directly."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    m, d = len(a), a.shape[1]
    k = lambda x, y: (x @ y.T / d + 1) ** 3  # noqa: E731
    kxx, kyy, kxy = k(a, a), k(b, b), k(a, b)
    return float((kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.mean())


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def fnet(tmp_path_factory, digits):
    return train_feature_net("digits", tmp_path_factory.mktemp("features") / "digits", epochs=15, splits=digits, progress=False)


@pytest.fixture(scope="module")
def test_images(digits):
    return digits.test.to_tensor()  # (360, 1, 8, 8)


def blurred(x: torch.Tensor, sigma: float) -> torch.Tensor:
    return torch.from_numpy(gaussian_filter(x.numpy(), sigma=(0, 0, sigma, sigma), mode="nearest"))


def noisy(x: torch.Tensor, std: float, seed: int = 0) -> torch.Tensor:
    return (x + std * torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))).clamp(0, 1)


def test_fd_of_a_set_with_itself_is_zero(fnet, test_images):
    f, _ = fnet.embed(test_images)
    scale = fd_scipy(f.numpy(), fnet.embed(blurred(test_images, 1.0))[0].numpy())
    assert abs(frechet_distance(f, f)) < 1e-6 * scale


@pytest.mark.parametrize(
    "degrade, levels",
    [(blurred, [0.4, 0.7, 1.0, 1.5, 2.5]), (noisy, [0.05, 0.1, 0.2, 0.35, 0.6])],
    ids=["gaussian-blur", "gaussian-noise"],
)
def test_fd_grows_monotonically_with_degradation(fnet, test_images, degrade, levels):
    real, _ = fnet.embed(test_images)
    fds = [frechet_distance(real, fnet.embed(degrade(test_images, level))[0]) for level in levels]
    assert all(b > a for a, b in zip(fds, fds[1:])), fds
    assert fds[0] > 0


def test_fd_equals_scipy_sqrtm_on_classifier_features(fnet, test_images, digits):
    real, _ = fnet.embed(test_images)
    for other in (blurred(test_images, 0.7), noisy(test_images, 0.1), digits.train.to_tensor()):
        fake, _ = fnet.embed(other)
        assert frechet_distance(real, fake) == pytest.approx(fd_scipy(real.numpy(), fake.numpy()), rel=1e-3)


@pytest.mark.parametrize("d", [2, 16, 64])
def test_fd_equals_scipy_sqrtm_on_correlated_gaussians(d):
    rng = np.random.default_rng(d)
    a = rng.normal(size=(3000, d)) @ rng.normal(size=(d, d))
    b = rng.normal(size=(2000, d)) @ rng.normal(size=(d, d)) * 0.7 + 0.3
    assert frechet_distance(torch.from_numpy(a), torch.from_numpy(b)) == pytest.approx(fd_scipy(a, b), rel=1e-3)


def test_kid_is_unbiased_on_two_halves_of_one_set(fnet, digits):
    images = torch.cat([digits.train.to_tensor(), digits.val.to_tensor(), digits.test.to_tensor()])
    f, _ = fnet.embed(images)
    perm = torch.from_numpy(np.random.default_rng(0).permutation(len(f)))
    half = len(f) // 2
    kid = kernel_distance(f[perm[:half]], f[perm[half:]], subsets=100, subset_size=300, seed=0)
    assert kid["std"] > 0 and abs(kid["mean"]) < kid["std"], kid
    # the same subset machinery separates a degraded set clearly
    far = kernel_distance(f[perm[:half]], fnet.embed(blurred(images[perm[half:]], 1.0))[0], subsets=100, subset_size=300, seed=0)
    assert far["mean"] > 5 * far["std"] > 0


def test_kid_is_unbiased_on_gaussian_halves():
    x = torch.from_numpy(np.random.default_rng(1).normal(size=(8000, 32)))
    kid = kernel_distance(x[:4000], x[4000:], subsets=50, subset_size=1000, seed=3)
    assert abs(kid["mean"]) < kid["std"]


def test_kid_equals_direct_unbiased_mmd_on_one_full_subset(fnet, test_images):
    real, _ = fnet.embed(test_images)
    fake, _ = fnet.embed(noisy(test_images, 0.2))
    # one subset of all rows: the subset draw is only a permutation, so the estimate is deterministic
    kid = kernel_distance(real, fake, subsets=1, subset_size=len(real))
    assert kid["mean"] == pytest.approx(mmd2_unbiased_poly(real.numpy(), fake.numpy()), rel=1e-4)
    assert kid["subset_size"] == len(real) and kid["std"] == 0


def test_kid_is_reproducible_and_leaves_the_global_generator_alone(fnet, test_images):
    real, _ = fnet.embed(test_images)
    fake, _ = fnet.embed(noisy(test_images, 0.1))
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    a = kernel_distance(real, fake, subsets=20, subset_size=100, seed=7)
    after = torch.rand(3)
    assert torch.equal(before, after)
    assert a == kernel_distance(real, fake, subsets=20, subset_size=100, seed=7)
    assert a != kernel_distance(real, fake, subsets=20, subset_size=100, seed=8)


def test_bad_feature_shapes_are_clear_errors():
    with pytest.raises(ValueError, match=r"\(N, d\) and \(M, d\)"):
        frechet_distance(torch.zeros(10, 3), torch.zeros(10, 4))
    with pytest.raises(ValueError, match="at least 2"):
        frechet_distance(torch.zeros(1, 3), torch.zeros(10, 3))
    with pytest.raises(ValueError, match="NaN"):
        kernel_distance(torch.full((10, 3), float("nan")), torch.zeros(10, 3))
    with pytest.raises(ValueError, match=r"\(N, 5\)"):
        PrecomputedFeatures(5)(torch.zeros(2, 4))
