"""Reconstruction metrics (MSE, PSNR, SSIM) and mean confidence intervals.

References: scikit-image (MSE, PSNR, SSIM), scipy.ndimage (filter-then-crop
SSIM with arbitrary ``truncate``), torchmetrics (SSIM map), scipy.stats
(t intervals).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage, stats

from posthoc_vq.metrics.intervals import MeanCI, mean_ci
from posthoc_vq.metrics.reconstruction import DATA_RANGE, mse, psnr, ssim, ssim_window

import skimage.metrics as skm  # noqa: E402

# --------------------------------------------------------------------------- helpers


def _smooth(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian-smooth each channel of an (N, C, H, W) array and rescale to [0, 1]."""
    out = ndimage.gaussian_filter(img, sigma=(0, 0, sigma, sigma))
    lo = out.min(axis=(1, 2, 3), keepdims=True)
    hi = out.max(axis=(1, 2, 3), keepdims=True)
    return (out - lo) / (hi - lo)


def _pairs(kind: str, shape: tuple[int, int, int, int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Image pairs (x, y) in [0, 1], float64, (N, C, H, W)."""
    rng = np.random.default_rng(seed)
    n, c, h, w = shape
    if kind == "random":  # independent uniform noise images
        return rng.random(shape), rng.random(shape)
    if kind == "smoothed":  # two independent smooth images
        return _smooth(rng.random(shape), 2.0), _smooth(rng.random(shape), 2.0)
    if kind == "smooth+noise":  # a "real-looking" reconstruction: smooth image vs noisy copy
        x = _smooth(rng.random(shape), 2.5)
        noise = rng.normal(0.0, 1.0, shape) * rng.uniform(0.01, 0.2, (n, 1, 1, 1))
        return x, np.clip(x + noise, 0.0, 1.0)
    if kind == "structured":  # gradients, blocks and a constant image; y a blurred copy
        yy, xx = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
        base = [
            xx,
            0.5 * (1 + np.sin(6 * np.pi * xx) * np.cos(4 * np.pi * yy)),
            ((np.floor(4 * xx) + np.floor(4 * yy)) % 2).astype(float),
            np.full((h, w), 0.3),
        ]
        x = np.stack([np.stack([base[(i + ch) % len(base)] for ch in range(c)]) for i in range(n)])
        y = np.clip(ndimage.gaussian_filter(x, sigma=(0, 0, 1.0, 1.0)) + 0.02, 0, 1)
        return x, y
    raise AssertionError(kind)


def _hwc(a: np.ndarray) -> np.ndarray:
    """(C, H, W) -> (H, W, C), contiguous float64."""
    return np.ascontiguousarray(np.moveaxis(a, 0, -1), dtype=np.float64)


def _skimage_ssim(x: np.ndarray, y: np.ndarray, sigma: float = 1.5) -> np.ndarray:
    return np.array(
        [
            skm.structural_similarity(
                _hwc(a),
                _hwc(b),
                data_range=1.0,
                gaussian_weights=True,
                sigma=sigma,
                use_sample_covariance=False,
                channel_axis=-1,
            )
            for a, b in zip(x, y, strict=True)
        ]
    )


def _ndimage_ssim(x: np.ndarray, y: np.ndarray, sigma: float, truncate: float) -> np.ndarray:
    """Filter the *whole* image (scipy.ndimage, mode='reflect') then crop the border.

    This is skimage's algorithm, written out here because skimage ignores its
    ``truncate`` argument (always 3.5 with gaussian_weights=True).
    """
    r = int(truncate * sigma + 0.5)
    c1, c2 = (0.01 * 1.0) ** 2, (0.03 * 1.0) ** 2
    out = []
    for a, b in zip(x, y, strict=True):
        per_channel = []
        for ca, cb in zip(a, b, strict=True):
            f = lambda im: ndimage.gaussian_filter(im, sigma, mode="reflect", truncate=truncate)  # noqa: E731
            ux, uy = f(ca), f(cb)
            vx, vy, vxy = f(ca * ca) - ux * ux, f(cb * cb) - uy * uy, f(ca * cb) - ux * uy
            s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
            per_channel.append(s[r : s.shape[0] - r, r : s.shape[1] - r].mean())
        out.append(np.mean(per_channel))
    return np.array(out)


SHAPES = [(6, 1, 28, 28), (6, 3, 32, 32), (4, 3, 64, 64)]
KINDS = ["random", "smoothed", "smooth+noise", "structured"]

# --------------------------------------------------------------------------- MSE / PSNR


@pytest.mark.parametrize("shape", [(8, 1, 28, 28), (8, 3, 32, 32)])
@pytest.mark.parametrize("kind", KINDS)
def test_mse_psnr_match_skimage(shape, kind):
    x, y = _pairs(kind, shape, seed=1)
    ours_mse = mse(torch.from_numpy(x), torch.from_numpy(y))
    ours_psnr = psnr(torch.from_numpy(x), torch.from_numpy(y))
    assert ours_mse.shape == (shape[0],) and ours_mse.dtype == torch.float64
    assert ours_psnr.shape == (shape[0],) and ours_psnr.dtype == torch.float64
    ref_mse = [skm.mean_squared_error(a, b) for a, b in zip(x, y, strict=True)]
    ref_psnr = [skm.peak_signal_noise_ratio(a, b, data_range=1.0) for a, b in zip(x, y, strict=True)]
    np.testing.assert_allclose(ours_mse.numpy(), ref_mse, rtol=1e-12, atol=0)
    np.testing.assert_allclose(ours_psnr.numpy(), ref_psnr, rtol=0, atol=1e-9)


def test_psnr_data_range_matches_skimage():
    x, y = _pairs("smooth+noise", (5, 3, 16, 16), seed=2)
    x255, y255 = 255 * x, 255 * y
    ours = psnr(torch.from_numpy(x255), torch.from_numpy(y255), data_range=255.0)
    ref = [skm.peak_signal_noise_ratio(a, b, data_range=255.0) for a, b in zip(x255, y255, strict=True)]
    np.testing.assert_allclose(ours.numpy(), ref, rtol=0, atol=1e-9)
    # Scaling images and data range together leaves PSNR unchanged.
    np.testing.assert_allclose(ours.numpy(), psnr(torch.from_numpy(x), torch.from_numpy(y)).numpy(), atol=1e-9)


def test_float32_inputs_are_upcast_before_arithmetic():
    x, y = _pairs("smooth+noise", (8, 1, 28, 28), seed=3)
    x32, y32 = torch.from_numpy(x).float(), torch.from_numpy(y).float()
    ref = [skm.mean_squared_error(a, b) for a, b in zip(x32.double().numpy(), y32.double().numpy(), strict=True)]
    # float32 arithmetic would be off by ~1e-7 relative; float64 by ~1e-16.
    np.testing.assert_allclose(mse(x32, y32).numpy(), ref, rtol=1e-12, atol=0)
    assert mse(x32, y32).dtype == torch.float64
    assert ssim(x32, y32).dtype == torch.float64


def test_psnr_identical_images_is_inf():
    x = torch.rand(3, 1, 8, 8, dtype=torch.float64)
    y = x.clone()
    y[1] = 1 - y[1]
    out = psnr(x, y)
    assert math.isinf(out[0]) and out[0] > 0 and math.isinf(out[2])
    assert math.isfinite(out[1])
    assert mse(x, x).eq(0).all()


def test_psnr_decreases_monotonically_with_noise():
    rng = np.random.default_rng(4)
    x = torch.from_numpy(_smooth(rng.random((1, 3, 32, 32)), 2.0))
    noise = torch.from_numpy(rng.normal(size=(1, 3, 32, 32)))
    amplitudes = [0.001, 0.003, 0.01, 0.03, 0.1, 0.3]
    noisy = torch.cat([(x + a * noise).clamp(0, 1) for a in amplitudes])
    values = psnr(x.expand_as(noisy), noisy)
    assert torch.all(values[1:] < values[:-1]), values
    # small-noise PSNR close to the unclipped value 10*log10(1/a^2) - 10*log10(E[noise^2])
    expected = -20 * math.log10(0.001) - 10 * math.log10(float(noise.square().mean()))
    assert abs(float(values[0]) - expected) < 0.5
    # SSIM decreases too
    s = ssim(x.expand_as(noisy), noisy)
    assert torch.all(s[1:] < s[:-1]), s


# --------------------------------------------------------------------------- SSIM vs skimage


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s[1:])))
@pytest.mark.parametrize("kind", KINDS)
def test_ssim_matches_skimage(shape, kind):
    x, y = _pairs(kind, shape, seed=5)
    ours = ssim(torch.from_numpy(x), torch.from_numpy(y))
    assert ours.shape == (shape[0],) and ours.dtype == torch.float64
    assert ssim_window(min(shape[2:])) == (11, 1.5)
    np.testing.assert_allclose(ours.numpy(), _skimage_ssim(x, y), rtol=0, atol=1e-10)


@pytest.mark.parametrize(
    ("hw", "expected_window"),
    [((8, 8), (7, 3 / 3.5)), ((9, 13), (9, 4 / 3.5)), ((10, 10), (9, 4 / 3.5)), ((11, 40), (11, 1.5))],
)
def test_ssim_small_images_use_fitting_window_and_match_skimage(hw, expected_window):
    shape = (6, 1, *hw)
    x, y = _pairs("smooth+noise", shape, seed=6)
    win, sigma = ssim_window(min(hw))
    assert win == expected_window[0]
    assert sigma == pytest.approx(expected_window[1], abs=1e-15)
    ours = ssim(torch.from_numpy(x), torch.from_numpy(y))
    # skimage derives the same window size from sigma (truncate 3.5).
    np.testing.assert_allclose(ours.numpy(), _skimage_ssim(x, y, sigma=sigma), rtol=0, atol=1e-10)
    # and it is genuinely a different window from the default one (where that fits at all)
    if win < 11:
        with pytest.raises(ValueError, match="win_size exceeds image extent"):
            _skimage_ssim(x, y, sigma=1.5)


@pytest.mark.parametrize(("sigma", "truncate"), [(1.5, 3.5), (1.0, 2.5), (1.2, 4.0), (0.8, 3.5)])
def test_valid_conv_equals_filter_whole_image_then_crop(sigma, truncate):
    """The claim behind the 'valid' convolution: after cropping (win-1)//2 pixels,
    no pixel depends on the reflect padding, so both computations agree."""
    x, y = _pairs("smooth+noise", (4, 3, 30, 26), seed=7)
    ours = ssim(torch.from_numpy(x), torch.from_numpy(y), sigma=sigma, truncate=truncate)
    ref = _ndimage_ssim(x, y, sigma, truncate)
    np.testing.assert_allclose(ours.numpy(), ref, rtol=0, atol=1e-10)
    # truncate matters (so the check above is not vacuous for truncate != 3.5)
    if truncate != 3.5:
        other = _ndimage_ssim(x, y, sigma, 3.5)
        assert np.abs(other - ref).max() > 1e-6


def test_ssim_against_torchmetrics_ssim_map():
    """torchmetrics (1.9) computes the same SSIM map on the valid region, but its
    per-image value averages the *whole* H x W map, including border pixels whose
    windows reach into numpy-style reflect padding. So its default per-image SSIM
    differs from skimage's (by ~1e-2 on 28x28); cropped to the valid region, its map
    agrees with ours."""
    import torchmetrics.functional.image as tm

    for shape in [(5, 1, 28, 28), (5, 3, 32, 32), (5, 1, 8, 8)]:
        x, y = (torch.from_numpy(a) for a in _pairs("smooth+noise", shape, seed=8))
        win, sigma = ssim_window(min(shape[2:]))
        r = (win - 1) // 2
        _, full = tm.structural_similarity_index_measure(
            x, y, gaussian_kernel=True, sigma=sigma, kernel_size=win, data_range=1.0,
            reduction="none", return_full_image=True,
        )
        cropped = full[..., r:-r, r:-r].mean(dim=(1, 2, 3))
        torch.testing.assert_close(ssim(x, y), cropped, rtol=0, atol=1e-10)


# --------------------------------------------------------------------------- SSIM properties


def test_ssim_of_identical_images_is_one():
    rng = np.random.default_rng(9)
    x = torch.from_numpy(np.concatenate([rng.random((3, 3, 32, 32)), np.full((1, 3, 32, 32), 0.4)]))
    torch.testing.assert_close(ssim(x, x), torch.ones(4, dtype=torch.float64), rtol=0, atol=1e-12)
    x8 = torch.from_numpy(rng.random((2, 1, 8, 8)))
    torch.testing.assert_close(ssim(x8, x8), torch.ones(2, dtype=torch.float64), rtol=0, atol=1e-12)


def test_ssim_is_symmetric_and_bounded():
    x, y = (torch.from_numpy(a) for a in _pairs("random", (8, 3, 28, 28), seed=10))
    torch.testing.assert_close(ssim(x, y), ssim(y, x), rtol=0, atol=1e-14)
    assert torch.all(ssim(x, y) < 1) and torch.all(ssim(x, y) > -1)
    assert torch.all(ssim(x, 1 - x) < 0)  # anti-correlated


def test_chunking_does_not_change_results():
    x, y = (torch.from_numpy(a) for a in _pairs("smooth+noise", (11, 2, 20, 20), seed=11))
    for fn in (mse, psnr, ssim):
        whole = fn(x, y)
        torch.testing.assert_close(fn(x, y, batch_size=3), whole, rtol=0, atol=0)
        torch.testing.assert_close(fn(x, y, batch_size=1), whole, rtol=0, atol=0)
        # each image is independent of the others in the batch
        torch.testing.assert_close(fn(x[4:5], y[4:5]), whole[4:5], rtol=0, atol=0)


def test_empty_batch():
    e = torch.empty(0, 1, 28, 28)
    for fn in (mse, psnr, ssim):
        out = fn(e, e)
        assert out.shape == (0,) and out.dtype == torch.float64


def test_input_validation():
    x = torch.rand(2, 1, 16, 16)
    with pytest.raises(ValueError, match="same shape"):
        ssim(x, torch.rand(2, 1, 16, 15))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        mse(x[0], x[0])
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        psnr(x, bad)
    with pytest.raises(TypeError):
        mse(x.to(torch.uint8), x.to(torch.uint8))
    with pytest.raises(ValueError, match="data_range"):
        psnr(x, x, data_range=0)
    with pytest.raises(ValueError, match="too small"):
        ssim(torch.rand(1, 1, 2, 2), torch.rand(1, 1, 2, 2))


def test_ssim_window_rule():
    assert ssim_window(28) == (11, 1.5)
    assert ssim_window(11) == (11, 1.5)
    assert ssim_window(64, sigma=3.0) == (2 * int(3.5 * 3.0 + 0.5) + 1, 3.0)
    for size in range(3, 40):
        for sigma, truncate in [(1.5, 3.5), (2.0, 4.0), (0.7, 3.0)]:
            win, s = ssim_window(size, sigma, truncate)
            assert win % 2 == 1 and win <= size and 0 < s <= sigma
            assert win == 2 * int(truncate * s + 0.5) + 1  # consistent with the radius rule
            requested = 2 * int(truncate * sigma + 0.5) + 1
            if requested <= size:
                assert (win, s) == (requested, sigma)
            else:  # reduced: the largest odd window that fits
                assert win == size - (1 - size % 2)
    with pytest.raises(ValueError):
        ssim_window(28, sigma=0)
    with pytest.raises(ValueError):
        ssim_window(28, truncate=-1)
    assert DATA_RANGE == 1.0


# --------------------------------------------------------------------------- mean_ci

_DATA = np.array([31.2, 29.8, 30.5, 32.1, 28.9, 30.0, 31.7, 29.4, 30.9, 30.3])


@pytest.mark.parametrize("confidence", [0.95, 0.9, 0.99])
def test_mean_ci_matches_scipy_t_interval(confidence):
    ci = mean_ci(_DATA, confidence=confidence)
    low, high = stats.t.interval(confidence, len(_DATA) - 1, loc=_DATA.mean(), scale=stats.sem(_DATA))
    assert isinstance(ci, MeanCI)
    assert ci.mean == pytest.approx(_DATA.mean(), abs=1e-12)
    assert ci.low == pytest.approx(low, abs=1e-10)
    assert ci.high == pytest.approx(high, abs=1e-10)
    assert ci.std == pytest.approx(np.std(_DATA, ddof=1), abs=1e-12)
    assert ci.n == len(_DATA) and ci.confidence == confidence
    assert ci.low < ci.mean < ci.high


def test_mean_ci_wider_at_higher_confidence_and_accepts_tensors():
    a, b = mean_ci(_DATA, 0.9), mean_ci(torch.from_numpy(_DATA).float(), 0.99)
    assert b.high - b.low > a.high - a.low
    assert b.mean == pytest.approx(a.mean, abs=1e-5)


def test_mean_ci_coverage():
    """t intervals cover the true mean ~95% of the time even for n=5 (a normal
    approximation would give ~88%)."""
    rng = np.random.default_rng(12)
    hits = sum(
        ci.low <= 3.0 <= ci.high for ci in (mean_ci(rng.normal(3.0, 2.0, size=5)) for _ in range(2000))
    )
    assert 0.93 <= hits / 2000 <= 0.97


def test_mean_ci_small_and_degenerate_samples():
    one = mean_ci([0.7])
    assert one.mean == 0.7 and one.n == 1
    assert math.isnan(one.low) and math.isnan(one.high) and math.isnan(one.std)
    d = one.to_dict()
    assert d == {"mean": 0.7, "low": None, "high": None, "std": None, "n": 1, "confidence": 0.95}
    const = mean_ci([0.5, 0.5, 0.5])
    assert (const.low, const.mean, const.high, const.std) == (0.5, 0.5, 0.5, 0.0)
    assert mean_ci(_DATA).to_dict()["low"] == mean_ci(_DATA).low
    with pytest.raises(ValueError, match="at least one"):
        mean_ci([])


def test_mean_ci_rejects_non_finite_values():
    x = torch.rand(4, 1, 8, 8, dtype=torch.float64)
    values = psnr(x, x)  # identical images -> +inf dB
    with pytest.raises(ValueError, match="infinite"):
        mean_ci(values)
    with pytest.raises(ValueError, match="NaN"):
        mean_ci([1.0, float("nan"), 2.0])
    with pytest.raises(ValueError, match="confidence"):
        mean_ci(_DATA, confidence=95)
    # clipping as documented makes it usable
    assert mean_ci(values.clamp(max=100.0)).mean == 100.0
