"""The compound-compression table, formatted from stored measurements (nothing is measured here).

Two sources, both files written by the commands that measure:

* ``compression-<split>.json`` of ``posthoc-vq compress-table`` (measured by
  :mod:`posthoc_vq.evaluation.compression`): :func:`write_compression_table` turns it into
  ``compression-<split>.md`` and ``.csv`` beside it;
* a run's own evaluations (``eval/continuous-<split>.json`` and ``eval/weights-*-<split>.json``):
  :func:`rows_from_evaluations` gives the run report's compression table.

:func:`format_rows` gives the Markdown's strings; :func:`tidy_rows` the CSV's numbers
(:data:`TIDY_COLUMNS`: sizes in bytes, ratios as fractions, each CI as two columns, empty
cells for what was not measured).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from posthoc_vq.errors import PosthocVQError
from posthoc_vq.io import atomic_write, read_json, write_text
from posthoc_vq.report.formats import to_csv
from posthoc_vq.report.tables import markdown_table
from posthoc_vq.records import check_record, read_evaluation
from posthoc_vq.results import CodebookComparison, CompressionRow, CompressionTable, Evaluation, MeanCI
from posthoc_vq.run import Run

COLUMNS = (
    "run", "latent dim", "parameters", "weight bits", "file bytes", "vs own fp32", "compound factor", "PSNR (dB)",
    "PSNR 95% CI", "SSIM", "PSNR change vs fp32 (dB)", "change 95% CI", "converged",
)
#: columns of the tidy CSV (``compression-<split>.csv``, ``--format csv``): numbers only, ratios as fractions, each CI as two columns
TIDY_COLUMNS = (
    "run", "latent_dim", "parameters", "weight_bits", "file_bytes", "ratio_own", "compound_factor", "psnr_db", "psnr_db_ci_low", "psnr_db_ci_high",
    "ssim", "psnr_change_db", "psnr_change_db_ci_low", "psnr_change_db_ci_high", "converged",
)


def _ci(m: MeanCI, digits: int) -> str:
    return f"[{m.low:.{digits}f}, {m.high:.{digits}f}]"


def order_by_bits(rows: list[CompressionRow]) -> list[CompressionRow]:
    """Rows ordered by weight bits as numbers, widest first: 32 (fp32), 8, 4 (never as strings, where int4 sorts before int8).

    ``compress-table`` rows (several per run directory) stay grouped by run, in their first order; a run report's rows
    (one label per row, all of one run) form one group. Within a bit width, rows without a codebook come before those
    with one (`` + `` in the label); the sort is stable otherwise.
    """
    runs = [r.run for r in rows]
    grouped = len(set(runs)) < len(runs)
    first = {run: i for i, run in reversed(list(enumerate(runs)))} if grouped else {}
    return sorted(rows, key=lambda r: (first.get(r.run, 0), -int(r.bits), " + " in str(r.run)))


def format_rows(rows: list[CompressionRow]) -> list[dict[str, str]]:
    """Rows of strings for the table from the stored numeric rows (a size that was not recorded is '-')."""
    out = []
    for r in order_by_bits(rows):
        c = r.psnr_change_db
        size, own, factor = r.file_bytes, r.ratio_own, r.compound_factor
        out.append({
            "run": r.run, "latent dim": str(r.latent_dim), "parameters": f"{r.parameters:,}", "weight bits": str(r.bits),
            "file bytes": "-" if size is None else f"{size:,}", "vs own fp32": "-" if own is None else f"{100 * own:.1f}%",
            "compound factor": "-" if factor is None else f"{factor:.1f}x",
            "PSNR (dB)": f"{r.psnr_db.mean:.2f}", "PSNR 95% CI": _ci(r.psnr_db, 2), "SSIM": f"{r.ssim.mean:.4f}",
            "PSNR change vs fp32 (dB)": "-" if c is None else f"{c.mean:+.3f}", "change 95% CI": "-" if c is None else _ci(c, 3),
            "converged": {True: "yes", False: "NO (flagged)", None: "unknown"}[r.converged],
        })
    return out


def tidy_rows(rows: list[CompressionRow]) -> list[dict[str, Any]]:
    """The stored numeric rows flattened for CSV (columns :data:`TIDY_COLUMNS`); None where nothing was recorded."""
    out = []
    for r in order_by_bits(rows):
        c = r.psnr_change_db
        out.append({
            "run": r.run, "latent_dim": r.latent_dim, "parameters": r.parameters, "weight_bits": r.bits, "file_bytes": r.file_bytes,
            "ratio_own": r.ratio_own, "compound_factor": r.compound_factor, "psnr_db": r.psnr_db.mean,
            "psnr_db_ci_low": r.psnr_db.low, "psnr_db_ci_high": r.psnr_db.high, "ssim": r.ssim.mean,
            "psnr_change_db": c and c.mean, "psnr_change_db_ci_low": c and c.low, "psnr_change_db_ci_high": c and c.high, "converged": r.converged,
        })
    return out


def compression_notes(data: CompressionTable) -> list[str]:
    """The notes under the table: what the columns mean, and the runs flagged as not converged."""
    split, bits = data.split, data.bits
    notes = [
        f"{split} split. File bytes: size on disk of the file that ships (fp32 model.safetensors, or the packed safetensors file). "
        "Compound factor: the largest fp32 file among these runs divided by this file.",
        "PSNR/SSIM of decoded outputs in [0, 1] against ground truth; PSNR change: per-image PSNR of the weight-quantized "
        "model minus that of the run's fp32 model (95% CI over images). Defaults: INT8 per-channel symmetric, INT4 groups of 32 symmetric.",
    ]
    flagged = [r.run for r in data.rows if r.converged is False and r.bits == bits[0]]
    if flagged:
        notes.append(f"NOT CONVERGED (stopped at max epochs), so their quality is not a fair comparison: {', '.join(flagged)}")
    return notes


def compression_markdown(data: CompressionTable) -> str:
    """``compression-<split>.md`` from the stored measurements ``data`` (``split``, ``bits``, ``rows``)."""
    return markdown_table(COLUMNS, format_rows(data.rows)) + "\n" + "\n".join(f"- {n}" for n in compression_notes(data)) + "\n"


def read_compression(source: str | Path, split: str = "test") -> tuple[Path, CompressionTable]:
    """(path, data) of ``compression-<split>.json``; ``source`` is the file or the folder ``compress-table`` wrote it into."""
    path = Path(source)
    if path.is_dir() or not path.suffix:
        path = path / f"compression-{split}.json"
    if not path.exists():
        raise PosthocVQError(f"{path} not found: measure the table first with `posthoc-vq compress-table RUN [RUN ...] --out {path.parent} --split {split}`")
    data = read_json(path, what="compression table")
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list) or "bits" not in data or "split" not in data:
        raise PosthocVQError(f"{path} is not a compression table written by `posthoc-vq compress-table` (it needs split, bits and rows); measure it again")
    return path, check_record(data, CompressionTable, path, "compression table")


def write_compression_table(source: str | Path, out_dir: str | Path | None = None, *, split: str = "test") -> dict[str, Path]:
    """Format stored measurements into ``compression-<split>.md`` and ``.csv`` (in ``out_dir``, default beside the JSON).

    Returns the paths of ``markdown``, ``csv`` and the source ``json``.
    """
    path, data = read_compression(source, split)
    out = Path(out_dir) if out_dir is not None else path.parent
    split = data.split
    paths = {"markdown": out / f"compression-{split}.md", "csv": out / f"compression-{split}.csv", "json": path}
    with atomic_write(paths["markdown"]) as tmp:
        tmp.write_text(compression_markdown(data))
    write_text(paths["csv"], to_csv(tidy_rows(data.rows), TIDY_COLUMNS))
    return paths


def fp32_file_bytes(run: Run, weight_evals: list[Evaluation]) -> int | None:
    """Size of the run's fp32 model file: as recorded by a weight evaluation, else measured on disk, else None (file gone, nothing recorded)."""
    for r in weight_evals:
        recorded = (r.size or {}).get("fp32_file_bytes")
        if recorded:
            return int(recorded)
    return run.model_file.stat().st_size if run.model_file.exists() else None


