"""Statistics of a sweep's arms: summaries with CIs, two-arm tests, tests against a margin (TOST), ANOVA, Holm, effect sizes.

Thin, named wrappers over ``scipy.stats`` (Holm by hand, with statsmodels as its reference in the
tests), so every number in a claim says which test made it. Observations are one per run (a
seed's test-set mean), so ``n`` is the number of seeds, not of images.
"""

from __future__ import annotations

import math
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


@dataclass(frozen=True)
class MarginTest:
    """A difference ``diff = mean(a) - mean(b)`` tested against a practical margin ``m`` > 0: TOST and its one-sided parts.

    Each p is a one-sided t-test (paired or Welch) of ``diff`` against a shifted null; ``p_lower``
    and ``p_below`` test the same null (``diff = -m``) in opposite directions, so they sum to 1
    (likewise ``p_upper`` and ``p_above`` at ``+m``).
    """

    test: str  # 'paired TOST' or 'Welch TOST'
    n_a: int
    n_b: int
    margin: float
    diff: float  # mean(a) - mean(b) (paired: mean of a_i - b_i)
    df: float
    level: float  # confidence of the CI: 1 - 2 alpha (90% for alpha 0.05), the interval dual to TOST at alpha
    ci_low: float
    ci_high: float
    p_lower: float  # H1: diff > -m
    p_upper: float  # H1: diff < +m
    p_tost: float  # H1: -m < diff < +m (equivalence): max(p_lower, p_upper)
    p_below: float  # H1: diff < -m
    p_above: float  # H1: diff > +m

    def p_non_inferior(self, higher_is_better: bool) -> float:
        """One-sided p of H1 'a is worse than b by less than the margin' (diff > -m, or diff < +m when lower is better)."""
        return self.p_lower if higher_is_better else self.p_upper

    def p_inferior(self, higher_is_better: bool) -> float:
        """One-sided p of H1 'a is worse than b by more than the margin' (diff < -m, or diff > +m when lower is better)."""
        return self.p_below if higher_is_better else self.p_above

    @property
    def p_beyond(self) -> float:
        """Two-sided p of H1 'diff lies outside [-m, +m]': 2 min(p_below, p_above), capped at 1 (< alpha iff the 1 - alpha CI lies outside the band)."""
        return min(1.0, 2 * min(self.p_below, self.p_above))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def tost(a: Sequence[float], b: Sequence[float], margin: float, paired: bool, alpha: float = 0.05) -> MarginTest:
    """Two one-sided t-tests of ``mean(a) - mean(b)`` against ``-margin`` and ``+margin``, with the 1 - 2 alpha CI.

    Parameters
    ----------
    a, b : observations of the two arms (matched one to one when ``paired``), in the metric's units.
    margin : the practical margin m > 0, in the metric's units (e.g. 0.5 dB).
    paired : ``scipy.stats.ttest_rel`` on matched pairs, else Welch's ``ttest_ind(equal_var=False)``;
        the nulls are shifted by moving ``a`` by -m and +m.
    alpha : level of each one-sided test; sets the CI level 1 - 2 alpha.
    """
    if not margin > 0:
        raise ValueError(f"margin must be > 0, got {margin}")
    a, b = np.asarray(a, float), np.asarray(b, float)

    def ttest(shift: float, alternative: str):
        if paired:
            return stats.ttest_rel(a - shift, b, alternative=alternative)
        return stats.ttest_ind(a - shift, b, equal_var=False, alternative=alternative)

    lower, upper = ttest(-margin, "greater"), ttest(margin, "less")
    below, above = ttest(-margin, "less"), ttest(margin, "greater")
    ci = ttest(0.0, "two-sided").confidence_interval(1 - 2 * alpha)
    diff = float((a - b).mean()) if paired else float(a.mean() - b.mean())
    return MarginTest("paired TOST" if paired else "Welch TOST", len(a), len(b), float(margin), diff, float(lower.df), 1 - 2 * alpha,
                      float(ci.low), float(ci.high), float(lower.pvalue), float(upper.pvalue), float(max(lower.pvalue, upper.pvalue)),
                      float(below.pvalue), float(above.pvalue))


