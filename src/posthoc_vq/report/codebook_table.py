"""The study-style codebook table and the rate-distortion figure of one run.

Reads the evaluation JSONs a run has (``eval/continuous-<split>.json`` and
``eval/<codebook>-<split>.json``) and writes ``codebooks-<split>.md``/``.csv``
and ``rate-distortion-<split>.png``: absolute PSNR/SSIM against ground truth,
the quantization penalty, code usage and dead codes (per stage and summed, with the
distinct code tuples, for residual codebooks), entropy, bits per image and
graph connectivity, one row per codebook, with the audit's warnings below.
The Markdown is for reading (:data:`COLUMNS`, :func:`table_rows`); the CSV is tidy
(:data:`TIDY_COLUMNS`, :func:`tidy_rows`: numbers only in numeric columns, the CI as
two columns, empty cells for what does not apply).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
from typing import Any

from posthoc_vq.derivation import check_source
from posthoc_vq.errors import PosthocVQError
from posthoc_vq.io import atomic_write, read_json, write_text
from posthoc_vq.report.formats import to_csv
from posthoc_vq.report.tables import markdown_table
from posthoc_vq.records import read_evaluation
from posthoc_vq.results import Evaluation, MeanCI, Usage
from posthoc_vq.run import Run

COLUMNS = (
    "method", "codebook", "fit on", "bits/image", "bpp nominal", "bpp real (empirical)", "bpp real (context)", "PSNR (dB)", "PSNR 95% CI", "SSIM", "penalty PSNR (dB)",
    "code usage", "dead codes", "entropy (nats)", "entropy (bits)", "perplexity", "graph nodes", "graph edges", "components",
)
#: columns of the tidy CSV (``--format csv``): ``bits_label`` says what the continuous row's rate is (``fp32``, or ``trained vq``)
TIDY_COLUMNS = (
    "method", "codebook", "fit_on", "bits_per_image", "bits_label", "bpp_nominal", "bpp_ideal_empirical", "bpp_real_empirical",
    "bpp_ideal_context", "bpp_real_context", "container_bpp_empirical", "container_bpp_context", "psnr_db", "psnr_db_ci_low", "psnr_db_ci_high", "ssim", "penalty_psnr_db",
    "codes_used", "n_codes", "dead_codes", "n_stages", "distinct_tuples", "entropy_nats", "entropy_bits", "perplexity", "graph_nodes", "graph_edges", "graph_components",
)


def load_results(run_dir: str | Path | Run, split: str = "test") -> tuple[Evaluation, list[Evaluation]]:
    """(continuous result, codebook results sorted by fit set, method and bits) of a run's stored evaluations.

    Only current ones: a continuous result of another version of the model is a
    :class:`~posthoc_vq.derivation.StaleArtifactError`; a codebook result of another model or codebook version (or of a
    deleted codebook) is left out with a :class:`StaleResultWarning` naming the command that evaluates it again.
    """
    run = Run.open(run_dir)
    cont_path = run.eval_file(split)
    if not cont_path.exists():
        raise PosthocVQError(f"{cont_path} not found: run `posthoc-vq evaluate {run.root} --split {split}` first")
    cont = read_evaluation(cont_path, what="evaluation result")
    model_sha = run.model_record()["sha256"]
    again = f"evaluate again: `posthoc-vq evaluate {run.root} --split {split}`"
    check_source("the continuous evaluation", cont_path, cont.model.sha256, model_sha, "the run's model", again)
    books = []
    for name, path in run.codebook_eval_files(split).items():
        result = read_evaluation(path, what="evaluation result")
        stale = _stale_codebook_eval(run, name, result, model_sha)
        if stale:  # left out of the table with a note, never shown beside the current model's numbers
            warnings.warn(f"{path} is stale ({stale}) and is left out; {again.replace('--split', f'--codebook {name} --split')}", StaleResultWarning, stacklevel=2)
            continue
        books.append(result)
    books.sort(key=lambda r: (r.fit_on, r.method, r.bits_per_image))
    return cont, books


class StaleResultWarning(UserWarning):
    """A stored evaluation of another version of the model or codebook, left out of a table or report."""


def _stale_codebook_eval(run: Run, name: str, result: Evaluation, model_sha: str) -> str | None:
    """Why a codebook's stored evaluation no longer measures the run's model and codebook (None: it does, or it predates the checksums)."""
    measured = result.model.sha256
    if measured is not None and measured != model_sha:
        return "it measured another version of the run's model"
    record = run.codebook_files(name)[1]
    if not record.exists():
        return f"codebook '{name}' is gone"
    if result.codebook_sha256 is not None and result.codebook_sha256 != read_json(record, what="codebook record").get("sha256"):
        return f"codebook '{name}' was fitted again since"
    return None


def real_rate(result: Evaluation, prior: str, key: str = "real_bpp") -> float | None:
    """Mean bits per pixel of an evaluation's ``rate`` block for ``prior``: ``real_bpp`` (its own file's bytes x 8, header
    included), ``ideal_bpp`` or ``container_bpp``; None where the result has no rate or the prior does not apply."""
    block = result.rate.priors.get(prior) if result.rate is not None else None
    if block is None:
        return None
    value = getattr(block, key)
    return value.mean if isinstance(value, MeanCI) else value


def best_real_bpp(result: Evaluation) -> float | None:
    """The lowest real bits per pixel over the result's priors (the context prior on token grids, else empirical)."""
    rates = [r for r in (real_rate(result, p) for p in ("empirical", "context")) if r is not None]
    return min(rates) if rates else None


