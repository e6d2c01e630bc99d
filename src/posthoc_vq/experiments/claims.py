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
* ``validated``: Holm-adjusted p < alpha; the reason says which arm is higher and by how much;
* ``no significant difference``: otherwise.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from posthoc_vq import audit
from posthoc_vq.experiments.spec import CompareSpec
from posthoc_vq.experiments.statistics import anova, holm, paired, summarize, welch

VERDICTS = ("validated", "no significant difference", "insufficient evidence", "invalid")


def _label(axis: str, value: Any) -> str:
    return f"{axis}={value}"


def invalid_reasons(arms: dict[Any, list[dict[str, Any]]], compare: CompareSpec) -> list[str]:
    """Why a comparison between these arms (value -> done rows) cannot be trusted; empty when it can (rules of :mod:`posthoc_vq.audit`)."""
    return audit.invalid_reasons(arms, compare.axis, compare.pair_by)


def _test(a_rows: list[dict[str, Any]], b_rows: list[dict[str, Any]], metric: str, pair_by: str | None):
    a = {r["axes"].get(pair_by): r["metrics"][metric] for r in a_rows} if pair_by else {}
    b = {r["axes"].get(pair_by): r["metrics"][metric] for r in b_rows} if pair_by else {}
    if pair_by and set(a) == set(b) and len(a) == len(a_rows) == len(b_rows):
        keys = sorted(a, key=str)
        return paired([a[k] for k in keys], [b[k] for k in keys])
    return welch([r["metrics"][metric] for r in a_rows], [r["metrics"][metric] for r in b_rows])


def slice_key(axes: dict[str, Any], compare: CompareSpec) -> tuple:
    return tuple(sorted((k, str(v)) for k, v in axes.items() if k not in (compare.axis, compare.pair_by)))


def make_claims(rows: list[dict[str, Any]], compare: CompareSpec) -> dict[str, Any]:
    """Arm summaries, ANOVAs and verdicts for the done ``rows`` of a sweep (see module docstring).

    A metric a cell did not measure (None, e.g. FD of a weight-quantized cell) leaves that cell
    out of that metric's statistics.
    """
    done = [r for r in rows if r["status"] == "done"]
    slices: dict[tuple, dict[Any, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for r in done:
        slices[slice_key(r["axes"], compare)][r["axes"][compare.axis]].append(r)
    arms_out, anova_out, claims = [], [], []
    for skey, all_arms in sorted(slices.items()):
        where = dict(skey)
        for metric in compare.metrics:
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
            family = []
            for a, b in pairs:
                claim = {
                    "slice": where, "metric": metric, "arm": _label(compare.axis, a), "reference": _label(compare.axis, b),
                    "n_arm": len(arms[a]), "n_reference": len(arms[b]),
                    "mean_arm": summarize([r["metrics"][metric] for r in arms[a]]).mean,
                    "mean_reference": summarize([r["metrics"][metric] for r in arms[b]]).mean,
                }
                reasons = invalid_reasons({a: arms[a], b: arms[b]}, compare)
                if reasons:
                    claim |= {"verdict": "invalid", "reason": "; ".join(reasons)}
                elif too_few := audit.too_few_reason(len(arms[a]), len(arms[b]), compare.min_n):
                    claim |= {"verdict": "insufficient evidence", "reason": too_few}
                else:
                    claim["test"] = _test(arms[a], arms[b], metric, compare.pair_by).to_dict()
                    family.append(claim)
                claims.append(claim)
            adjusted = holm([c["test"]["p"] for c in family]) if compare.correction == "holm" else [c["test"]["p"] for c in family]
            for c, p_adj in zip(family, adjusted):
                t = c["test"]
                c["p_adjusted"] = p_adj
                numbers = f"difference {t['diff']:+.4g} [{t['diff_low']:+.4g}, {t['diff_high']:+.4g}], {t['test']} p = {t['p']:.2g} ({compare.correction} {p_adj:.2g}), Hedges' g = {t['hedges_g']:+.2f}"
                if p_adj < compare.alpha:
                    higher = c["arm"] if t["diff"] > 0 else c["reference"]
                    c |= {"verdict": "validated", "reason": f"{higher} has the higher {metric}: {numbers}"}
                else:
                    c |= {"verdict": "no significant difference", "reason": f"{numbers}; not significant at alpha = {compare.alpha}"}
    counts = {v: sum(c["verdict"] == v for c in claims) for v in VERDICTS}
    return {"compare": compare.model_dump(mode="json"), "n_done": len(done), "arms": arms_out, "anova": anova_out, "claims": claims, "counts": counts}