def rows_from_evaluations(run_dir: str | Path | Run, split: str = "test") -> list[CompressionRow]:
    """Rows in the format of ``compression-<split>.json`` for one run, read from its stored evaluations (nothing is measured).

    One fp32 row (from ``eval/continuous-<split>.json``) and one per ``eval/weights-<name>[-<codebook>]-<split>.json``;
    ``run`` holds the artifact's label (``fp32``, the weights name, ``+ codebook`` when one sat between encoder and decoder).
    The compound factor is relative to this run's fp32 file. Returns [] when the run has no continuous evaluation.
    """
    run = Run.open(run_dir)
    cont_path = run.eval_file(split)
    if not cont_path.exists():
        return []
    cont = read_evaluation(cont_path, what="evaluation result")
    weight_evals = [read_evaluation(p, what="weight evaluation") for p in run.weights_eval_files(split)]
    fp32 = fp32_file_bytes(run, weight_evals)
    ratio = lambda size: None if fp32 is None else size / fp32  # noqa: E731
    base = {"latent_dim": cont.model.latent_dim, "parameters": cont.model.num_parameters, "converged": cont.training.converged}
    rows = [CompressionRow(**base, run="fp32", bits=32, file_bytes=fp32, ratio_own=1.0, compound_factor=1.0, psnr_db=cont.continuous.psnr_db,
                           ssim=cont.continuous.ssim, psnr_change_db=None, warnings=cont.warnings)]
    for r in weight_evals:
        size = r.size["packed_file_bytes"]
        book = codebook_block(r)
        block, label = (r, r.weights) if book is None else (book, f"{r.weights} + {book.name}")
        rows.append(CompressionRow(**base, run=label, bits=r.bits, file_bytes=size, ratio_own=ratio(size), compound_factor=None if fp32 is None else fp32 / size,
                                   psnr_db=block.quantized.psnr_db, ssim=block.quantized.ssim, psnr_change_db=block.psnr_change_db, warnings=r.warnings))
    rows[1:] = sorted(rows[1:], key=lambda r: (-int(r.bits), " + " in r.run, r.run))  # INT8 before INT4; each without, then with a codebook
    return order_by_bits(rows)


def codebook_block(result: Evaluation) -> CodebookComparison | None:
    """The with-codebook part of a weight evaluation (``with_codebook``; older files' ``codebook`` is read into it), or None."""
    return result.with_codebook
