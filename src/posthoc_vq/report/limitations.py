"""Limitations written from the data: what a reader must know before trusting a run's or a sweep's numbers.

Nothing here is prose typed by hand: every line is produced from a fact in the run or
sweep files (training summary, codebook fit sets, seeds, audit warnings, cell statuses),
so a report can never forget to say that a model did not converge or that a codebook saw
the test images. The validity rules and their sentences are those of :mod:`posthoc_vq.audit`.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any, Iterable

from posthoc_vq.results import Evaluation
from posthoc_vq.audit import MIN_OBSERVATIONS, NOT_CONVERGED, TEST_LEAKAGE, TOO_FEW_OBSERVATIONS, UNTRAINED


def warning_lines(sources: Iterable[tuple[str, Evaluation]]) -> list[str]:
    """One line per distinct audit warning, naming every result it fired in; ``sources`` are (result name, evaluation)."""
    fired: dict[tuple[str, str], list[str]] = defaultdict(list)
    for name, result in sources:
        for w in result.warnings:
            fired[(w.code, w.message)].append(name)
    return [f"Audit warning `{code}` ({', '.join(names)}): {message}" for (code, message), names in fired.items()]


def run_limitations(
    *, meta: dict[str, Any] | None, summary: dict[str, Any] | None, seed: Any, split: str, codebook_evals: list[Evaluation],
    codebooks: list[str], evaluated: set[str], warnings: list[str], git_commit: str | None,
) -> list[str]:
    """The limitations of one run.

    Parameters
    ----------
    meta, summary : ``model.json`` and ``train_summary.json`` (None when absent).
    codebook_evals : the run's codebook evaluations on ``split``.
    codebooks : every codebook of the run; ``evaluated``: those with an evaluation on ``split``.
    warnings : lines from :func:`warning_lines`.
    """
    out = []
    if meta is not None and UNTRAINED.applies(meta.get("trained_steps")):
        out.append(UNTRAINED.run_note())
    if summary is None:
        out.append("No train_summary.json: whether training converged is unknown.")
    elif NOT_CONVERGED.applies(summary.get("converged")):
        out.append(NOT_CONVERGED.run_note(summary))
    else:
        out.append(f"Trained to convergence: {summary.get('stop_reason')} after {summary.get('epochs')} epochs (best epoch {summary.get('best_epoch')}).")
    leaked = sorted(r.codebook for r in codebook_evals if TEST_LEAKAGE.applies(r.fit_includes_test))
    if leaked:
        out.append(TEST_LEAKAGE.run_note(split, leaked))
    elif codebook_evals:
        out.append(f"No evaluated codebook saw the {split} split: every codebook was fitted on {', '.join(sorted({str(r.fit_on) for r in codebook_evals}))}.")
    out.append(f"One training seed ({seed}): the 95% CIs are over {split} images, not over training runs, so they do not show "
               "how much another seed would change the numbers (run a sweep over seeds: `posthoc-vq ablate`).")
    if missing := sorted(set(codebooks) - evaluated):
        out.append(f"Codebooks without an evaluation on {split} (not in the tables or the rate-distortion figure): {', '.join(missing)}.")
    if git_commit and git_commit.endswith("-dirty"):
        out.append(f"The model was trained from a source tree with uncommitted changes ({git_commit}).")
    out += warnings or ["No audit warning fired."]
    return out


def sweep_limitations(
    *, rows: list[dict[str, Any]], n_cells: int, compare: dict[str, Any], claims_n_done: int | None, runs_missing: list[str],
) -> list[str]:
    """The limitations of a sweep, from its database rows and compare settings (see :mod:`posthoc_vq.experiments.claims`)."""
    out = []
    done = [r for r in rows if r["status"] == "done"]
    axis, pair_by = compare["axis"], compare.get("pair_by")
    if len(done) < n_cells:
        by_status = Counter(r["status"] for r in rows if r["status"] != "done")
        out.append(f"Only {len(done)} of {n_cells} cells are done ({', '.join(f'{n} {s}' for s, n in sorted(by_status.items())) or 'the rest not registered'}); "
                   "verdicts use the done cells only.")
    for r in rows:
        if r["status"] == "failed":
            last = (r.get("error") or "").strip().splitlines()[-1:] or ["no error recorded"]
            out.append(f"Failed cell {r['axes']}: {last[0]}")
    if claims_n_done is not None and claims_n_done != len(done):
        out.append(f"claims.json was written when {claims_n_done} cells were done; the database now has {len(done)} done: re-run `posthoc-vq ablate` to update it.")
    seeds = defaultdict(set)
    for r in done:
        seeds[f"{axis}={r['axes'].get(axis)}"].add(str(r["axes"].get(pair_by)) if pair_by else r["cell_id"])
    if seeds:
        counts = {arm: len(s) for arm, s in seeds.items()}
        low = min(counts.values())
        what = pair_by or "observation"
        shown = {arm: f" ({', '.join(sorted(s))})" if pair_by else "" for arm, s in seeds.items()}
        out.append(f"{what.capitalize()}s per arm: " + ", ".join(f"{arm}: {n}{shown[arm]}" for arm, n in counts.items()) + ".")
        min_n = compare.get("min_n", MIN_OBSERVATIONS)
        if TOO_FEW_OBSERVATIONS.applies(low, min_n):
            out.append(TOO_FEW_OBSERVATIONS.sweep_note(min_n, what, low))
    cell = lambda r: f"{axis}={r['axes'].get(axis)}, {pair_by}={r['axes'].get(pair_by)}"  # noqa: E731
    unconverged = sorted({cell(r) for r in done if NOT_CONVERGED.on_cell(r["metrics"] or {})})
    untrained = sorted({cell(r) for r in done if UNTRAINED.on_cell(r["metrics"] or {})})
    if untrained:
        out.append(UNTRAINED.sweep_note(untrained))
    if unconverged:
        out.append(NOT_CONVERGED.sweep_note(unconverged))
    elif done:
        out.append("Every done cell's model was trained to convergence (early stopping).")
    leaked = sum(TEST_LEAKAGE.on_cell(r["metrics"] or {}) for r in done)
    if leaked:
        out.append(TEST_LEAKAGE.sweep_note(leaked))
    elif any((r["metrics"] or {}).get("bits_per_image") for r in done):
        out.append("No codebook saw the test split.")
    warned = Counter(w for r in done for w in (r["metrics"] or {}).get("warnings") or [])
    out += [f"Audit warning `{code}` fired in {n} cell(s)." for code, n in sorted(warned.items())] or ["No audit warning fired in any cell."]
    if runs_missing:
        out.append(f"Done cells whose trained run is not under runs/ (moved or deleted): {', '.join(runs_missing)}; their curves and images are left out.")
    if compare.get("margin"):
        correction = compare.get("correction", "holm")
        out.append(f"Margins: {', '.join(f'{m} {v:g}' for m, v in compare['margin'].items())}; compared metrics without one get the verdicts of a "
                   "plain difference test" + (f". The CIs shown against the margins are per comparison while the verdicts use {correction}-adjusted "
                                              "p-values, so a CI inside a margin can still be 'inconclusive'." if correction != "none" else "."))
    return out
