"""Margins: TOST and one-sided tests against hand formulas and scipy; equivalence / non-inferiority verdicts on data whose answer is known."""

import math

import numpy as np
import pytest
import yaml
from scipy import stats

from posthoc_vq.config import configs_root
from posthoc_vq.errors import ConfigError
from posthoc_vq.experiments.claims import BASE_VERDICTS, HIGHER_IS_BETTER, VERDICTS, make_claims
from posthoc_vq.experiments.spec import METRICS, CompareSpec, load_sweep_spec
from posthoc_vq.experiments.statistics import tost
from posthoc_vq.report.claims import CLAIM_COLUMNS, claims_markdown, claims_tables
from posthoc_vq.report.figures import MARKS

REF = [22.0, 22.3, 21.8, 22.1, 22.4]  # reference arm, one value per seed
M = 0.5  # margin, dB


def test_tost_on_a_tiny_dataset_by_hand():
    # d = a - b = [1, 2, 3]: mean 2, sd 1, se 1/sqrt(3), df 2, where the t(2) distribution has a closed form:
    # P(T > t) = (1 - t / sqrt(t^2 + 2)) / 2 and its quantile q(p) = (2p - 1) / sqrt(2 p (1 - p)).
    sf2 = lambda t: (1 - t / math.sqrt(t * t + 2)) / 2  # noqa: E731
    se = 1 / math.sqrt(3)
    t = tost([11.0, 12.0, 13.0], [10.0, 10.0, 10.0], margin=0.5, paired=True)
    assert t.diff == pytest.approx(2.0) and t.df == 2 and t.level == pytest.approx(0.90)
    assert t.p_lower == pytest.approx(sf2(2.5 / se))  # H1 d > -0.5: t = 4.330, p = 0.024707
    assert t.p_lower == pytest.approx(0.024707, abs=1e-6)
    assert t.p_upper == pytest.approx(1 - sf2(1.5 / se))  # H1 d < +0.5: t = 2.598, p = 0.939
    assert t.p_tost == pytest.approx(max(t.p_lower, t.p_upper))
    assert t.p_below == pytest.approx(1 - t.p_lower) and t.p_above == pytest.approx(1 - t.p_upper)
    q95 = 0.9 / math.sqrt(2 * 0.95 * 0.05)  # 2.91999
    assert (t.ci_low, t.ci_high) == pytest.approx((2 - q95 * se, 2 + q95 * se))  # [0.3141, 3.6859]


@pytest.mark.parametrize("paired", [True, False])
def test_tost_equals_scipy_tests_shifted_by_the_margin(paired):
    rng = np.random.default_rng(1)
    a, b = 22 + rng.normal(0, 0.3, 6), 22.2 + rng.normal(0, 0.5, 6)
    t = tost(a, b, M, paired=paired, alpha=0.05)
    if paired:
        d = a - b
        assert t.p_lower == pytest.approx(stats.ttest_1samp(d, -M, alternative="greater").pvalue)
        assert t.p_upper == pytest.approx(stats.ttest_1samp(d, M, alternative="less").pvalue)
        assert t.p_lower == pytest.approx(stats.ttest_rel(a - b + M, np.zeros(6), alternative="greater").pvalue)
        se, df = d.std(ddof=1) / math.sqrt(len(d)), len(d) - 1
    else:
        assert t.p_lower == pytest.approx(stats.ttest_ind(a + M, b, equal_var=False, alternative="greater").pvalue)
        assert t.p_upper == pytest.approx(stats.ttest_ind(a - M, b, equal_var=False, alternative="less").pvalue)
        va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
        se, df = math.sqrt(va + vb), (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))  # Welch-Satterthwaite
        assert t.df == pytest.approx(df)
    diff = a.mean() - b.mean()
    assert t.diff == pytest.approx(diff)
    assert t.p_lower == pytest.approx(stats.t.sf((diff + M) / se, df)) and t.p_upper == pytest.approx(stats.t.cdf((diff - M) / se, df))
    half = stats.t.ppf(0.95, df) * se
    assert (t.ci_low, t.ci_high) == pytest.approx((diff - half, diff + half))
    # duality: TOST rejects at alpha exactly when the 1 - 2 alpha CI lies inside the band
    assert (t.p_tost < 0.05) == (-M < t.ci_low and t.ci_high < M)
    assert t.p_beyond == pytest.approx(min(1, 2 * min(t.p_below, t.p_above)))
    assert t.p_non_inferior(True) == t.p_lower and t.p_non_inferior(False) == t.p_upper
    assert t.p_inferior(True) == t.p_below and t.p_inferior(False) == t.p_above


