"""Claim verdicts for a sweep: every comparison of an arm against the reference, with reason and numbers.

Observations are the done cells; a *slice* fixes every axis except the compared one and the
pairing one (e.g. one weight bit width and one quantizer), and within a slice each arm (a
value of the compared axis) has one observation per seed. For each slice and metric:

* per arm: n, mean, std, 95% CI (t; bootstrap optionally);
* one-way ANOVA across the arms;
* each arm against the reference arm (or every pair when there is none): a paired t-test
  when the pairing axis matches observations one to one, else Welch's; Hedges' g; Holm
  correction over the comparisons of the slice and metric (the test family).

Verdicts, checked in this order (the validity rules and their texts are those of :mod:`posthoc_vq.audit`):

* ``invalid``: an arm has an untrained or unconverged model; one arm's codebooks saw the
  test split and the other's did not; the arms' training protocols differ
  (unless the compared axis is itself a training setting); a quantized model beats its own
  continuous model (the audit's ``quantized_beats_continuous``);
* ``insufficient evidence``: fewer than ``min_n`` (3) observations in an arm: no test is run;
* then, on a metric without a margin (``compare.margin``), or with one and ``compare.question: difference``:

  * ``validated``: Holm-adjusted two-sided p < alpha (and, with a margin m, ``|difference| >= m``);
    the reason says which arm is higher and by how much;
  * ``significant but below margin``: Holm-adjusted p < alpha but the point estimate ``|difference| < m``;
  * ``no significant difference``: otherwise;

* on a metric with a margin m and ``question: equivalence`` (``d = mean(arm) - mean(reference)``,
  each family of p-values Holm-adjusted over the slice and metric):

  * ``equivalent``: TOST p (the larger of the one-sided tests of ``d > -m`` and ``d < +m``) < alpha,
    so the 1 - 2 alpha (90%) CI of d lies inside [-m, +m];
  * ``superior`` / ``inferior``: the two-sided test of d against the nearer margin, 2 min(p(d < -m), p(d > +m)),
    < alpha, so the 1 - alpha CI lies entirely outside the band; superior when d is on the metric's better side;
  * ``inconclusive``: otherwise;

* on a metric with a margin m and ``question: non-inferiority`` (needs a reference; "better" is
  :data:`HIGHER_IS_BETTER`):

  * ``non-inferior``: one-sided p of ``d > -m`` (``d < +m`` when lower is better) < alpha, so the
    90% CI's worse-side bound lies on the better side of the margin;
  * ``inferior``: one-sided p of ``d < -m`` (``d > +m`` when lower is better) < alpha, so the whole
    90% CI lies beyond the margin on the worse side;
  * ``inconclusive``: otherwise.

Without any margin the claims are exactly those of the four original verdicts.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from posthoc_vq import audit
from posthoc_vq.experiments.spec import CompareSpec
from posthoc_vq.experiments.statistics import MarginTest, TwoArmTest, anova, holm, paired, summarize, tost, welch

VERDICTS = ("validated", "significant but below margin", "no significant difference", "equivalent", "non-inferior", "superior", "inferior",
            "inconclusive", "insufficient evidence", "invalid")
BASE_VERDICTS = ("validated", "no significant difference", "insufficient evidence", "invalid")  # possible without a margin
QUESTION_VERDICTS = {"difference": ("significant but below margin",), "equivalence": ("equivalent", "superior", "inferior", "inconclusive"),
                     "non-inferiority": ("non-inferior", "inferior", "inconclusive")}
HIGHER_IS_BETTER = {"psnr_db": True, "ssim": True, "mse": False, "fd": False, "kid": False,  # one entry per spec.METRICS
                    "real_bpp_empirical": False, "real_bpp_context": False, "nominal_bpp": False}
UNITS = {"psnr_db": " dB", "real_bpp_empirical": " bpp", "real_bpp_context": " bpp", "nominal_bpp": " bpp"}


def _label(axis: str, value: Any) -> str:
    return f"{axis}={value}"


def verdicts_for(compare: CompareSpec) -> tuple[str, ...]:
    """The verdicts these compare settings can give, in :data:`VERDICTS` order (the four base verdicts without a margin)."""
    extra = QUESTION_VERDICTS[compare.question] if compare.margin else ()
    return tuple(v for v in VERDICTS if v in BASE_VERDICTS or v in extra)


def invalid_reasons(arms: dict[Any, list[dict[str, Any]]], compare: CompareSpec) -> list[str]:
    """Why a comparison between these arms (value -> done rows) cannot be trusted; empty when it can (rules of :mod:`posthoc_vq.audit`)."""
    return audit.invalid_reasons(arms, compare.axis, compare.pair_by)


def _observations(a_rows: list[dict[str, Any]], b_rows: list[dict[str, Any]], metric: str, pair_by: str | None) -> tuple[list[float], list[float], bool]:
    """The two arms' values, matched by ``pair_by`` (True) when it pairs them one to one, else as they come (False: Welch)."""
    a = {r["axes"].get(pair_by): r["metrics"][metric] for r in a_rows} if pair_by else {}
    b = {r["axes"].get(pair_by): r["metrics"][metric] for r in b_rows} if pair_by else {}
    if pair_by and set(a) == set(b) and len(a) == len(a_rows) == len(b_rows):
        keys = sorted(a, key=str)
        return [a[k] for k in keys], [b[k] for k in keys], True
    return [r["metrics"][metric] for r in a_rows], [r["metrics"][metric] for r in b_rows], False


