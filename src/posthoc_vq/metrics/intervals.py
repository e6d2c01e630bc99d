"""Confidence intervals for means of per-sample metrics.

Used to report per-image metrics (MSE, PSNR in dB, SSIM, ...) as a mean with a
Student-t confidence interval.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

__all__ = ["MeanCI", "mean_ci"]


@dataclass(frozen=True)
class MeanCI:
    """Mean of a sample with a two-sided t-based confidence interval.

    Attributes
    ----------
    mean : float
        Sample mean (same unit as the values, e.g. dB for PSNR).
    low, high : float
        Interval bounds ``mean -+ t_{(1+confidence)/2, n-1} * std / sqrt(n)``.
        NaN when ``n < 2`` (no variance estimate).
    std : float
        Sample standard deviation (``ddof=1``); NaN when ``n < 2``.
    n : int
        Number of values.
    confidence : float
        Confidence level in (0, 1), e.g. 0.95.
    """

    mean: float
    low: float
    high: float
    std: float
    n: int
    confidence: float

    def to_dict(self) -> dict:
        """Plain ``dict`` for JSON output.

        Returns
        -------
        dict
            Keys ``mean, low, high, std, n, confidence`` with Python floats and
            int. NaN values (``low``, ``high`` and ``std`` when ``n < 2``) become
            ``None`` so that the result serialises to strict JSON (``null``).
        """
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, float) and math.isnan(value):
                out[key] = None
        return out


def mean_ci(values, confidence: float = 0.95) -> MeanCI:
    """Mean with a Student-t confidence interval.

    The interval is ``mean -+ t.ppf((1 + confidence) / 2, df=n-1) * sem`` with
    ``sem = std(values, ddof=1) / sqrt(n)``, the same as
    ``scipy.stats.t.interval(confidence, n - 1, loc=mean, scale=sem)`` (which
    this function also handles when all values are equal: ``sem = 0`` gives
    ``low == high == mean``).

    Parameters
    ----------
    values : array_like or torch.Tensor
        The sample, any shape (flattened), e.g. the ``(N,)`` output of
        :func:`posthoc_vq.metrics.reconstruction.psnr`. Converted to float64.
    confidence : float, default 0.95
        Confidence level, strictly between 0 and 1.

    Returns
    -------
    MeanCI
        With ``n < 2`` the mean is returned (for ``n == 1``) but ``low``,
        ``high`` and ``std`` are NaN: a single value gives no interval.

    Raises
    ------
    ValueError
        If ``values`` is empty, contains NaN or infinite values (e.g. the PSNR
        of identical images is ``+inf``: clip such values before calling), or
        ``confidence`` is not in (0, 1).
    """
    confidence = float(confidence)
    if not (0.0 < confidence < 1.0):
        raise ValueError(f"confidence must be strictly between 0 and 1, got {confidence}")
    if hasattr(values, "detach"):  # torch.Tensor without importing torch
        values = values.detach().cpu().numpy()
    arr = np.asarray(values, dtype=np.float64).ravel()
    n = int(arr.size)
    if n == 0:
        raise ValueError("mean_ci needs at least one value, got an empty sample")
    if not np.all(np.isfinite(arr)):
        n_inf = int(np.isinf(arr).sum())
        n_nan = int(np.isnan(arr).sum())
        raise ValueError(
            f"mean_ci got non-finite values ({n_inf} infinite, {n_nan} NaN of {n}); "
            "e.g. PSNR of identical images is +inf - clip the values (for PSNR to a "
            "maximum in dB) or drop them before computing a confidence interval"
        )
    mean = float(arr.mean())
    if n < 2:
        nan = float("nan")
        return MeanCI(mean=mean, low=nan, high=nan, std=nan, n=n, confidence=confidence)
    std = float(arr.std(ddof=1))
    sem = std / math.sqrt(n)
    half = float(stats.t.ppf(0.5 * (1.0 + confidence), df=n - 1)) * sem
    return MeanCI(
        mean=mean, low=mean - half, high=mean + half, std=std, n=n, confidence=confidence
    )
