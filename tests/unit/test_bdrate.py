"""Bjontegaard deltas (posthoc_vq.codec.bdrate): the bjontegaard package as reference, exact cases, overlap rule, bad input, bootstrap."""

from __future__ import annotations

import math

import numpy as np
import pytest

from posthoc_vq.codec.bdrate import bd_bootstrap, bd_compare, bd_psnr, bd_rate
from posthoc_vq.errors import ConfigError

METHODS = ["pchip", "akima"]

ANCHOR_R = [0.15, 0.3, 0.55, 1.0, 1.8, 3.0]
ANCHOR_Q = [26.0, 28.9, 31.6, 34.4, 37.3, 39.8]


def _jpeg_like(rng: np.random.Generator, n: int, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    """A JPEG-like curve: PSNR roughly affine in log2(bpp), flattening at low rates, with jitter (strictly increasing)."""
    rate = np.geomspace(lo, hi, n) * np.exp(rng.uniform(-0.08, 0.08, n))
    q = 22.0 + rng.uniform(4.0, 6.5) * np.log2(1.0 + 3.0 * rate) + rng.normal(0.0, 0.15, n)
    return rate, q


def _smooth(rng: np.random.Generator, n: int, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    """A smooth concave curve, quadratic in log10(rate) (a learned codec's)."""
    rate = np.geomspace(lo, hi, n)
    x = np.log10(rate)
    q = 33.0 + rng.uniform(8.0, 12.0) * x - rng.uniform(0.5, 2.0) * x**2
    return rate, q


def _reference_cases() -> list[tuple[np.ndarray, ...]]:
    """Anchor/test pairs, 4-6 points each (counts may differ), overlapping partly in quality and in rate."""
    rng = np.random.default_rng(1234)
    cases = []
    for k in range(16):
        make_a = _jpeg_like if k % 2 == 0 else _smooth
        make_t = _smooth if k % 4 < 2 else _jpeg_like
        lo = rng.uniform(0.08, 0.3)
        ra, qa = make_a(rng, int(rng.integers(4, 7)), lo, lo * rng.uniform(8.0, 20.0))
        lo_t = lo * rng.uniform(0.5, 2.5)  # shifted ranges: partial overlap
        rt, qt = make_t(rng, int(rng.integers(4, 7)), lo_t, lo_t * rng.uniform(8.0, 20.0))
        qt = qt + rng.uniform(-1.0, 1.5)
        cases.append((ra, qa, rt, qt))
    return cases


@pytest.mark.parametrize("method", METHODS)
def test_matches_bjontegaard_package(method):
    import bjontegaard as bd  # the reference implementation (test extras)

    partial = 0
    for ra, qa, rt, qt in _reference_cases():
        for arr in (ra, qa, rt, qt):
            assert np.all(np.diff(arr) > 0)  # the package does not sort: give it ascending points
        cmp = bd_compare(ra, qa, rt, qt, method=method, min_overlap=0.0)
        assert cmp["comparable"], cmp["reason"]
        partial += cmp["overlap_fraction"] < 1.0
        kw = dict(method=method, require_matching_points=False, min_overlap=0.0)
        ref_rate = bd.bd_rate(ra, qa, rt, qt, **kw)
        ref_psnr = bd.bd_psnr(ra, qa, rt, qt, **kw)
        assert bd_rate(ra, qa, rt, qt, method=method) == pytest.approx(ref_rate, rel=1e-9, abs=1e-9)
        assert bd_psnr(ra, qa, rt, qt, method=method) == pytest.approx(ref_psnr, rel=1e-9, abs=1e-9)
        assert cmp["bd_rate_percent"] == pytest.approx(ref_rate, rel=1e-9, abs=1e-9)
        assert cmp["bd_psnr_db"] == pytest.approx(ref_psnr, rel=1e-9, abs=1e-9)
        # points in any order give the same numbers
        pa, pt = np.random.default_rng(0).permutation(len(ra)), np.random.default_rng(1).permutation(len(rt))
        assert bd_rate(ra[pa], qa[pa], rt[pt], qt[pt], method=method) == pytest.approx(ref_rate, rel=1e-9, abs=1e-9)
        assert bd_psnr(ra[::-1], qa[::-1], rt[pt], qt[pt], method=method) == pytest.approx(ref_psnr, rel=1e-9, abs=1e-9)
    assert partial >= 8  # the cases really exercise partial overlap


@pytest.mark.parametrize("method", METHODS)
def test_exact_cases(method):
    ra, qa = np.array(ANCHOR_R), np.array(ANCHOR_Q)
    assert bd_rate(ra, qa, 0.8 * ra, qa, method=method) == pytest.approx(-20.0, abs=1e-9)
    assert bd_rate(ra, qa, 1.25 * ra, qa, method=method) == pytest.approx(25.0, abs=1e-9)
    assert bd_psnr(ra, qa, ra, qa + 1.0, method=method) == pytest.approx(1.0, abs=1e-12)
    assert bd_psnr(ra, qa, ra, qa - 0.5, method=method) == pytest.approx(-0.5, abs=1e-12)
    assert bd_rate(ra, qa, ra, qa, method=method) == 0.0
    assert bd_psnr(ra, qa, ra, qa, method=method) == 0.0
    # sign conventions: a better test codec has a negative BD-rate and a positive BD-PSNR
    better = bd_compare(ra, qa, ra, qa + 1.0, method=method)
    assert better["comparable"] and better["bd_rate_percent"] < 0 and better["bd_psnr_db"] > 0
    assert better["method"] == method


def test_not_comparable_disjoint():
    ra, qa = np.array(ANCHOR_R), np.array(ANCHOR_Q)
    out = bd_compare(ra, qa, ra * 20, qa + 20.0)
    assert out["comparable"] is False
    assert out["bd_rate_percent"] is None and out["bd_psnr_db"] is None
    assert out["overlap_db"] is None and out["overlap_fraction"] == 0.0
    assert "quality ranges do not overlap" in out["reason"]
    with pytest.raises(ConfigError, match="quality ranges do not overlap"):
        bd_rate(ra, qa, ra * 20, qa + 20.0)
    with pytest.raises(ConfigError, match="rate ranges do not overlap"):
        bd_psnr(ra, qa, ra * 20, qa + 20.0)


def test_not_comparable_small_overlap():
    ra, qa = [0.2, 0.4, 0.8, 1.6], [28.0, 30.0, 32.0, 34.0]
    rt, qt = [1.4, 2.0, 3.0, 4.0], [33.7, 36.0, 38.0, 40.0]  # quality overlap 33.7-34: 0.3 dB of the 6 dB narrower range
    out = bd_compare(ra, qa, rt, qt)
    assert out["comparable"] is False
    assert out["bd_rate_percent"] is None and out["bd_psnr_db"] is None
    assert out["overlap_db"] == pytest.approx([33.7, 34.0])
    assert out["overlap_fraction"] == pytest.approx(0.05)
    assert "quality ranges overlap over 0.30 dB, 5% of the narrower curve's range; at least 50% is needed" in out["reason"]
    # with no minimum, the sliver counts
    loose = bd_compare(ra, qa, rt, qt, min_overlap=0.0)
    assert loose["comparable"] is True and loose["reason"] is None
    assert loose["bd_rate_percent"] == pytest.approx(bd_rate(ra, qa, rt, qt))


def test_not_comparable_on_the_rate_axis():
    # the same quality range, but the test reaches it at a third of the rate: log-rate ranges barely overlap
    ra, qa = [1.0, 1.3, 1.6, 2.0], [30.0, 32.0, 34.0, 36.0]
    rt = [0.3, 0.4, 0.5, 1.1]
    out = bd_compare(ra, qa, rt, qa)
    assert out["overlap_fraction"] == 1.0
    assert out["comparable"] is False and out["bd_rate_percent"] is None
    assert "log10-rate ranges overlap" in out["reason"] and "quality" not in out["reason"]


def test_overlap_exactly_at_threshold_is_comparable():
    ra, qa = [0.2, 0.4, 0.8, 1.6], [28.0, 30.0, 32.0, 34.0]
    rt, qt = [0.4, 0.8, 1.6, 3.2], [31.0, 33.0, 35.0, 37.0]
    out = bd_compare(ra, qa, rt, qt, min_overlap=0.5)
    assert out["overlap_fraction"] == pytest.approx(0.5)
    assert out["comparable"] is True


@pytest.mark.parametrize(
    ("rate", "quality", "method", "message"),
    [
        ([0.2, 0.4, 0.8, 1.6], [28.0, 31.0, 30.0, 34.0], "pchip", "the test curve is not monotone: quality must rise strictly"),
        ([0.2, 0.4, 0.4, 1.6], [28.0, 30.0, 31.0, 34.0], "pchip", "the test curve is not monotone: two points have the same rate 0.4"),
        ([0.2, 0.4, 0.8, 1.6], [28.0, float("nan"), 32.0, 34.0], "pchip", "the test curve has a NaN or infinite"),
        ([0.2, 0.4, 0.8, float("inf")], [28.0, 30.0, 32.0, 34.0], "pchip", "the test curve has a NaN or infinite"),
        ([0.0, 0.4, 0.8, 1.6], [28.0, 30.0, 32.0, 34.0], "pchip", "the test curve has a non-positive rate"),
        ([-0.1, 0.4, 0.8, 1.6], [28.0, 30.0, 32.0, 34.0], "akima", "the test curve has a non-positive rate"),
        ([0.4], [30.0], "pchip", "the test curve has 1 point(s); method 'pchip' needs at least 2"),
        ([0.4, 0.8, 1.6], [30.0, 32.0, 34.0], "akima", "the test curve has 3 point(s); method 'akima' needs at least 4"),
        ([0.2, 0.4, 0.8], [28.0, 30.0, 32.0, 34.0], "pchip", "two 1-D arrays of equal length"),
    ],
)
def test_bad_input(rate, quality, method, message):
    ra, qa = [0.2, 0.4, 0.8, 1.6], [28.0, 30.0, 32.0, 34.0]
    for fn in (bd_rate, bd_psnr, bd_compare):
        with pytest.raises(ConfigError) as err:
            fn(ra, qa, rate, quality, method=method)
        assert message in str(err.value)
    with pytest.raises(ConfigError, match="the anchor curve"):  # the message names the curve at fault
        bd_rate(rate, quality, ra, qa, method=method)


def test_bad_method_and_min_overlap():
    ra, qa = [0.2, 0.4, 0.8, 1.6], [28.0, 30.0, 32.0, 34.0]
    with pytest.raises(ConfigError, match="unknown BD interpolation method 'cubic'"):
        bd_rate(ra, qa, ra, qa, method="cubic")
    with pytest.raises(ConfigError, match="min_overlap must lie in"):
        bd_compare(ra, qa, ra, qa, min_overlap=1.5)


def test_pchip_two_points_is_linear():
    # two points: PCHIP is the straight line, so the BD-rate of a rate-scaled copy is still exact
    assert bd_rate([0.5, 2.0], [30.0, 36.0], [0.4, 1.6], [30.0, 36.0]) == pytest.approx(-20.0, abs=1e-9)


# --- bootstrap ------------------------------------------------------------------------------------

BASE_BPP = np.array([0.1, 0.16, 0.25, 0.4, 0.63, 1.0, 1.6, 2.5])


def _per_image(n: int, seed: int, gain: float = 0.85) -> tuple[np.ndarray, ...]:
    """Per-image rates and PSNRs of an anchor and of a test codec that saves about 1 - gain of the bits."""
    rng = np.random.default_rng(seed)
    difficulty = rng.normal(0.0, 1.0, (n, 1))
    ra = BASE_BPP * np.exp(0.3 * difficulty + rng.normal(0.0, 0.05, (n, BASE_BPP.size)))
    qa = 30.0 + 4.5 * np.log2(BASE_BPP / 0.4) - 2.0 * difficulty + rng.normal(0.0, 0.3, (n, BASE_BPP.size))
    rt = ra * gain * np.exp(rng.normal(0.0, 0.1, (n, BASE_BPP.size)))
    qt = qa + rng.normal(0.0, 0.3, (n, BASE_BPP.size))
    return ra, qa, rt, qt


@pytest.mark.parametrize("method", METHODS)
def test_bootstrap_exact_scaling(method):
    ra, qa, _, _ = _per_image(40, seed=3)
    out = bd_bootstrap(ra, qa, 0.8 * ra, qa, method=method, n_boot=200)
    assert out["comparable"] is True
    assert out["bd_rate_percent"] == pytest.approx(-20.0, abs=1e-9)
    assert out["bd_rate_ci"] == pytest.approx([-20.0, -20.0], abs=1e-9)
    assert out["n_boot"] == 200 and out["n_boot_comparable"] == 200
    assert out["n_images"] == 40 and out["confidence"] == 0.95


@pytest.mark.parametrize("method", METHODS)
def test_bootstrap_noisy(method):
    small = bd_bootstrap(*_per_image(30, seed=5), method=method, n_boot=400, seed=1)
    large = bd_bootstrap(*_per_image(3000, seed=6), method=method, n_boot=400, seed=1)
    for out in (small, large):
        assert out["comparable"] is True and out["n_boot_comparable"] >= 390
        lo, hi = out["bd_rate_ci"]
        assert lo < out["bd_rate_percent"] < hi
        lo, hi = out["bd_psnr_ci"]
        assert lo < out["bd_psnr_db"] < hi
        assert out["bd_rate_percent"] < 0 and out["bd_psnr_db"] > 0  # the test codec saves bits
    # point estimate = bd_compare on the mean curves
    ra, qa, rt, qt = _per_image(30, seed=5)
    ref = bd_compare(ra.mean(0), qa.mean(0), rt.mean(0), qt.mean(0), method=method)
    assert small["bd_rate_percent"] == ref["bd_rate_percent"] and small["bd_psnr_db"] == ref["bd_psnr_db"]
    # 100x the images: the interval is about 10x narrower
    width = lambda ci: ci[1] - ci[0]  # noqa: E731
    assert width(large["bd_rate_ci"]) < width(small["bd_rate_ci"]) / 4
    assert width(large["bd_psnr_ci"]) < width(small["bd_psnr_ci"]) / 4


def test_bootstrap_is_seeded():
    data = _per_image(50, seed=7)
    a = bd_bootstrap(*data, n_boot=300, seed=11)
    b = bd_bootstrap(*data, n_boot=300, seed=11)
    c = bd_bootstrap(*data, n_boot=300, seed=12)
    assert a == b
    assert a["bd_rate_ci"] != c["bd_rate_ci"]
    assert a["bd_rate_percent"] == c["bd_rate_percent"]  # the point estimate does not depend on the seed


def test_bootstrap_confidence_level_widens():
    data = _per_image(50, seed=8)
    narrow = bd_bootstrap(*data, n_boot=500, confidence=0.5)
    wide = bd_bootstrap(*data, n_boot=500, confidence=0.99)
    assert wide["bd_rate_ci"][0] < narrow["bd_rate_ci"][0] < narrow["bd_rate_ci"][1] < wide["bd_rate_ci"][1]


def test_bootstrap_not_comparable_has_no_ci():
    ra, qa, _, _ = _per_image(20, seed=9)
    out = bd_bootstrap(ra, qa, ra * 50, qa + 25.0, n_boot=50)
    assert out["comparable"] is False and "do not overlap" in out["reason"]
    assert out["bd_rate_ci"] is None and out["bd_psnr_ci"] is None
    assert out["bd_rate_percent"] is None and out["n_boot_comparable"] == 0


def test_bootstrap_bad_input():
    ra, qa, rt, qt = _per_image(20, seed=10)
    with pytest.raises(ConfigError, match="same images: 20 anchor rows, 19 test rows"):
        bd_bootstrap(ra, qa, rt[:19], qt[:19])
    with pytest.raises(ConfigError, match="must be 2-D arrays"):
        bd_bootstrap(ra[0], qa[0], rt[0], qt[0])
    bad = qt.copy()
    bad[3, 2] = math.inf
    with pytest.raises(ConfigError, match="test per-image rates or qualities contain NaN or infinite"):
        bd_bootstrap(ra, qa, rt, bad)
    with pytest.raises(ConfigError, match="anchor per-image rates must be > 0"):
        bd_bootstrap(ra * 0, qa, rt, qt)
    with pytest.raises(ConfigError, match="n_boot must be a positive integer"):
        bd_bootstrap(ra, qa, rt, qt, n_boot=0)
    with pytest.raises(ConfigError, match="confidence must lie in"):
        bd_bootstrap(ra, qa, rt, qt, confidence=1.0)