def _test(a: list[float], b: list[float], is_paired: bool) -> TwoArmTest:
    return paired(a, b) if is_paired else welch(a, b)


def slice_key(axes: dict[str, Any], compare: CompareSpec) -> tuple:
    return tuple(sorted((k, str(v)) for k, v in axes.items() if k not in (compare.axis, compare.pair_by)))


def _adjust(pvalues: list[float], compare: CompareSpec) -> list[float]:
    return holm(pvalues) if compare.correction == "holm" else list(pvalues)


def _difference_verdict(c: dict[str, Any], metric: str, margin: float | None, p_adj: float, compare: CompareSpec) -> tuple[str, str]:
    """Two-sided test against 0; with a margin, a significant difference smaller than it (point estimate) is 'significant but below margin'."""
    t = c["test"]
    numbers = f"difference {t['diff']:+.4g} [{t['diff_low']:+.4g}, {t['diff_high']:+.4g}], {t['test']} p = {t['p']:.2g} ({compare.correction} {p_adj:.2g}), Hedges' g = {t['hedges_g']:+.2f}"
    if not p_adj < compare.alpha:
        return "no significant difference", f"{numbers}; not significant at alpha = {compare.alpha}"
    higher = c["arm"] if t["diff"] > 0 else c["reference"]
    if margin is None:
        return "validated", f"{higher} has the higher {metric}: {numbers}"
    unit = UNITS.get(metric, "")
    if abs(t["diff"]) >= margin:
        return "validated", f"{higher} has the higher {metric}, by at least the margin {margin:g}{unit}: {numbers}"
    return "significant but below margin", f"{higher} has the higher {metric}, but by less than the margin {margin:g}{unit}: {numbers}"