def _bpp(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def latent_size(result: Evaluation) -> int:
    """Numbers per image in the latent: D, or D * h * w for a latent grid."""
    shape = result.model.latent_shape or [result.model.latent_dim]
    return int(np.prod(shape))


def usage_summary(usage: Usage) -> dict[str, Any]:
    """Code usage of one stored ``usage`` block (:func:`posthoc_vq.metrics.codebook.codebook_usage`), over every stage.

    A single-stage codebook: its own ``used``/``dead``/``n_codes``. A residual codebook (``stages`` present): ``used``,
    ``dead`` and ``n_codes`` summed over the stages, ``n_stages``, ``distinct_tuples`` (distinct code combinations) and
    ``text``, e.g. ``s1 900/1024, s2 850/1024; 20000 tuples``. ``distinct_tuples`` and ``n_stages`` are None for one stage.
    """
    stages = getattr(usage, "stages", None)
    if not stages:
        used, n_codes = usage.used, usage.n_codes
        return {"used": used, "dead": usage.dead, "n_codes": n_codes, "n_stages": None, "distinct_tuples": None, "text": f"{used}/{n_codes}"}
    tuples = getattr(usage, "distinct_tuples", None)
    text = ", ".join(f"s{i} {st['used']}/{st['n_codes']}" for i, st in enumerate(stages, 1)) + (f"; {tuples} tuples" if tuples is not None else "")
    return {"used": sum(st["used"] for st in stages), "dead": sum(st["dead"] for st in stages), "n_codes": sum(st["n_codes"] for st in stages),
            "n_stages": len(stages), "distinct_tuples": tuples, "text": text}


def table_rows(cont: Evaluation, books: list[Evaluation], split: str = "test") -> list[dict[str, Any]]:
    c = cont.continuous
    kind = cont.model.quantizer  # a model trained with its quantizer: its own output is already quantized
    rows = [{
        "method": f"trained {kind}" if kind else "continuous", "codebook": "-", "fit on": "-",
        "bits/image": f"{cont.bits_per_image:g} (trained {kind})" if kind else f"{32 * latent_size(cont)} (fp32)",
        "PSNR (dB)": f"{c.psnr_db.mean:.2f}", "PSNR 95% CI": f"[{c.psnr_db.low:.2f}, {c.psnr_db.high:.2f}]",
        "SSIM": f"{c.ssim.mean:.4f}", "penalty PSNR (dB)": "-",
    }]
    for r in books:
        q, u, g = r.quantized, r.usage_on(split), r.graph or {}
        us = usage_summary(u)
        rows.append({
            "method": r.method, "codebook": r.codebook, "fit on": r.fit_on, "bits/image": f"{r.bits_per_image:.0f}",
            "bpp nominal": _bpp(r.rate.nominal_bpp if r.rate else None), "bpp real (empirical)": _bpp(real_rate(r, "empirical")),
            "bpp real (context)": _bpp(real_rate(r, "context")),
            "PSNR (dB)": f"{q.psnr_db.mean:.2f}", "PSNR 95% CI": f"[{q.psnr_db.low:.2f}, {q.psnr_db.high:.2f}]",
            "SSIM": f"{q.ssim.mean:.4f}", "penalty PSNR (dB)": f"{r.penalty.psnr_db.mean:.2f}",
            "code usage": us["text"], "dead codes": str(us["dead"]),
            "entropy (nats)": f"{u.entropy_nats:.3f}", "entropy (bits)": f"{u.entropy_bits:.3f}", "perplexity": f"{u.perplexity:.1f}",
            "graph nodes": str(g.get("nodes", "-")), "graph edges": str(g.get("edges", "-")), "components": str(g.get("components", "-")),
        })
    return rows


def tidy_rows(cont: Evaluation, books: list[Evaluation], split: str = "test") -> list[dict[str, Any]]:
    """The rows of :func:`table_rows` as numbers (columns :data:`TIDY_COLUMNS`); None where a column does not apply."""
    c = cont.continuous
    kind = cont.model.quantizer
    rows = [{
        "method": f"trained {kind}" if kind else "continuous", "codebook": None, "fit_on": None,
        "bits_per_image": cont.bits_per_image if kind else 32 * latent_size(cont), "bits_label": f"trained {kind}" if kind else "fp32",
        "psnr_db": c.psnr_db.mean, "psnr_db_ci_low": c.psnr_db.low, "psnr_db_ci_high": c.psnr_db.high, "ssim": c.ssim.mean,
    }]
    for r in books:
        q, u, g = r.quantized, r.usage_on(split), r.graph or {}
        us = usage_summary(u)
        rows.append({
            "method": r.method, "codebook": r.codebook, "fit_on": r.fit_on, "bits_per_image": r.bits_per_image, "bits_label": None,
            "bpp_nominal": r.rate.nominal_bpp if r.rate else None,
            **{f"bpp_{key}_{p}": real_rate(r, p, f"{key}_bpp") for p in ("empirical", "context") for key in ("ideal", "real")},
            **{f"container_bpp_{p}": real_rate(r, p, "container_bpp") for p in ("empirical", "context")},
            "psnr_db": q.psnr_db.mean, "psnr_db_ci_low": q.psnr_db.low, "psnr_db_ci_high": q.psnr_db.high, "ssim": q.ssim.mean,
            "penalty_psnr_db": r.penalty.psnr_db.mean, "codes_used": us["used"], "n_codes": us["n_codes"], "dead_codes": us["dead"],
            "n_stages": us["n_stages"], "distinct_tuples": us["distinct_tuples"],
            "entropy_nats": u.entropy_nats, "entropy_bits": u.entropy_bits, "perplexity": u.perplexity,
            "graph_nodes": g.get("nodes"), "graph_edges": g.get("edges"), "graph_components": g.get("components"),
        })
    return rows


def markdown(rows: list[dict[str, Any]], cont: Evaluation, books: list[Evaluation], split: str) -> str:
    n = cont.continuous.n_images
    notes = [
        f"Run `{cont.run}`, dataset {cont.dataset}, {split} split ({n} images); latents: posterior means unless the codebook name says z.",
        "PSNR/SSIM: decoded outputs in [0, 1] against ground truth (per-image mean, 95% CI over images). "
        "Penalty: quantized output against the continuous output. Code usage, entropy and perplexity on the evaluated split.",
        "bpp: bits per pixel (H x W). Nominal: tokens x log2 K. Real: each image's own `posthoc-vq compress` file, bytes x 8, "
        "header included (evaluations made before bitstreams existed show -).",
        f"Training: {cont.training.stop_reason} after {cont.training.epochs} epochs (converged: {cont.training.converged}).",
    ]
    model_codes = set(cont.warning_codes())  # repeated in every codebook's result
    warnings = [f"model: {w.message}" for w in cont.warnings]
    warnings += [f"{r.codebook}: {w.message}" for r in books for w in r.warnings if w.code not in model_codes]
    text = markdown_table(COLUMNS, rows) + "\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    if warnings:
        text += "\nAudit warnings:\n" + "\n".join(f"- {w}" for w in warnings) + "\n"
    return text


MARKERS = "osD^vP*Xh<>p"


def codebook_recipe(result: Evaluation, record: dict[str, Any] | None = None) -> dict[str, Any]:
    """What makes a codebook's line in the rate-distortion figure: everything but its rate.

    Method, latents (mu, z), fit set and, for graph methods, the graph's symmetry and n_neighbors (from the codebook
    record's ``quantize`` settings where given). K and a residual codebook's number of stages are the rate: codebooks that
    differ only in them lie on one line.
    """
    q = (record or {}).get("quantize") or {}
    recipe = {"method": result.method, "latents": result.latents, "fit_on": result.fit_on}
    if result.method in GRAPH_METHODS or result.graph is not None:
        name = str(result.codebook or "")  # no record: the name's suffixes (-k<n>, -mutual) say what differs from the defaults
        k = re.search(r"-k(\d+|auto)(?=-|$)", name)
        recipe["symmetry"] = q.get("symmetry") or ("mutual" if re.search(r"-mutual(?=-|$)", name) else "union")
        recipe["n_neighbors"] = q.get("n_neighbors") if q else ((int(k.group(1)) if k.group(1).isdigit() else "auto") if k else 50)
    return recipe


#: methods whose codebook is built on a kNN graph (symmetry and n_neighbors are part of their recipe); as in posthoc_vq.quantize.codebooks
GRAPH_METHODS = ("geodesic", "hybrid")


def recipe_label(recipe: dict[str, Any]) -> str:
    """``geodesic (mu, fit on train, k=15, mutual)``: the legend entry of a recipe's line (parts that are None left out)."""
    parts = [str(recipe.get("latents")) if recipe.get("latents") else None, f"fit on {recipe['fit_on']}" if recipe.get("fit_on") else None]
    if recipe.get("n_neighbors") is not None:
        parts.append(f"k={recipe['n_neighbors']}")
    if recipe.get("symmetry"):
        parts.append(str(recipe["symmetry"]))
    inner = ", ".join(p for p in parts if p)
    return f"{recipe['method']} ({inner})" if inner else str(recipe["method"])


def rate_distortion_series(books: list[Evaluation], records: dict[str, dict[str, Any]] | None = None, x: str = "bits") -> list[dict[str, Any]]:
    """The points of the rate-distortion figure, one series per codebook recipe (:func:`codebook_recipe`), as plain data.

    Each series: ``label``, ``recipe``, ``method``, ``x`` (bits per image, exactly as stored: equal rates share one x,
    no sideways dodge), ``y``, ``low``, ``high`` (PSNR mean and 95% CI), ``codebooks``, ``transductive`` (the fit set
    includes test) and ``marker`` (one per series, so overlapping points stay told apart), sorted by x.
    ``records``: codebook name -> its ``codebook.json`` (for the graph settings); optional.
    ``x``: ``bits`` (bits per image, nominal) or ``real-bpp`` (the lowest real bits per pixel of the codebook's files,
    header included, :func:`best_real_bpp`; codebooks evaluated without a rate are left out).
    """
    if x not in ("bits", "real-bpp"):
        raise ValueError(f"x must be 'bits' or 'real-bpp', got {x!r}")
    if x == "real-bpp":
        books = [r for r in books if best_real_bpp(r) is not None]
    groups: dict[tuple, list[Evaluation]] = {}
    recipes: dict[tuple, dict[str, Any]] = {}
    for r in books:
        recipe = codebook_recipe(r, (records or {}).get(r.codebook))
        key = tuple((k, str(v)) for k, v in recipe.items())
        groups.setdefault(key, []).append(r)
        recipes[key] = recipe
    series = []
    for i, key in enumerate(sorted(groups, key=lambda k: recipe_label(recipes[k]))):
        rs = sorted(groups[key], key=lambda r: (r.bits_per_image, r.codebook))
        q = [r.quantized.psnr_db for r in rs]
        series.append({
            "label": recipe_label(recipes[key]), "recipe": recipes[key], "method": recipes[key]["method"],
            "x": [float(r.bits_per_image) if x == "bits" else best_real_bpp(r) for r in rs], "y": [m.mean for m in q], "low": [m.low for m in q], "high": [m.high for m in q],
            "codebooks": [r.codebook for r in rs], "transductive": any(r.fit_includes_test for r in rs), "marker": MARKERS[i % len(MARKERS)],
        })
    return series


def rate_distortion_figure(cont: Evaluation, books: list[Evaluation], path: Path, records: dict[str, dict[str, Any]] | None = None,
                           x: str = "bits") -> None:
    """PSNR against bits per image, with 95% CIs; the continuous model as a horizontal line.

    One line per codebook recipe (:func:`rate_distortion_series`): colour = method, marker = series (a legend entry each),
    open markers and dashed line = fit set includes test. Equal rates share one x position.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = rate_distortion_series(books, records, x)
    fig, ax = plt.subplots(figsize=(9.5, 4.5), dpi=120)
    c = cont.continuous.psnr_db
    ax.set_xscale("log", base=2)
    kind = cont.model.quantizer
    own = f"trained {kind} ({cont.bits_per_image:g} bits/image)" if kind else "continuous (mu)"
    ax.axhline(c.mean, color="black", lw=1.2, label=f"{own}, {c.mean:.2f} dB")
    ax.axhspan(c.low, c.high, color="black", alpha=0.08)
    methods = sorted({s["method"] for s in series})
    colours = dict(zip(methods, plt.get_cmap("tab10").colors))
    for s in series:
        err = [[y - lo for y, lo in zip(s["y"], s["low"])], [hi - y for y, hi in zip(s["y"], s["high"])]]
        col = colours.get(s["method"], "0.3")
        ax.errorbar(
            s["x"], s["y"], yerr=err, marker=s["marker"], ms=6, capsize=3, color=col, ls=("--" if s["transductive"] else "-") if len(s["x"]) > 1 else "none",
            mfc="white" if s["transductive"] else col, alpha=0.9, label=s["label"],
        )
    rates = sorted({x for s in series for x in s["x"]})
    if rates and x == "bits":
        ax.set_xticks(rates, [f"{b:g}" for b in rates])
        ax.minorticks_off()
    ax.set_xlabel("bits per image (nominal)" if x == "bits" else "bits per pixel (real: file bytes x 8, header included)")
    ax.set_ylabel("test PSNR vs ground truth (dB)")
    ax.set_title(f"{cont.dataset}: post-hoc codebooks, rate against distortion")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, frameon=False)
    fig.tight_layout()
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def write_codebook_table(run_dir: str | Path | Run, out_dir: str | Path | None = None, split: str = "test", x: str = "bits") -> dict[str, Path]:
    """Write the table (Markdown, tidy CSV) and the rate-distortion PNG; returns their paths."""
    run = Run.open(run_dir)
    out = Path(out_dir) if out_dir else run.report_dir
    cont, books = load_results(run, split)
    rows = table_rows(cont, books, split)
    paths = {"markdown": out / f"codebooks-{split}.md", "csv": out / f"codebooks-{split}.csv", "figure": out / f"rate-distortion-{split}.png"}
    with atomic_write(paths["markdown"]) as tmp:
        tmp.write_text(markdown(rows, cont, books, split))
    write_text(paths["csv"], to_csv(tidy_rows(cont, books, split), TIDY_COLUMNS))
    records = {}
    for name in {r.codebook for r in books}:  # the codebooks' settings (graph k, symmetry) for the figure's recipes
        record_path = run.codebook_files(name)[1] if name in run.codebook_names() else None
        if record_path is not None and record_path.exists():
            records[name] = read_json(record_path, what="codebook record")
    rate_distortion_figure(cont, books, paths["figure"], records, x)
    return paths
