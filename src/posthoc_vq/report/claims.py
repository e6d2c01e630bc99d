"""The one renderer of a sweep's claims: ``claims.json`` (written by ``posthoc-vq ablate``) to tables and Markdown.

``claims.md`` (written by :func:`posthoc_vq.experiments.runner.write_claims`) and the claims,
arms and ANOVA tables of a sweep report are the same :class:`~posthoc_vq.report.document.Table`
objects from :func:`claims_tables`, rendered by the same
:func:`~posthoc_vq.report.document.table_markdown`, so the two never disagree. Nothing here
judges a claim: verdicts and reasons are read from the claims dict as stored.
"""

from __future__ import annotations

import math
from typing import Any

from posthoc_vq.report.document import Table, table_markdown

CLAIM_COLUMNS = ("slice", "metric", "arm", "reference", "n", "mean arm", "mean reference", "p adjusted", "verdict", "reason")
ARM_COLUMNS = ("slice", "metric", "arm", "n", "mean", "std", "95% CI")
ANOVA_COLUMNS = ("slice", "metric", "arms", "F", "p")


def fmt(x: Any, spec: str = ".4g") -> str:
    """A number as text; None or NaN as '-'."""
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def slice_label(slice_: dict[str, Any]) -> str:
    """``k=v, k=v`` of a slice (the fixed values of the other axes), or 'all cells'."""
    return ", ".join(f"{k}={v}" for k, v in slice_.items()) or "all cells"


def claims_tables(claims: dict[str, Any]) -> dict[str, Table]:
    """``claims`` (every verdict with its reason), ``arms`` (summaries) and, when there is one, ``anova``."""
    rows = [{"slice": slice_label(c["slice"]), "metric": c["metric"], "arm": c["arm"], "reference": c["reference"], "n": f"{c['n_arm']}/{c['n_reference']}",
             "mean arm": fmt(c["mean_arm"]), "mean reference": fmt(c["mean_reference"]), "p adjusted": fmt(c.get("p_adjusted"), ".2g"),
             "verdict": c["verdict"], "reason": c["reason"]} for c in claims["claims"]]
    arms = [{"slice": slice_label(a["slice"]), "metric": a["metric"], "arm": a["arm"], "n": str(a["n"]), "mean": fmt(a["mean"]), "std": fmt(a["std"], ".3g"),
             "95% CI": f"[{fmt(a['ci_low'])}, {fmt(a['ci_high'])}]"} for a in claims["arms"]]
    tables = {
        "claims": Table(CLAIM_COLUMNS, rows, "Claims", key="claims", row_class="verdict"),
        "arms": Table(ARM_COLUMNS, arms, "Arms (mean, sample std, 95% t CI over seeds)", key="arms"),
    }
    if claims.get("anova"):
        anova = [{"slice": slice_label(a["slice"]), "metric": a["metric"], "arms": ", ".join(a["arms"]), "F": fmt(a["F"], ".3g"), "p": fmt(a["p"], ".2g")}
                 for a in claims["anova"]]
        tables["anova"] = Table(ANOVA_COLUMNS, anova, "One-way ANOVA across arms", key="anova")
    return tables


def verdict_counts(claims: dict[str, Any]) -> str:
    return ", ".join(f"{v}: {n}" for v, n in claims["counts"].items())


def claims_markdown(claims: dict[str, Any], spec: Any) -> str:
    """``claims.md``: what was compared, the verdict counts, then the claims, arms and ANOVA tables.

    ``spec`` is the sweep's :class:`~posthoc_vq.experiments.spec.SweepSpec` (its name, split and compare settings).
    """
    c = spec.compare
    lines = [f"# Claims: {spec.name}", "",
             f"{claims.get('n_done', '?')} of {claims.get('n_cells', '?')} cells done ({claims.get('n_failed', 0)} failed). "
             f"Compared axis `{c.axis}`" + (f" against `{c.reference}`" if c.reference is not None else " (all pairs)")
             + f", paired by `{c.pair_by}`, {c.correction} correction per slice and metric, alpha {c.alpha}, on the {spec.split} split.", "",
             f"Verdicts: {verdict_counts(claims)}.", ""]
    lines += [table_markdown(t) for t in claims_tables(claims).values()]
    return "\n".join(lines).rstrip() + "\n"