def _margin_verdict(c: dict[str, Any], metric: str, question: str, t: MarginTest, compare: CompareSpec) -> tuple[str, str]:
    """Equivalence or non-inferiority of arm against reference within ``t.margin`` (see the module docstring)."""
    alpha, corr, m, unit = compare.alpha, compare.correction, t.margin, UNITS.get(metric, "")
    higher_better = HIGHER_IS_BETTER[metric]
    diff = f"difference {t.diff:+.4g}{unit}, {t.level:.0%} CI [{t.ci_low:+.4g}, {t.ci_high:+.4g}]"
    within = f"{c['p_within']:.2g} ({corr} {c['p_within_adjusted']:.2g})"
    beyond = f"{c['p_beyond']:.2g} ({corr} {c['p_beyond_adjusted']:.2g})"
    kind = t.test.split()[0]
    if question == "equivalence":
        band = f"[-{m:g}, +{m:g}]"
        if c["p_within_adjusted"] < alpha:
            return "equivalent", f"{c['arm']} is within {m:g}{unit} of {c['reference']} on {metric}: {diff} inside {band}, {t.test} p = {within}"
        if c["p_beyond_adjusted"] < alpha:
            better = (t.diff > 0) == higher_better
            return ("superior" if better else "inferior",
                    f"{c['arm']} is {'better' if better else 'worse'} than {c['reference']} on {metric} by more than the margin {m:g}{unit}: "
                    f"{diff} entirely {'above +' if t.diff > 0 else 'below -'}{m:g}; two-sided {kind} t-test against the nearer margin p = {beyond}")
        return "inconclusive", (f"neither equivalence within {band} nor a difference beyond it is shown at alpha = {alpha}: {diff}; "
                                f"{t.test} p = {within}, beyond the margin p = {beyond}")
    edge = f"{-m if higher_better else m:+g}"
    better_side = "above" if higher_better else "below"
    worse_side = "below" if higher_better else "above"
    if c["p_within_adjusted"] < alpha:
        bound = t.ci_low if higher_better else t.ci_high
        return "non-inferior", (f"{c['arm']} is non-inferior to {c['reference']} on {metric} ({'higher' if higher_better else 'lower'} is better) "
                                f"within {m:g}{unit}: {diff}, its {'lower' if higher_better else 'upper'} bound {bound:+.4g} {better_side} {edge}; "
                                f"one-sided {kind} t-test p = {within}")
    if c["p_beyond_adjusted"] < alpha:
        return "inferior", (f"{c['arm']} is worse than {c['reference']} on {metric} by more than the margin {m:g}{unit}: {diff} entirely "
                            f"{worse_side} {edge}; one-sided {kind} t-test p = {beyond}")
    return "inconclusive", (f"neither non-inferiority within {m:g}{unit} nor inferiority beyond it is shown at alpha = {alpha}: {diff} "
                            f"against {edge}; non-inferiority p = {within}, inferiority p = {beyond}")


def _judge_family(family: list[tuple[dict[str, Any], MarginTest | None]], metric: str, compare: CompareSpec) -> None:
    """Holm-adjust the family's p-values (each kind over the family) and give each tested claim its verdict and reason."""
    margin = compare.margin.get(metric)
    question = compare.question if margin is not None else "difference"
    adjusted = _adjust([c["test"]["p"] for c, _ in family], compare)
    for (c, _), p_adj in zip(family, adjusted):
        c["p_adjusted"] = p_adj
    if question == "difference":
        for c, _ in family:
            c["verdict"], c["reason"] = _difference_verdict(c, metric, margin, c["p_adjusted"], compare)
            if margin is not None:
                t = c["test"]
                c |= {"ci_low": t["diff_low"], "ci_high": t["diff_high"], "ci_level": 0.95}
        return
    higher_better = HIGHER_IS_BETTER[metric]
    within = [mt.p_tost if question == "equivalence" else mt.p_non_inferior(higher_better) for _, mt in family]
    beyond = [mt.p_beyond if question == "equivalence" else mt.p_inferior(higher_better) for _, mt in family]
    for (c, mt), pw, pw_adj, pb, pb_adj in zip(family, within, _adjust(within, compare), beyond, _adjust(beyond, compare)):
        c |= {"margin_test": mt.to_dict(), "ci_low": mt.ci_low, "ci_high": mt.ci_high, "ci_level": mt.level,
              "p_within": pw, "p_within_adjusted": pw_adj, "p_beyond": pb, "p_beyond_adjusted": pb_adj}
        c["verdict"], c["reason"] = _margin_verdict(c, metric, question, mt, compare)


