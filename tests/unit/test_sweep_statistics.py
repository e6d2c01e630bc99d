"""Sweep statistics against hand formulas and scipy; claim verdicts on synthetic results; spec errors."""

import math

import numpy as np
import pytest
import yaml
from scipy import stats

from posthoc_vq.config import configs_root
from posthoc_vq.errors import ConfigError
from posthoc_vq.experiments.claims import make_claims
from posthoc_vq.experiments.spec import CompareSpec, load_sweep_spec
from posthoc_vq.experiments.statistics import anova, cohens_d, hedges_g, holm, paired, summarize, welch

A = [22.1, 22.4, 21.9, 22.6, 22.3]
B = [21.5, 21.9, 21.6, 21.8, 22.0]


def test_summary_matches_the_t_interval_by_hand():
    s = summarize(A)
    x = np.array(A)
    half = stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    assert s.n == 5 and s.mean == pytest.approx(x.mean()) and s.std == pytest.approx(x.std(ddof=1))
    assert (s.ci_low, s.ci_high) == pytest.approx((x.mean() - half, x.mean() + half))
    b = summarize(A, bootstrap=True, seed=0)
    assert b.bootstrap_low < s.mean < b.bootstrap_high
    assert math.isnan(summarize([1.0]).std)


def test_welch_matches_the_welch_satterthwaite_formula():
    a, b = np.array(A), np.array(B)
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    t = (a.mean() - b.mean()) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    res = welch(A, B)
    assert res.statistic == pytest.approx(t) and res.df == pytest.approx(df)
    assert res.p == pytest.approx(2 * stats.t.sf(abs(t), df))
    half = stats.t.ppf(0.975, df) * math.sqrt(va + vb)
    assert (res.diff_low, res.diff_high) == pytest.approx((a.mean() - b.mean() - half, a.mean() - b.mean() + half))


def test_paired_matches_a_one_sample_test_of_differences():
    d = np.array(A) - np.array(B)
    t = d.mean() / (d.std(ddof=1) / math.sqrt(len(d)))
    res = paired(A, B)
    assert res.statistic == pytest.approx(t) and res.df == len(d) - 1
    assert res.p == pytest.approx(stats.ttest_1samp(d, 0).pvalue)
    assert res.diff == pytest.approx(d.mean())


def test_effect_sizes_anova_and_holm_by_hand():
    a, b = np.array(A), np.array(B)
    pooled = math.sqrt(((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)) / (len(a) + len(b) - 2))
    assert cohens_d(A, B) == pytest.approx((a.mean() - b.mean()) / pooled)
    assert hedges_g(A, B) == pytest.approx(cohens_d(A, B) * (1 - 3 / (4 * 10 - 9)))
    groups = [A, B, [21.0, 21.2, 21.1, 20.9, 21.3]]
    grand = np.mean(np.concatenate(groups))
    ssb = sum(len(g) * (np.mean(g) - grand) ** 2 for g in groups)
    ssw = sum(((np.array(g) - np.mean(g)) ** 2).sum() for g in groups)
    f = (ssb / 2) / (ssw / 12)
    assert anova(groups)["F"] == pytest.approx(f) and anova(groups)["p"] == pytest.approx(stats.f.sf(f, 2, 12))
    p = [0.01, 0.04, 0.03, 0.005]
    # Holm by hand: sorted p * (m - rank), running maximum, capped at 1
    order = np.argsort(p)
    adj = np.empty(4)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (4 - rank) * p[i]))
        adj[i] = running
    assert holm(p) == pytest.approx(list(adj))


def test_holm_matches_statsmodels():
    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(0)
    for p in [rng.uniform(0, 1, 7), rng.uniform(0, 0.1, 5), np.array([0.02, 0.02, 0.5, 0.01]), np.array([0.3]), np.array([0.6, 0.7, 0.9])]:
        assert holm(p) == pytest.approx(list(multipletests(p, method="holm")[1]))
    assert holm([]) == []


def _row(dim, seed, psnr, **metrics):
    base = {"psnr_db": psnr, "ssim": 0.5, "mse": 0.01, "converged": True, "trained_steps": 100, "warnings": [], "fit_includes_test": False, "protocol": "p"}
    return {"status": "done", "axes": {"model.latent_dim": dim, "seed": seed}, "metrics": base | metrics}


COMPARE = CompareSpec(axis="model.latent_dim", reference=64, metrics=["psnr_db"], pair_by="seed")


def _verdict(rows):
    claims = make_claims(rows, COMPARE)["claims"]
    assert len(claims) == 1
    return claims[0]


def test_verdicts_validated_no_difference_and_insufficient():
    clear = [_row(64, s, 22.0 + 0.1 * s) for s in range(5)] + [_row(4, s, 19.0 + 0.1 * s + 0.01 * (s % 2)) for s in range(5)]
    c = _verdict(clear)
    assert c["verdict"] == "validated" and "model.latent_dim=64 has the higher psnr_db" in c["reason"] and c["test"]["test"] == "paired t-test"
    rng = np.random.default_rng(0)
    noise = [_row(64, s, 22 + rng.normal(0, 0.3)) for s in range(5)] + [_row(4, s, 22 + rng.normal(0, 0.3)) for s in range(5)]
    assert _verdict(noise)["verdict"] == "no significant difference"
    two = [_row(64, s, 22.0 + s) for s in range(2)] + [_row(4, s, 10.0 + s) for s in range(2)]
    c = _verdict(two)
    assert c["verdict"] == "insufficient evidence" and "test" not in c