def anova(groups: Sequence[Sequence[float]]) -> dict[str, float]:
    """One-way ANOVA across arms (``scipy.stats.f_oneway``)."""
    res = stats.f_oneway(*[np.asarray(g, float) for g in groups])
    k, n = len(groups), sum(len(g) for g in groups)
    return {"F": float(res.statistic), "p": float(res.pvalue), "df_between": k - 1, "df_within": n - k}


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values: sorted p times (m - rank), running maximum, capped at 1.

    The numbers of ``statsmodels.stats.multitest.multipletests(method='holm')`` (the tests' reference),
    without its ``gc.collect()`` on every call (~0.3 s in a process holding torch and matplotlib;
    a sweep with margins adjusts three p-value families per slice and metric).
    """
    p = np.asarray(pvalues, float)
    if p.size == 0:
        return []
    order = np.argsort(p)
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate(p[order] * np.arange(len(p), 0, -1)))
    return [float(x) for x in adjusted]


@dataclass(frozen=True)
class RankCorrelation:
    n: int
    rho: float  # Spearman's rank correlation (scipy.stats.spearmanr)
    p: float  # two-sided permutation p against rho = 0 (exact when n! <= n_resamples, else Monte Carlo): valid at small n
    ci_low: float  # bootstrap percentile CI of rho, resampling (x, y) pairs (nan when undefined, see n_degenerate)
    ci_high: float
    confidence: float
    n_degenerate: int = 0  # resamples in which x or y was constant (no rho); over 5% of them: no CI
    p_method: str = ""  # 'exact permutation' or 'Monte Carlo permutation (N)'

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def rank_correlation(x: Sequence[float], y: Sequence[float], confidence: float = 0.95, n_resamples: int = 9999, seed: int = 0) -> RankCorrelation:
    """Spearman's rho of paired observations with its p-value and a paired bootstrap percentile CI.

    Needs at least 3 pairs and both variables non-constant (rho is undefined otherwise: ValueError).
    Resamples whose ranks are constant in either variable give no rho; when they are over 5% of the
    resamples (a variable with one odd value out, say) the CI would describe only the resamples that kept
    it, so it is reported as undefined (nan) with their count.
    """
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"x and y must be 1-D and paired, got shapes {a.shape} and {b.shape}")
    if len(a) < 3:
        raise ValueError(f"a rank correlation needs at least 3 pairs, got {len(a)}")
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        raise ValueError("a rank correlation needs both variables to vary; one of them is constant")
    res = stats.spearmanr(a, b)
    # scipy's spearmanr p uses a t approximation that is far off at small n (rho = 1 at n = 5 gives ~1e-24, the
    # exact value is 2 / 5! = 0.017): a permutation test of the pairing is valid at any n
    perm = stats.permutation_test((b,), lambda v: stats.spearmanr(a, v).statistic, permutation_type="pairings",  # reorders y only: n! pairings
                                  n_resamples=n_resamples, alternative="two-sided", random_state=seed)
    exact = math.factorial(len(a)) <= n_resamples
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a), size=(n_resamples, len(a)))
    ra, rb = stats.rankdata(a[idx], axis=1), stats.rankdata(b[idx], axis=1)
    ra -= ra.mean(1, keepdims=True)
    rb -= rb.mean(1, keepdims=True)
    denom = np.sqrt((ra * ra).sum(1) * (rb * rb).sum(1))
    ok = denom > 0
    boot = (ra * rb).sum(1)[ok] / denom[ok]  # Spearman's rho = Pearson's r of the ranks (average ranks for ties)
    degenerate = int((~ok).sum())
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(boot, [tail, 100 - tail]) if degenerate <= 0.05 * n_resamples else (np.nan, np.nan)
    return RankCorrelation(len(a), float(res.statistic), float(perm.pvalue), float(low), float(high), confidence, degenerate,
                           "exact permutation" if exact else f"Monte Carlo permutation ({n_resamples})")
