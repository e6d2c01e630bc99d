"""MS-SSIM (multi-scale SSIM, Wang et al. 2003) and its place in ImageQuality.

References: an independent numpy/scipy.ndimage implementation of the same
convention (valid pixels at every scale, channels averaged per scale, relu),
and torchmetrics' ``multiscale_structural_similarity_index_measure``. Recent
torchmetrics (PR #2721, e.g. 1.9) averages the *last* scale's SSIM over the
whole reflect-padded image instead of its valid pixels; the two then differ
exactly by the factor ``(ssim_padded / ssim_valid) ** w5`` of that scale, which
the torchmetrics test checks using torchmetrics' own SSIM (for older
torchmetrics the factor is 1).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from posthoc_vq.evaluation.reconstruction import QualityMeter
from posthoc_vq.metrics.intervals import mean_ci
from posthoc_vq.metrics.reconstruction import (
    MS_SSIM_MIN_SIZE,
    MS_SSIM_WEIGHTS,
    ms_ssim,
    ms_ssim_supported,
    ssim,
)

SHAPES = [(2, 3, 192, 256), (2, 1, 200, 177), (2, 3, 256, 192)]  # landscape, odd non-square grey, portrait


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Smoothed noise images (N, C, H, W) rescaled to [0, 1] per image."""
    z = ndimage.gaussian_filter(rng.random(shape), sigma=(0, 0, sigma, sigma))
    lo = z.min(axis=(1, 2, 3), keepdims=True)
    hi = z.max(axis=(1, 2, 3), keepdims=True)
    return (z - lo) / (hi - lo)


