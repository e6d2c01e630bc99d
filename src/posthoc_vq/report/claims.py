"""The one renderer of a sweep's claims: ``claims.json`` (written by ``posthoc-vq ablate``) to tables and Markdown.

``claims.md`` (written by :func:`write_claims`) and the claims,
arms and ANOVA tables of a sweep report are the same :class:`~posthoc_vq.report.document.Table`
objects from :func:`claims_tables`, rendered by the same
:func:`~posthoc_vq.report.document.table_markdown`, so the two never disagree. Nothing here
judges a claim: verdicts and reasons are read from the claims dict as stored.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from posthoc_vq.io import atomic_write, write_json
from posthoc_vq.report.document import Table, md_text, table_markdown
from posthoc_vq.run import Sweep

CLAIM_COLUMNS = ("slice", "metric", "arm", "reference", "n", "mean arm", "mean reference", "p adjusted", "verdict", "reason")
MARGIN_COLUMNS = ("slice", "metric", "arm", "reference", "n", "mean arm", "mean reference", "CI vs margin", "p adjusted",
                  "p within / beyond margin", "verdict", "reason")  # when some claim has a margin
ARM_COLUMNS = ("slice", "metric", "arm", "n", "mean", "std", "95% CI")
ANOVA_COLUMNS = ("slice", "metric", "arms", "F", "p")


def fmt(x: Any, spec: str = ".4g") -> str:
    """A number as text; None or NaN as '-'."""
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def slice_label(slice_: dict[str, Any]) -> str:
    """``k=v, k=v`` of a slice (the fixed values of the other axes), or 'all cells'."""
    return ", ".join(f"{k}={v}" for k, v in slice_.items()) or "all cells"


def ci_vs_margin(c: dict[str, Any]) -> str:
    """The CI of a claim's difference against its margin, e.g. ``90% CI [-0.38, -0.04] vs [-0.5, +0.5]``; '-' without margin or CI.

    Non-inferiority shows the one edge that matters, as stored with the claim: ``vs > -0.5`` when
    higher is better, ``vs < +0.5`` when lower is better.
    """
    m = c.get("margin")
    if m is None or c.get("ci_low") is None:
        return "-"
    ci = f"{c['ci_level']:.0%} CI [{c['ci_low']:+.3g}, {c['ci_high']:+.3g}]"
    if c.get("question") == "non-inferiority":
        return f"{ci} vs " + (f"> {-m:+g}" if c["higher_is_better"] else f"< {m:+g}")
    return f"{ci} vs [{-m:+g}, {m:+g}]"


def claims_tables(claims: dict[str, Any]) -> dict[str, Table]:
    """``claims`` (every verdict with its reason), ``arms`` (summaries) and, when there is one, ``anova``.

    When some claim has a margin the claims table also shows each CI against its margin and the
    adjusted p-values of the margin tests (equivalence or non-inferiority, and beyond the margin).
    """
    rows = [{"slice": slice_label(c["slice"]), "metric": c["metric"], "arm": c["arm"], "reference": c["reference"], "n": f"{c['n_arm']}/{c['n_reference']}",
             "mean arm": fmt(c["mean_arm"]), "mean reference": fmt(c["mean_reference"]), "p adjusted": fmt(c.get("p_adjusted"), ".2g"),
             "verdict": c["verdict"], "reason": c["reason"]} for c in claims["claims"]]
    margins = any(c.get("margin") is not None for c in claims["claims"])
    if margins:
        for row, c in zip(rows, claims["claims"]):
            row["CI vs margin"] = ci_vs_margin(c)
            row["p within / beyond margin"] = (f"{fmt(c['p_within_adjusted'], '.2g')} / {fmt(c['p_beyond_adjusted'], '.2g')}"
                                               if c.get("p_within_adjusted") is not None else "-")
    arms = [{"slice": slice_label(a["slice"]), "metric": a["metric"], "arm": a["arm"], "n": str(a["n"]), "mean": fmt(a["mean"]), "std": fmt(a["std"], ".3g"),
             "95% CI": f"[{fmt(a['ci_low'])}, {fmt(a['ci_high'])}]"} for a in claims["arms"]]
    tables = {
        "claims": Table(MARGIN_COLUMNS if margins else CLAIM_COLUMNS, rows, "Claims", key="claims", row_class="verdict"),
        "arms": Table(ARM_COLUMNS, arms, "Arms (mean, sample std, 95% t CI over seeds)", key="arms"),
    }
    if claims.get("anova"):
        anova = [{"slice": slice_label(a["slice"]), "metric": a["metric"], "arms": ", ".join(a["arms"]), "F": fmt(a["F"], ".3g"), "p": fmt(a["p"], ".2g")}
                 for a in claims["anova"]]
        tables["anova"] = Table(ANOVA_COLUMNS, anova, "One-way ANOVA across arms", key="anova")
    return tables


def verdict_counts(claims: dict[str, Any]) -> str:
    return ", ".join(f"{v}: {n}" for v, n in claims["counts"].items())


QUESTIONS = {
    "difference": "a significant difference whose estimate is smaller than the margin is 'significant but below margin'",
    "equivalence": "each arm is tested for equivalence to the reference by TOST (the {level} CI inside the margin band)",
    "non-inferiority": "each arm is tested for non-inferiority to the reference by a one-sided t-test (the {level} CI's worse bound inside the margin)",
}


def margin_sentence(margin: dict[str, float], question: str, alpha: float) -> str:
    """What the margins of a compare spec mean, in one sentence."""
    meaning = QUESTIONS[question].format(level=f"{1 - 2 * alpha:.0%}")
    return f"Margins: {', '.join(f'{m} {v:g}' for m, v in margin.items())}; question `{question}`: {meaning}."


def claims_markdown(claims: dict[str, Any], spec: Any) -> str:
    """``claims.md``: what was compared (and the margins, if any), the verdict counts, then the claims, arms and ANOVA tables.

    ``spec`` is the sweep's :class:`~posthoc_vq.experiments.spec.SweepSpec` (its name, split and compare settings).
    """
    c = spec.compare
    pending = (f", {claims['n_pending']} not run yet: the verdicts rest on the cells done so far, and a slice with too few "
               "is judged insufficient evidence") if claims.get("n_pending") else ""
    compared = (f"{claims.get('n_done', '?')} of {claims.get('n_cells', '?')} cells done ({claims.get('n_failed', 0)} failed{pending}). "
                f"Compared axis `{c.axis}`" + (f" against `{c.reference}`" if c.reference is not None else " (all pairs)")
                + f", paired by `{c.pair_by}`, {c.correction} correction per slice and metric, alpha {c.alpha}, on the {spec.split} split.")
    if c.margin:
        compared += " " + margin_sentence(c.margin, c.question, c.alpha)
    lines = [f"# Claims: {md_text(spec.name)}", "", md_text(compared), "", f"Verdicts: {verdict_counts(claims)}.", ""]
    lines += [table_markdown(t) for t in claims_tables(claims).values()]
    return "\n".join(lines).rstrip() + "\n"


def write_claims(sweep_dir: str | Path, claims: dict[str, Any], spec: Any) -> dict[str, Path]:
    """``claims.json`` and ``claims.md`` of a sweep (the verdict, arm and ANOVA tables, rendered by :func:`claims_markdown`,
    the same renderer as the sweep report's); returns their paths."""
    sweep = Sweep(Path(sweep_dir))
    paths = {"json": sweep.claims_json, "markdown": sweep.claims_md}
    write_json(paths["json"], claims)
    with atomic_write(paths["markdown"]) as tmp:
        tmp.write_text(claims_markdown(claims, spec))
    return paths