def _rows(diffs, metric="psnr_db", ref=REF, dim=4, seeds=None):
    """Reference rows (latent_dim 64, seeds 0..n-1) and arm rows (``dim``, ``seeds`` or the same) whose metric is ref + diff, seed by seed.

    The other metrics differ between the arms by a zero-mean pattern (no significant difference).
    """
    n = len(diffs)
    seeds = list(range(n)) if seeds is None else seeds
    base = {"psnr_db": 22.0, "mse": 0.01, "converged": True, "trained_steps": 100, "warnings": [], "fit_includes_test": False, "protocol": "p"}
    row = lambda d, s, v, ssim: {"status": "done", "axes": {"model.latent_dim": d, "seed": s}, "metrics": base | {"ssim": ssim, metric: v}}  # noqa: E731
    return ([row(64, s, ref[s], 0.5 + 0.001 * s) for s in range(n)]
            + [row(dim, s, ref[i] + d, 0.5 + 0.001 * (2 * i % n)) for i, (s, d) in enumerate(zip(seeds, diffs))])


def _claim(rows, question, metric="psnr_db", margin=M, **compare):
    spec = CompareSpec(axis="model.latent_dim", reference=64, metrics=[metric], margin={metric: margin}, question=question, **compare)
    out = make_claims(rows, spec)
    assert len(out["claims"]) == 1
    return out["claims"][0]


EQUIVALENT = [-0.05, 0.05, 0.0, 0.02, -0.02]  # mean 0, tiny spread: 90% CI well inside [-0.5, +0.5]
NON_INFERIOR_ONLY = [0.1, 0.7, 0.3, 0.6, 0.3]  # mean +0.4: 90% CI [+0.17, +0.63] above -0.5 but crossing +0.5
MUCH_BETTER = [0.9, 1.0, 1.1, 0.95, 1.05]  # mean +1.0, CI entirely above +0.5
INFERIOR = [-1.0, -1.1, -0.9, -1.05, -0.95]  # mean -1.0, CI entirely below -0.5
WIDE = [-0.9, 0.3, -0.3]  # n = 3, mean -0.3, 90% CI [-1.31, +0.71]: nothing shown
SMALL_BUT_SIGNIFICANT = [0.10, 0.12, 0.14, 0.11, 0.13]  # mean +0.12, p ~ 1e-5, far below the margin


@pytest.mark.parametrize(
    "diffs,question,verdict",
    [
        (EQUIVALENT, "equivalence", "equivalent"),
        (EQUIVALENT, "non-inferiority", "non-inferior"),
        (NON_INFERIOR_ONLY, "non-inferiority", "non-inferior"),
        (NON_INFERIOR_ONLY, "equivalence", "inconclusive"),
        (MUCH_BETTER, "equivalence", "superior"),
        (MUCH_BETTER, "non-inferiority", "non-inferior"),
        (INFERIOR, "non-inferiority", "inferior"),
        (INFERIOR, "equivalence", "inferior"),
        (WIDE, "non-inferiority", "inconclusive"),
        (WIDE, "equivalence", "inconclusive"),
        (SMALL_BUT_SIGNIFICANT, "difference", "significant but below margin"),
        (MUCH_BETTER, "difference", "validated"),
        (WIDE, "difference", "no significant difference"),
    ],
)
def test_paired_verdicts_on_data_whose_answer_is_known(diffs, question, verdict):
    c = _claim(_rows(diffs), question)
    assert c["verdict"] == verdict, c["reason"]
    assert c["test"]["test"] == "paired t-test" and c["margin"] == M and c["question"] == question
    level = 0.95 if question == "difference" else 0.90
    assert c["ci_level"] == pytest.approx(level) and c["ci_low"] < np.mean(diffs) < c["ci_high"]
    if question != "difference":
        assert c["margin_test"]["test"] == "paired TOST" and c["p_within_adjusted"] == pytest.approx(c["p_within"])  # a family of one


def test_reasons_say_it_in_words_with_numbers():
    c = _claim(_rows(EQUIVALENT), "equivalence")
    assert c["reason"].startswith("model.latent_dim=4 is within 0.5 dB of model.latent_dim=64 on psnr_db: difference +0 dB, 90% CI [")
    assert "inside [-0.5, +0.5], paired TOST p = " in c["reason"] and "(holm " in c["reason"]
    c = _claim(_rows(NON_INFERIOR_ONLY), "non-inferiority")
    assert "is non-inferior to model.latent_dim=64 on psnr_db (higher is better) within 0.5 dB" in c["reason"]
    assert f"lower bound {c['ci_low']:+.4g} above -0.5" in c["reason"]
    c = _claim(_rows(INFERIOR), "non-inferiority")
    assert "worse than model.latent_dim=64 on psnr_db by more than the margin 0.5 dB" in c["reason"] and "entirely below -0.5" in c["reason"]
    c = _claim(_rows(SMALL_BUT_SIGNIFICANT), "difference")
    assert "model.latent_dim=4 has the higher psnr_db, but by less than the margin 0.5 dB: difference +0.12" in c["reason"]