@pytest.mark.parametrize(
    "change,reason",
    [
        ({"trained_steps": 0}, "untrained"),
        ({"converged": False}, "did not converge"),
        ({"fit_includes_test": True}, "fitted on data including the test split"),
        ({"warnings": ["quantized_beats_continuous"]}, "beats its own continuous model"),
        ({"protocol": "other"}, "different protocols"),
    ],
)
def test_invalid_arms_are_named_with_their_reason(change, reason):
    rows = [_row(64, s, 22.0 + 0.1 * s) for s in range(5)] + [_row(4, s, 19.0 + 0.1 * s, **(change if s == 1 else {})) for s in range(5)]
    c = _verdict(rows)
    assert c["verdict"] == "invalid" and reason in c["reason"]
    if change != {"protocol": "other"} and "fit_includes_test" not in change:
        assert "model.latent_dim=4" in c["reason"]


def _spec(tmp_path, **changes):
    spec = yaml.safe_load((configs_root() / "ablations" / "smoke.yaml").read_text())
    for key, value in changes.items():
        if value is None:
            spec.pop(key)
        else:
            spec[key] = value
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"axes": {"model.latent_dimm": [8, 4], "seed": [0]}}, "unknown config key 'model.latent_dimm'"),
        ({"axes": {"model.latent_dim": [8, 4], "seed": []}}, "axis 'seed' is empty"),
        ({"axes": {"model.latent_dim": [8, 4], "quantize.methd": ["kmeans"]}}, "quantize.methd"),
        ({"compare": {"axis": "model.latent_dim", "reference": 64}}, "compare.reference 64 is not in the grid"),
        ({"compare": {"axis": "train.lr", "reference": 64}}, "compare.axis 'train.lr' is not an axis"),
        ({"axes": {"model.latent_dim": [8, -1], "seed": [0]}}, "latent_dim"),
        ({"axes": {"model.latent_dim": [8, 4], "seed": [0], "quantize.method": ["kmeans", "kmeens"]}}, "quantize.method"),
        ({"threads": 0}, "threads"),
    ],
)
def test_bad_specs_fail_before_any_job_with_the_key(tmp_path, changes, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_sweep_spec(_spec(tmp_path, **changes))


def test_rank_correlation_equals_scipy_and_its_bootstrap_ci_covers_it():
    from posthoc_vq.experiments.statistics import rank_correlation

    rng = np.random.default_rng(3)
    x = rng.normal(size=40)
    y = x + rng.normal(scale=2.0, size=40)
    r = rank_correlation(x, y, seed=1)
    ref = stats.spearmanr(x, y)
    assert r.n == 40 and r.rho == pytest.approx(ref.statistic, abs=1e-12)
    assert r.p_method == "Monte Carlo permutation (9999)" and r.p == pytest.approx(ref.pvalue, abs=0.005)  # the t approximation is fine at n = 40
    assert r.ci_low < r.rho < r.ci_high
    # the vectorised bootstrap is Spearman's rho of each resample (ties averaged): check one resample by hand
    idx = np.random.default_rng(1).integers(0, 40, size=(9999, 40))[0]
    assert stats.spearmanr(x[idx], y[idx]).statistic == pytest.approx(
        np.corrcoef(stats.rankdata(x[idx]), stats.rankdata(y[idx]))[0, 1], abs=1e-12)


def test_rank_correlation_of_a_monotone_map_is_one_and_of_noise_covers_zero():
    from posthoc_vq.experiments.statistics import rank_correlation

    x = np.arange(12.0)
    exact = rank_correlation(x, np.exp(x))
    assert exact.rho == pytest.approx(1.0) and exact.ci_low == pytest.approx(1.0) and exact.ci_high == pytest.approx(1.0)
    five = rank_correlation(np.arange(5.0), np.arange(5.0) ** 3)  # only the identity and its reverse reach |rho| = 1
    assert five.p_method == "exact permutation" and five.p == pytest.approx(2 / math.factorial(5))
    assert stats.spearmanr(np.arange(5.0), np.arange(5.0) ** 3).pvalue < 1e-10  # what scipy's t approximation says
    rng = np.random.default_rng(0)
    noise = rank_correlation(rng.normal(size=30), rng.normal(size=30))
    assert noise.ci_low < 0 < noise.ci_high and noise.p > 0.05


def test_rank_correlation_refuses_what_it_cannot_measure():
    from posthoc_vq.experiments.statistics import rank_correlation

    with pytest.raises(ValueError, match="at least 3 pairs"):
        rank_correlation([1.0, 2.0], [2.0, 1.0])
    with pytest.raises(ValueError, match="constant"):
        rank_correlation([1.0, 1.0, 1.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="paired"):
        rank_correlation([1.0, 2.0, 3.0], [1.0, 2.0])


def test_rank_correlation_gives_no_ci_for_a_measure_with_one_odd_value_out():
    from posthoc_vq.experiments.statistics import rank_correlation

    x = np.array([3.0] * 11 + [4.0])  # one run differs: most resamples leave it out and are constant
    y = np.arange(12.0)
    r = rank_correlation(x, y)
    assert r.rho == pytest.approx(stats.spearmanr(x, y).statistic)
    assert r.n_degenerate > 0.05 * 9999 and math.isnan(r.ci_low) and math.isnan(r.ci_high)
