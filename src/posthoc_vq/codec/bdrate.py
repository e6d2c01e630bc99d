"""Bjontegaard-delta (BD) comparison of two rate-distortion curves.

Each codec is a curve of operating points ``(rate, quality)``: rate in bits per pixel (any positive
unit, the same for both curves), quality in dB (PSNR, or any metric where higher is better). The
*anchor* is the reference, the *test* the codec under study.

* **BD-rate** (:func:`bd_rate`): log10(rate) is interpolated as a function of quality for each
  curve; the mean difference ``d`` (test minus anchor) of the two interpolants over the quality
  interval both curves cover is the mean log-rate ratio, reported as ``(10**d - 1) * 100`` percent.
  Negative means the test needs fewer bits for the same quality (-20 is 20 % fewer bits).
* **BD-PSNR** (:func:`bd_psnr`): quality is interpolated as a function of log10(rate), and the mean
  difference over the common log-rate interval is the quality gain in dB at equal rate (positive:
  test is better).

Interpolation is piecewise cubic, ``method="pchip"`` (scipy's :class:`~scipy.interpolate.PchipInterpolator`,
monotone, the default; at least 2 points a curve) or ``method="akima"``
(:class:`~scipy.interpolate.Akima1DInterpolator`; at least 4 points a curve), and the interpolants are
integrated exactly. These are the "pchip"/"akima" variants of the ``bjontegaard`` package (Herglotz
et al.; the cubic-polynomial fit of the original VCEG-M33 is not offered), whose numbers they
reproduce. Unlike that package, points may come in any order (they are sorted by rate), a curve must
be strictly monotone (quality rises strictly with rate: convert a lower-is-better distortion such as
MSE to PSNR first), and bad input raises :class:`~posthoc_vq.errors.ConfigError`.

Overlap rule (:func:`bd_compare`): a BD number only describes the interval the two curves share, so
a comparison is *not comparable* when the shared quality interval is empty or narrower than
``min_overlap`` (default 0.5) of the narrower of the two curves' quality ranges, and likewise for
the shared log10-rate interval that BD-PSNR integrates over. Note that the ``bjontegaard`` package
measures overlap against the union of both ranges, default 0.75, and only warns.

:func:`bd_bootstrap` gives percentile confidence intervals over images by a paired bootstrap of
per-image rates and qualities.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy.interpolate import Akima1DInterpolator, PchipInterpolator

from posthoc_vq.errors import ConfigError

__all__ = ["METHODS", "MIN_POINTS", "bd_bootstrap", "bd_compare", "bd_psnr", "bd_rate"]

#: interpolation methods and the fewest points a curve needs for each
MIN_POINTS: dict[str, int] = {"pchip": 2, "akima": 4}
METHODS: tuple[str, ...] = tuple(MIN_POINTS)


def _check_method(method: str) -> None:
    if method not in MIN_POINTS:
        raise ConfigError(f"unknown BD interpolation method {method!r}: use one of {', '.join(METHODS)}")


def _curve(rate: ArrayLike, quality: ArrayLike, name: str, method: str) -> tuple[np.ndarray, np.ndarray]:
    """Validate one curve; return ``(log10 rate, quality)`` sorted by rate, both strictly increasing."""
    r = np.asarray(rate, dtype=np.float64)
    q = np.asarray(quality, dtype=np.float64)
    if r.ndim != 1 or q.ndim != 1 or r.shape != q.shape:
        raise ConfigError(f"the {name} curve needs two 1-D arrays of equal length (rates and qualities), got shapes {r.shape} and {q.shape}")
    need = MIN_POINTS[method]
    if r.size < need:
        raise ConfigError(f"the {name} curve has {r.size} point(s); method {method!r} needs at least {need}")
    if not np.all(np.isfinite(r)) or not np.all(np.isfinite(q)):
        raise ConfigError(f"the {name} curve has a NaN or infinite rate or quality: rates {r.tolist()}, qualities {q.tolist()}")
    if np.any(r <= 0):
        raise ConfigError(f"the {name} curve has a non-positive rate ({r.min():g}); rates must be > 0 (BD works in log rate)")
    order = np.argsort(r, kind="stable")
    r, q = r[order], q[order]
    if np.any(np.diff(r) <= 0):
        i = int(np.flatnonzero(np.diff(r) <= 0)[0])
        raise ConfigError(f"the {name} curve is not monotone: two points have the same rate {r[i]:g}")
    if np.any(np.diff(q) <= 0):
        i = int(np.flatnonzero(np.diff(q) <= 0)[0])
        raise ConfigError(
            f"the {name} curve is not monotone: quality must rise strictly with rate, but rate {r[i]:g} -> {r[i + 1]:g} "
            f"gives quality {q[i]:g} -> {q[i + 1]:g}"
        )
    return np.log10(r), q


def _mean_delta(xa: np.ndarray, ya: np.ndarray, xt: np.ndarray, yt: np.ndarray, method: str) -> float | None:
    """Mean of ``f_test - f_anchor`` over the common x interval (x sorted ascending); None when it is empty."""
    lo, hi = max(xa[0], xt[0]), min(xa[-1], xt[-1])
    if not hi > lo:
        return None
    cls = PchipInterpolator if method == "pchip" else Akima1DInterpolator
    area_a = cls(xa, ya).integrate(lo, hi)
    area_t = cls(xt, yt).integrate(lo, hi)
    return float((area_t - area_a) / (hi - lo))


def _overlap(xa: np.ndarray, xt: np.ndarray) -> tuple[float, float, float]:
    """``(lo, hi, fraction)`` of the common interval of two sorted axes; fraction of the narrower range (0 when empty)."""
    lo, hi = max(xa[0], xt[0]), min(xa[-1], xt[-1])
    narrower = min(xa[-1] - xa[0], xt[-1] - xt[0])
    return float(lo), float(hi), float(max(hi - lo, 0.0) / narrower)


def bd_rate(rate_anchor: ArrayLike, psnr_anchor: ArrayLike, rate_test: ArrayLike, psnr_test: ArrayLike, *, method: str = "pchip") -> float:
    """Bjontegaard-delta rate of the test curve against the anchor.

    Parameters
    ----------
    rate_anchor, psnr_anchor : array_like
        Rates (> 0, e.g. bits per pixel) and qualities (dB) of the anchor's operating points, any order.
    rate_test, psnr_test : array_like
        The same for the test codec (the number of points may differ from the anchor's).
    method : {"pchip", "akima"}
        Interpolation of log10(rate) as a function of quality.

    Returns
    -------
    float
        Mean rate difference in percent at equal quality over the common quality interval;
        negative when the test needs fewer bits. No minimum overlap is enforced here (see :func:`bd_compare`).

    Raises
    ------
    ConfigError
        Unknown method, too few points, NaN/inf, a non-positive rate, a curve that is not strictly
        monotone, or quality ranges that do not overlap.
    """
    _check_method(method)
    la, qa = _curve(rate_anchor, psnr_anchor, "anchor", method)
    lt, qt = _curve(rate_test, psnr_test, "test", method)
    d = _mean_delta(qa, la, qt, lt, method)
    if d is None:
        raise ConfigError(f"BD-rate: the quality ranges do not overlap (anchor {qa[0]:g}-{qa[-1]:g} dB, test {qt[0]:g}-{qt[-1]:g} dB)")
    return (10.0**d - 1.0) * 100.0


def bd_psnr(rate_anchor: ArrayLike, psnr_anchor: ArrayLike, rate_test: ArrayLike, psnr_test: ArrayLike, *, method: str = "pchip") -> float:
    """Bjontegaard-delta PSNR (quality) of the test curve against the anchor.

    Parameters
    ----------
    rate_anchor, psnr_anchor, rate_test, psnr_test : array_like
        As in :func:`bd_rate`.
    method : {"pchip", "akima"}
        Interpolation of quality as a function of log10(rate).

    Returns
    -------
    float
        Mean quality difference in dB at equal rate over the common log-rate interval; positive when the test is better.

    Raises
    ------
    ConfigError
        As :func:`bd_rate`, with rate ranges that do not overlap in place of quality ranges.
    """
    _check_method(method)
    la, qa = _curve(rate_anchor, psnr_anchor, "anchor", method)
    lt, qt = _curve(rate_test, psnr_test, "test", method)
    d = _mean_delta(la, qa, lt, qt, method)
    if d is None:
        raise ConfigError(
            f"BD-PSNR: the rate ranges do not overlap (anchor {10 ** la[0]:g}-{10 ** la[-1]:g}, test {10 ** lt[0]:g}-{10 ** lt[-1]:g})"
        )
    return d


def _compare_sorted(la: np.ndarray, qa: np.ndarray, lt: np.ndarray, qt: np.ndarray, method: str, min_overlap: float) -> dict[str, Any]:
    """:func:`bd_compare` on validated curves (log10 rate and quality, sorted ascending)."""
    q_lo, q_hi, q_frac = _overlap(qa, qt)
    r_lo, r_hi, r_frac = _overlap(la, lt)
    reasons = []
    if not q_hi > q_lo:
        reasons.append(f"the quality ranges do not overlap (anchor {qa[0]:.2f}-{qa[-1]:.2f} dB, test {qt[0]:.2f}-{qt[-1]:.2f} dB)")
    elif q_frac < min_overlap:
        reasons.append(
            f"quality ranges overlap over {q_hi - q_lo:.2f} dB, {q_frac:.0%} of the narrower curve's range; at least {min_overlap:.0%} is needed"
        )
    if not r_hi > r_lo:
        reasons.append(f"the rate ranges do not overlap (anchor {10 ** la[0]:.4g}-{10 ** la[-1]:.4g}, test {10 ** lt[0]:.4g}-{10 ** lt[-1]:.4g})")
    elif r_frac < min_overlap:
        reasons.append(
            f"log10-rate ranges overlap over {r_hi - r_lo:.3f} (a rate ratio of {10 ** (r_hi - r_lo):.3g}), {r_frac:.0%} of the narrower "
            f"curve's range; at least {min_overlap:.0%} is needed"
        )
    comparable = not reasons
    bd_rate_percent = bd_psnr_db = None
    if comparable:
        bd_rate_percent = (10.0 ** _mean_delta(qa, la, qt, lt, method) - 1.0) * 100.0
        bd_psnr_db = _mean_delta(la, qa, lt, qt, method)
    return {
        "bd_rate_percent": bd_rate_percent,
        "bd_psnr_db": bd_psnr_db,
        "overlap_db": [q_lo, q_hi] if q_hi > q_lo else None,
        "overlap_fraction": q_frac,
        "overlap_log10_rate": [r_lo, r_hi] if r_hi > r_lo else None,
        "overlap_fraction_rate": r_frac,
        "comparable": comparable,
        "reason": "; ".join(reasons) if reasons else None,
        "method": method,
    }


def _check_min_overlap(min_overlap: float) -> None:
    if not 0.0 <= min_overlap <= 1.0:
        raise ConfigError(f"min_overlap must lie in [0, 1], got {min_overlap!r}")


def bd_compare(
    rate_a: ArrayLike, q_a: ArrayLike, rate_t: ArrayLike, q_t: ArrayLike, *, method: str = "pchip", min_overlap: float = 0.5
) -> dict[str, Any]:
    """BD-rate and BD-PSNR of a test curve against an anchor, or why they are not comparable.

    Parameters
    ----------
    rate_a, q_a : array_like
        Anchor rates (> 0) and qualities (dB), any order.
    rate_t, q_t : array_like
        Test rates and qualities.
    method : {"pchip", "akima"}
        Interpolation method (:func:`bd_rate`).
    min_overlap : float
        Fewest of the narrower curve's range that the common interval must cover, on the quality
        axis (for BD-rate) and on the log10-rate axis (for BD-PSNR), in [0, 1]; 0 only requires a
        non-empty overlap.

    Returns
    -------
    dict
        ``bd_rate_percent`` and ``bd_psnr_db`` (floats, or None when not comparable), ``overlap_db``
        (``[lo, hi]`` in dB, None when empty), ``overlap_fraction`` (of the narrower quality range),
        ``overlap_log10_rate`` and ``overlap_fraction_rate`` (the same on the log10-rate axis),
        ``comparable`` (bool), ``reason`` (None, or why not comparable, in words), ``method``.

    Raises
    ------
    ConfigError
        Bad input, as :func:`bd_rate` (disjoint ranges are not an error here: ``comparable`` is False).
    """
    _check_method(method)
    _check_min_overlap(min_overlap)
    la, qa = _curve(rate_a, q_a, "anchor", method)
    lt, qt = _curve(rate_t, q_t, "test", method)
    return _compare_sorted(la, qa, lt, qt, method, min_overlap)


def _per_image(rate: ArrayLike, quality: ArrayLike, name: str) -> tuple[np.ndarray, np.ndarray]:
    r = np.asarray(rate, dtype=np.float64)
    q = np.asarray(quality, dtype=np.float64)
    if r.ndim != 2 or r.shape != q.shape:
        raise ConfigError(
            f"the {name} per-image rates and qualities must be 2-D arrays (n_images, n_points) of the same shape, got {r.shape} and {q.shape}"
        )
    if r.shape[0] < 1:
        raise ConfigError(f"the {name} per-image arrays have no images")
    if not np.all(np.isfinite(r)) or not np.all(np.isfinite(q)):
        raise ConfigError(f"the {name} per-image rates or qualities contain NaN or infinite values (a lossless image has PSNR inf: cap it first)")
    if np.any(r <= 0):
        raise ConfigError(f"the {name} per-image rates must be > 0, got a minimum of {r.min():g}")
    return r, q


def bd_bootstrap(
    rate_a: ArrayLike,
    q_a: ArrayLike,
    rate_t: ArrayLike,
    q_t: ArrayLike,
    *,
    method: str = "pchip",
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    min_overlap: float = 0.5,
) -> dict[str, Any]:
    """BD-rate and BD-PSNR with paired bootstrap percentile confidence intervals over images.

    Each curve is the mean over images at each operating point (mean rate, mean quality). A
    resample draws image indices with replacement (``numpy.random.default_rng(seed)``), the same
    indices for anchor and test, and recomputes both curves and both BD numbers; resamples whose
    curves are not strictly monotone or not comparable (:func:`bd_compare`) are skipped.

    Parameters
    ----------
    rate_a, q_a : array_like, shape (n_images, n_points_a)
        Anchor rate (e.g. bits per pixel, > 0) and quality (dB) of each image at each operating point.
    rate_t, q_t : array_like, shape (n_images, n_points_t)
        The same for the test codec, on the same images in the same order.
    method : {"pchip", "akima"}
        Interpolation method.
    n_boot : int
        Number of resamples (>= 1).
    confidence : float
        Two-sided level of the percentile intervals, in (0, 1).
    seed : int
        Seed of the resampling; the same seed gives the same output.
    min_overlap : float
        Overlap rule of :func:`bd_compare`.

    Returns
    -------
    dict
        :func:`bd_compare` of the full-sample mean curves, plus ``bd_rate_ci`` and ``bd_psnr_ci``
        (``[lo, hi]``, None when the point estimate is not comparable or no resample was),
        ``n_boot``, ``n_boot_comparable`` (resamples used), ``confidence`` and ``n_images``.

    Raises
    ------
    ConfigError
        Bad shapes, NaN/inf, non-positive rates, a non-monotone full-sample curve, or bad parameters.
    """
    _check_method(method)
    _check_min_overlap(min_overlap)
    if not (isinstance(n_boot, (int, np.integer)) and n_boot >= 1):
        raise ConfigError(f"n_boot must be a positive integer, got {n_boot!r}")
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence must lie in (0, 1), got {confidence!r}")
    ra, qa = _per_image(rate_a, q_a, "anchor")
    rt, qt = _per_image(rate_t, q_t, "test")
    n = ra.shape[0]
    if rt.shape[0] != n:
        raise ConfigError(f"anchor and test must be measured on the same images: {n} anchor rows, {rt.shape[0]} test rows")
    out = bd_compare(ra.mean(axis=0), qa.mean(axis=0), rt.mean(axis=0), qt.mean(axis=0), method=method, min_overlap=min_overlap)
    out.update(bd_rate_ci=None, bd_psnr_ci=None, n_boot=int(n_boot), n_boot_comparable=0, confidence=float(confidence), n_images=n)
    if not out["comparable"]:
        return out

    pa, pt = ra.shape[1], rt.shape[1]
    data = np.concatenate([ra, qa, rt, qt], axis=1)  # (n, 2 pa + 2 pt): one matrix product gives every resample's four curves
    rng = np.random.default_rng(seed)
    chunk = max(1, 2_000_000 // n)
    rates, psnrs = [], []
    for start in range(0, n_boot, chunk):
        c = min(chunk, n_boot - start)
        idx = rng.integers(0, n, size=(c, n))
        counts = np.bincount((idx + (np.arange(c) * n)[:, None]).ravel(), minlength=c * n).reshape(c, n)
        means = (counts @ data) / n
        for m in means:
            cra, cqa, crt, cqt = m[:pa], m[pa : 2 * pa], m[2 * pa : 2 * pa + pt], m[2 * pa + pt :]
            oa, ot = np.argsort(cra), np.argsort(crt)
            cra, cqa, crt, cqt = cra[oa], cqa[oa], crt[ot], cqt[ot]
            if np.any(np.diff(cra) <= 0) or np.any(np.diff(cqa) <= 0) or np.any(np.diff(crt) <= 0) or np.any(np.diff(cqt) <= 0):
                continue
            res = _compare_sorted(np.log10(cra), cqa, np.log10(crt), cqt, method, min_overlap)
            if res["comparable"]:
                rates.append(res["bd_rate_percent"])
                psnrs.append(res["bd_psnr_db"])
    out["n_boot_comparable"] = len(rates)
    if rates:
        tail = (1.0 - confidence) / 2.0 * 100.0
        out["bd_rate_ci"] = [float(v) for v in np.percentile(rates, [tail, 100.0 - tail])]
        out["bd_psnr_ci"] = [float(v) for v in np.percentile(psnrs, [tail, 100.0 - tail])]
    return out