@pytest.mark.parametrize(
    "diffs,question,verdict",
    [
        (EQUIVALENT, "equivalence", "equivalent"),
        (NON_INFERIOR_ONLY, "non-inferiority", "non-inferior"),
        (INFERIOR, "non-inferiority", "inferior"),
        (INFERIOR, "equivalence", "inferior"),
        (WIDE, "non-inferiority", "inconclusive"),
        (SMALL_BUT_SIGNIFICANT, "difference", "significant but below margin"),
    ],
)
def test_welch_verdicts_when_seeds_do_not_pair_the_arms(diffs, question, verdict):
    ref = [22.0, 22.02, 21.98, 22.01, 21.99]  # a tight reference: unpaired, its spread adds to the arm's
    rows = _rows(diffs, ref=ref, seeds=[10 + i for i in range(len(diffs))])  # the arm's seeds differ from the reference's: Welch
    c = _claim(rows, question)
    assert c["test"]["test"] == "Welch t-test" and c["verdict"] == verdict, c["reason"]
    if question != "difference":
        t = c["margin_test"]
        a, b = [r["metrics"]["psnr_db"] for r in rows[len(diffs):]], ref[:len(diffs)]
        assert t["test"] == "Welch TOST" and t["p_lower"] == pytest.approx(stats.ttest_ind(np.add(a, M), b, equal_var=False, alternative="greater").pvalue)


def test_lower_is_better_metrics_turn_the_non_inferiority_test_around():
    assert set(HIGHER_IS_BETTER) == set(METRICS)
    ref = [0.010, 0.011, 0.009, 0.0105, 0.0095]
    worse_within = [0.0008, 0.0012, 0.0010, 0.0009, 0.0011]  # mse higher (worse) by 0.001 < margin 0.002
    c = _claim(_rows(worse_within, metric="mse", ref=ref), "non-inferiority", metric="mse", margin=0.002)
    assert c["verdict"] == "non-inferior" and "(lower is better)" in c["reason"] and c["p_within"] == pytest.approx(c["margin_test"]["p_upper"])
    c = _claim(_rows([0.003 + d / 10 for d in worse_within], metric="mse", ref=ref), "non-inferiority", metric="mse", margin=0.002)
    assert c["verdict"] == "inferior" and "entirely above +0.002" in c["reason"]
    c = _claim(_rows([-0.005 + d / 10 for d in worse_within], metric="mse", ref=ref), "equivalence", metric="mse", margin=0.002)
    assert c["verdict"] == "superior"  # much lower mse is better


def test_holm_over_the_family_can_turn_an_equivalence_inconclusive():
    a = [0.6 * x for x in (-1.0, 1.0, 0.0, 0.5, -0.5)]  # mean 0, TOST p ~ 0.039 on its own
    b = [-0.9, 0.3, -0.3, 0.6, -0.6]  # a second arm, far from shown equivalent
    rows = _rows(a) + _rows(b, dim=8)[len(b):]
    alone = _claim(_rows(a), "equivalence")
    assert 0.025 < alone["p_within"] < 0.05 and alone["verdict"] == "equivalent"
    spec = CompareSpec(axis="model.latent_dim", reference=64, metrics=["psnr_db"], margin={"psnr_db": M}, question="equivalence")
    family = {c["arm"]: c for c in make_claims(rows, spec)["claims"]}
    c4, c8 = family["model.latent_dim=4"], family["model.latent_dim=8"]
    assert c4["p_within"] == pytest.approx(alone["p_within"]) and c8["p_within"] > c4["p_within"]
    assert c4["p_within_adjusted"] == pytest.approx(2 * c4["p_within"]) and c4["p_within_adjusted"] >= 0.05  # Holm: smallest of two times 2
    assert c4["verdict"] == "inconclusive" and c8["verdict"] == "inconclusive"
    uncorrected = make_claims(rows, spec.model_copy(update={"correction": "none"}))["claims"]
    assert {c["arm"]: c["verdict"] for c in uncorrected}["model.latent_dim=4"] == "equivalent"


