"""Statistics of a sweep's arms: summaries with CIs, two-arm tests, ANOVA, Holm, effect sizes.

Thin, named wrappers over ``scipy.stats`` (and statsmodels for Holm), so every number in a
claim says which test made it. Observations are one per run (a seed's test-set mean), so
``n`` is the number of seeds, not of images.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class ArmSummary:
    n: int
    mean: float
    std: float  # sample standard deviation (ddof=1); nan for n < 2
    ci_low: float  # t-based 95% CI of the mean (nan for n < 2)
    ci_high: float
    bootstrap_low: float | None = None
    bootstrap_high: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TwoArmTest:
    test: str  # 'paired t-test' or 'Welch t-test'
    n_a: int
    n_b: int
    diff: float  # mean(a) - mean(b) (paired: mean of a_i - b_i)
    diff_low: float  # 95% CI of the difference
    diff_high: float
    statistic: float
    df: float
    p: float
    hedges_g: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(values: Sequence[float], confidence: float = 0.95, bootstrap: bool = False, seed: int = 0) -> ArmSummary:
    """n, mean, sample std and the t-based CI of the mean (``scipy.stats.t``); bootstrap percentile CI optionally."""
    x = np.asarray(values, dtype=np.float64)
    n = len(x)
    if n == 0:
        raise ValueError("no observations")
    mean = float(x.mean())
    if n < 2:
        return ArmSummary(n, mean, float("nan"), float("nan"), float("nan"))
    std = float(x.std(ddof=1))
    low, high = stats.t.interval(confidence, n - 1, loc=mean, scale=std / np.sqrt(n)) if std > 0 else (mean, mean)
    b_low = b_high = None
    if bootstrap and std > 0:
        res = stats.bootstrap((x,), np.mean, confidence_level=confidence, n_resamples=9999, method="percentile", random_state=seed)
        b_low, b_high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return ArmSummary(n, mean, std, float(low), float(high), b_low, b_high)


def cohens_d(a: Sequence[float], b: Sequence[float]) -> float:
    """(mean a - mean b) / pooled sample standard deviation."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    na, nb = len(a), len(b)
    pooled = np.sqrt(((na - 1) * a.var(ddof=1) + (nb - 1) * b.var(ddof=1)) / (na + nb - 2))
    return float((a.mean() - b.mean()) / pooled) if pooled > 0 else float("inf") * np.sign(a.mean() - b.mean())


def hedges_g(a: Sequence[float], b: Sequence[float]) -> float:
    """Cohen's d with the small-sample correction J = 1 - 3 / (4 (na + nb) - 9)."""
    n = len(a) + len(b)
    return cohens_d(a, b) * (1 - 3 / (4 * n - 9))


def welch(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> TwoArmTest:
    """Welch's unequal-variance t-test (``scipy.stats.ttest_ind(equal_var=False)``) with the CI of mean(a) - mean(b)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    res = stats.ttest_ind(a, b, equal_var=False)
    ci = res.confidence_interval(confidence)
    return TwoArmTest("Welch t-test", len(a), len(b), float(a.mean() - b.mean()), float(ci.low), float(ci.high),
                      float(res.statistic), float(res.df), float(res.pvalue), hedges_g(a, b))


def paired(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> TwoArmTest:
    """Paired t-test (``scipy.stats.ttest_rel``) on matched observations, with the CI of the mean difference."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    res = stats.ttest_rel(a, b)
    ci = res.confidence_interval(confidence)
    return TwoArmTest("paired t-test", len(a), len(b), float((a - b).mean()), float(ci.low), float(ci.high),
                      float(res.statistic), float(res.df), float(res.pvalue), hedges_g(a, b))


def anova(groups: Sequence[Sequence[float]]) -> dict[str, float]:
    """One-way ANOVA across arms (``scipy.stats.f_oneway``)."""
    res = stats.f_oneway(*[np.asarray(g, float) for g in groups])
    k, n = len(groups), sum(len(g) for g in groups)
    return {"F": float(res.statistic), "p": float(res.pvalue), "df_between": k - 1, "df_within": n - k}


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (``statsmodels.stats.multitest.multipletests(method='holm')``)."""
    if len(pvalues) == 0:
        return []
    from statsmodels.stats.multitest import multipletests

    return [float(p) for p in multipletests(np.asarray(pvalues, float), method="holm")[1]]