def _pair(shape: tuple[int, int, int, int], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A structured image batch and distorted copies: noise, blur, and a blend with another image."""
    rng = np.random.default_rng(seed)
    x = _smooth_noise(rng, shape, 2.0)
    y = np.clip(x + 0.08 * rng.standard_normal(shape), 0.0, 1.0)  # additive noise
    y[0] = ndimage.gaussian_filter(x[0], sigma=(0, 1.5, 1.5))  # blur
    y[1] = 0.5 * x[1] + 0.5 * _smooth_noise(rng, (1, *shape[1:]), 3.0)[0]  # different structure
    return torch.from_numpy(x), torch.from_numpy(y)


def _numpy_ms_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """MS-SSIM of one (C, H, W) pair: scipy.ndimage filter-then-crop, 2x2 mean pooling (odd sides floored)."""
    c1, c2, r = 0.01**2, 0.03**2, 5
    terms = []
    for scale in range(5):
        def filt(img: np.ndarray) -> np.ndarray:
            return ndimage.gaussian_filter(img, sigma=(0, 1.5, 1.5), truncate=3.5)[:, r:-r, r:-r]

        mx, my = filt(a), filt(b)
        vx, vy, vxy = filt(a * a) - mx**2, filt(b * b) - my**2, filt(a * b) - mx * my
        cs = (2 * vxy + c2) / (vx + vy + c2)
        lum = (2 * mx * my + c1) / (mx**2 + my**2 + c1)
        terms.append(max(0.0, float((cs if scale < 4 else lum * cs).mean())))
        h, w = a.shape[1] // 2, a.shape[2] // 2
        a = a[:, : 2 * h, : 2 * w].reshape(a.shape[0], h, 2, w, 2).mean(axis=(2, 4))
        b = b[:, : 2 * h, : 2 * w].reshape(b.shape[0], h, 2, w, 2).mean(axis=(2, 4))
    return float(np.prod(np.array(terms) ** np.array(MS_SSIM_WEIGHTS)))


@pytest.mark.parametrize("shape", SHAPES)
def test_ms_ssim_matches_numpy_reference(shape):
    x, y = _pair(shape, seed=sum(shape))
    got = ms_ssim(x, y)
    assert got.shape == (shape[0],) and got.dtype == torch.float64
    want = torch.tensor([_numpy_ms_ssim(x[i].numpy(), y[i].numpy()) for i in range(shape[0])], dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    assert 0.3 < float(got.min()) and float(got.max()) < 1.0  # a non-degenerate range of values
    torch.testing.assert_close(ms_ssim(y, x), got, rtol=0, atol=1e-14)  # symmetric
    assert torch.equal(ms_ssim(x, y, batch_size=1), got)  # chunking does not change the result


@pytest.mark.parametrize("shape", SHAPES[:2])
def test_ms_ssim_matches_torchmetrics(shape):
    tm = pytest.importorskip("torchmetrics.functional.image")
    x, y = _pair(shape, seed=sum(shape) + 1)
    got = ms_ssim(x, y)
    want = tm.multiscale_structural_similarity_index_measure(y, x, data_range=1.0, reduction="none")  # normalize="relu"
    # torchmetrics' last-scale SSIM (maybe over the reflect-padded image) against ours (valid pixels), both on the
    # images after the same four 2x2 poolings: the only difference between the two conventions.
    xs, ys = x, y
    for _ in range(4):
        xs, ys = F.avg_pool2d(xs, 2), F.avg_pool2d(ys, 2)
    last_tm = tm.structural_similarity_index_measure(ys, xs, data_range=1.0, reduction="none").clamp(min=0)
    last_ours = ssim(xs, ys).clamp(min=0)
    factor = (last_tm / last_ours) ** MS_SSIM_WEIGHTS[-1]
    # 1e-7: torchmetrics raises to its weights as float32 numbers (relative error ~1e-8)
    torch.testing.assert_close(got * factor, want, rtol=0, atol=1e-7)
    torch.testing.assert_close(got, want, rtol=0, atol=float((got * (factor - 1)).abs().max()) + 1e-7)


def test_ms_ssim_identical_images_is_one():
    x, _ = _pair((2, 3, 192, 256), seed=5)
    assert torch.equal(ms_ssim(x, x), torch.ones(2, dtype=torch.float64))
    assert torch.equal(ms_ssim(x.float(), x.float()), torch.ones(2, dtype=torch.float64))


def test_ms_ssim_negative_terms_are_clamped_to_zero():
    x = torch.from_numpy(_smooth_noise(np.random.default_rng(6), (1, 1, 192, 192), 2.0))
    assert float(ms_ssim(x, 1.0 - x)) == 0.0  # anti-correlated: cs < 0 at every scale


def test_ms_ssim_size_limit():
    assert MS_SSIM_MIN_SIZE == 176  # 11 px at the coarsest scale: side // 16 >= 11
    assert ms_ssim_supported(512, 768) and ms_ssim_supported(768, 512) and ms_ssim_supported(176, 176)
    assert not ms_ssim_supported(175, 768) and not ms_ssim_supported(768, 161) and not ms_ssim_supported(28, 28)
    x = torch.rand(1, 3, 175, 256)
    with pytest.raises(ValueError, match=r"at least 176x176 px .* got 175x256 px"):
        ms_ssim(x, x)
    with pytest.raises(ValueError, match="got 28x28 px"):
        ms_ssim(torch.rand(2, 1, 28, 28), torch.rand(2, 1, 28, 28))
    assert ms_ssim(torch.rand(0, 3, 176, 176), torch.rand(0, 3, 176, 176)).shape == (0,)


def test_image_quality_small_images_have_no_ms_ssim():
    rng = np.random.default_rng(7)
    x = torch.from_numpy(_smooth_noise(rng, (5, 1, 28, 28), 1.0)).float()
    y = (x + 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    quality = QualityMeter().add(x, y)
    assert set(quality.per_image()) == {"mse", "psnr_db", "ssim"}
    assert list(quality.result().to_json()) == ["n_images", "mse", "psnr_db", "ssim", "ssim_window", "psnr_cap_db", "output_range"]


def test_image_quality_large_images_have_ms_ssim():
    x, y = _pair((4, 3, 192, 256), seed=8)
    x, y = x.float(), y.float()
    expected = ms_ssim(x, y).numpy()
    quality = QualityMeter().add(x, y)
    np.testing.assert_array_equal(quality.per_image()["ms_ssim"], expected)
    result = quality.result()
    assert result.ms_ssim.to_json() == mean_ci(expected).to_dict()
    assert result.ms_ssim.mean == pytest.approx(float(expected.mean()), abs=1e-15)
    streamed = QualityMeter().add(x[:1], y[:1]).add(x[1:], y[1:])  # batch by batch: the same values
    np.testing.assert_array_equal(streamed.per_image()["ms_ssim"], expected)
    assert streamed.result() == result


@pytest.mark.parametrize("shape", [(2, 3, 140, 300), (2, 3, 300, 140), (2, 1, 257, 129)])  # W tiled, H tiled, both (a partial last tile)
def test_tiled_ssim_filter_matches_scikit_image(shape):
    """Sides over 128 px are filtered tile by tile (one small band matrix): the same SSIM as scikit-image's whole-image filter."""
    from skimage.metrics import structural_similarity

    x, y = _pair(shape, seed=11)
    ours = ssim(x, y).numpy()
    ref = [structural_similarity(a.permute(1, 2, 0).numpy(), b.permute(1, 2, 0).numpy(), data_range=1.0, gaussian_weights=True, sigma=1.5,
                                 use_sample_covariance=False, channel_axis=-1) for a, b in zip(x, y)]
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12)


def test_ms_ssim_returns_the_full_scale_ssim():
    x, y = _pair((2, 3, 192, 256), seed=12)
    multi, single = ms_ssim(x, y, with_ssim=True)
    np.testing.assert_allclose(single.numpy(), ssim(x, y).numpy(), rtol=0, atol=1e-14)
    np.testing.assert_array_equal(multi.numpy(), ms_ssim(x, y).numpy())