def test_without_a_margin_nothing_changes_and_every_verdict_has_a_mark():
    rows = _rows(MUCH_BETTER)
    out = make_claims(rows, CompareSpec(axis="model.latent_dim", reference=64, metrics=["psnr_db", "ssim"]))
    assert tuple(out["counts"]) == BASE_VERDICTS
    assert not {"margin", "question", "ci_low", "p_within"} & set().union(*out["claims"])
    assert claims_tables(out)["claims"].columns == CLAIM_COLUMNS
    assert set(MARKS) == set(VERDICTS)
    # a margin on one metric: that metric's claims carry it, the other keeps plain difference verdicts
    spec = CompareSpec(axis="model.latent_dim", reference=64, metrics=["psnr_db", "ssim"], margin={"psnr_db": M}, question="non-inferiority")
    out = make_claims(rows, spec)
    by_metric = {c["metric"]: c for c in out["claims"]}
    assert by_metric["psnr_db"]["verdict"] == "non-inferior" and by_metric["ssim"]["verdict"] == "no significant difference"
    assert tuple(out["counts"]) == ("validated", "no significant difference", "non-inferior", "inferior", "inconclusive", "insufficient evidence", "invalid")
    table = claims_tables(out)["claims"]
    assert "CI vs margin" in table.columns and table.rows[0]["CI vs margin"].startswith("90% CI [") and table.rows[0]["CI vs margin"].endswith("vs > -0.5")
    assert table.rows[1]["CI vs margin"] == "-"

    class Spec:  # what claims_markdown reads of a SweepSpec
        name, split, compare = "margins", "test", spec

    md = claims_markdown(out | {"n_cells": 10}, Spec)
    assert "Margins: psnr_db 0.5; question `non-inferiority`" in md and "| CI vs margin |" in md and "non-inferior" in md


def _spec_file(tmp_path, compare):
    spec = yaml.safe_load((configs_root() / "ablations" / "smoke.yaml").read_text())
    spec["compare"] = {"axis": "model.latent_dim", "reference": 8, "metrics": ["psnr_db"]} | compare
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.parametrize(
    "compare,message",
    [
        ({"margin": {"ssim": 0.01}}, "compare.margin.ssim: 'ssim' is not among compare.metrics (psnr_db)"),
        ({"margin": {"psnr_db": -0.5}}, "compare.margin.psnr_db: the margin must be a finite number > 0"),
        ({"margin": {"psnr_db": 0}}, "compare.margin.psnr_db: the margin must be a finite number > 0"),
        ({"margin": {"psnr_db": float("nan")}}, "'compare.margin.psnr_db' .*is .nan, a non-finite number"),
        ({"question": "equivalence"}, "compare.question 'equivalence' needs compare.margin"),
        ({"question": "non-inferiority", "margin": {"psnr_db": 0.5}, "reference": None}, "'non-inferiority' needs compare.reference"),
        ({"question": "superiority", "margin": {"psnr_db": 0.5}}, "compare.question"),
    ],
)
def test_bad_margins_fail_before_any_job_naming_the_key(tmp_path, compare, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_sweep_spec(_spec_file(tmp_path, compare))


def test_the_ablation_plot_and_the_limitations_name_the_margin_verdicts(tmp_path, monkeypatch):
    from posthoc_vq.report import figures
    from posthoc_vq.report.limitations import sweep_limitations

    titles = []
    monkeypatch.setattr(figures, "save_png", lambda fig, path: titles.append(fig._suptitle.get_text()) or figures.pyplot().close(fig))
    series = {"all cells": {"psnr_db": {"mean": [22.0, 21.0, 22.1], "low": [21.8, 20.8, 21.9], "high": [22.2, 21.2, 22.3],
                                        "points": [[22.0], [21.0], [22.1]], "marks": ["equivalent", "inferior", None]}}}
    figures.ablation_plot(series, ["psnr_db"], "model.latent_dim", [4, 8, 64], tmp_path / "a.png", "t")
    assert titles[0].endswith("(marks vs reference: * validated, ns not significant, ? insufficient evidence, ! invalid, eq equivalent, inf inferior)")
    series["all cells"]["psnr_db"]["marks"] = ["validated", None, None]
    figures.ablation_plot(series, ["psnr_db"], "model.latent_dim", [4, 8, 64], tmp_path / "a.png", "t")
    assert titles[1].endswith("(marks vs reference: * validated, ns not significant, ? insufficient evidence, ! invalid)")  # as without margins
    compare = CompareSpec(axis="model.latent_dim", reference=64, metrics=["psnr_db"], margin={"psnr_db": M}, question="equivalence")
    notes = sweep_limitations(rows=_rows(EQUIVALENT), n_cells=10, compare=compare.model_dump(mode="json"), claims_n_done=10, runs_missing=[])
    assert any(n.startswith("Margins: psnr_db 0.5; compared metrics without one") and "holm-adjusted" in n for n in notes)