def make_claims(rows: list[dict[str, Any]], compare: CompareSpec) -> dict[str, Any]:
    """Arm summaries, ANOVAs and verdicts for the done ``rows`` of a sweep (see module docstring).

    A metric a cell did not measure (None, e.g. FD of a weight-quantized cell) leaves that cell
    out of that metric's statistics. A claim on a metric with a margin also holds ``margin``,
    ``question`` and, once tested, ``ci_low``/``ci_high``/``ci_level`` (the CI of the difference the
    verdict rests on) and, for equivalence or non-inferiority, ``margin_test`` and the raw and
    adjusted ``p_within`` (TOST or non-inferiority) and ``p_beyond`` (beyond the margin) p-values.
    """
    done = [r for r in rows if r["status"] == "done"]
    slices: dict[tuple, dict[Any, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for r in done:
        slices[slice_key(r["axes"], compare)][r["axes"][compare.axis]].append(r)
    arms_out, anova_out, claims = [], [], []
    for skey, all_arms in sorted(slices.items()):
        where = dict(skey)
        for metric in compare.metrics:
            margin = compare.margin.get(metric)
            question = compare.question if margin is not None else "difference"
            arms = {v: [r for r in rs if r["metrics"].get(metric) is not None] for v, rs in all_arms.items()}
            arms = {v: rs for v, rs in arms.items() if rs}
            values = sorted(arms, key=lambda v: (isinstance(v, str), v))
            for v in values:
                s = summarize([r["metrics"][metric] for r in arms[v]], bootstrap=compare.bootstrap)
                arms_out.append({"slice": where, "metric": metric, "arm": _label(compare.axis, v), **s.to_dict()})
            groups = [[r["metrics"][metric] for r in arms[v]] for v in values]
            if len(groups) >= 2 and all(len(g) >= 2 for g in groups):
                anova_out.append({"slice": where, "metric": metric, "arms": [_label(compare.axis, v) for v in values], **anova(groups)})
            if compare.reference is not None:
                pairs = [(v, compare.reference) for v in values if v != compare.reference and compare.reference in arms]
            else:
                pairs = [(a, b) for i, a in enumerate(values) for b in values[i + 1:]]
            family: list[tuple[dict[str, Any], MarginTest | None]] = []
            for a, b in pairs:
                claim = {
                    "slice": where, "metric": metric, "arm": _label(compare.axis, a), "reference": _label(compare.axis, b),
                    "n_arm": len(arms[a]), "n_reference": len(arms[b]),
                    "mean_arm": summarize([r["metrics"][metric] for r in arms[a]]).mean,
                    "mean_reference": summarize([r["metrics"][metric] for r in arms[b]]).mean,
                }
                if margin is not None:
                    claim |= {"margin": margin, "question": question, "higher_is_better": HIGHER_IS_BETTER[metric]}
                reasons = invalid_reasons({a: arms[a], b: arms[b]}, compare)
                if reasons:
                    claim |= {"verdict": "invalid", "reason": "; ".join(reasons)}
                elif too_few := audit.too_few_reason(len(arms[a]), len(arms[b]), compare.min_n):
                    claim |= {"verdict": "insufficient evidence", "reason": too_few}
                else:
                    xa, xb, is_paired = _observations(arms[a], arms[b], metric, compare.pair_by)
                    claim["test"] = _test(xa, xb, is_paired).to_dict()
                    mt = tost(xa, xb, margin, is_paired, compare.alpha) if question != "difference" else None
                    family.append((claim, mt))
                claims.append(claim)
            _judge_family(family, metric, compare)
    counts = {v: sum(c["verdict"] == v for c in claims) for v in verdicts_for(compare)}
    return {"compare": compare.model_dump(mode="json"), "n_done": len(done), "arms": arms_out, "anova": anova_out, "claims": claims, "counts": counts}
