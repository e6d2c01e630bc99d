"""The compound-compression measurement: latent size (any trained runs) x weight bits (32, 8, 4).

``posthoc-vq compress-table RUN [RUN ...] --out DIR`` measures here and stores the numbers in
``DIR/compression-<split>.json``; :mod:`posthoc_vq.report.compression_table` turns that file into
the Markdown and CSV table (and does nothing else).

For every run and bit width, one row with the size of the file that would ship (the run's fp32
``model.safetensors`` for 32 bits, the packed file otherwise), its ratio to the run's own fp32
file and to the *reference* (the largest fp32 file among the runs, so the study's "latent
reduction x INT4" compound factor is read off directly), and the measured quality on the split:
PSNR/SSIM against ground truth and the PSNR change against the run's fp32 model, with 95% CIs.
Untrained runs are refused before anything is measured; unconverged runs are flagged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from posthoc_vq.config import WeightsConfig
from posthoc_vq.errors import ConfigError
from posthoc_vq.evaluation.reconstruction import evaluate_continuous
from posthoc_vq.evaluation.weights import evaluate_weights
from posthoc_vq.io import write_json
from posthoc_vq.progress import ProgressCallback, report, reporting
from posthoc_vq.quantize.compressed import compress_run, require_trained
from posthoc_vq.results import CompressionRow, CompressionTable
from posthoc_vq.run import Run

BITS = (32, 8, 4)


def compression_file(out_dir: str | Path, split: str = "test") -> Path:
    """Where ``compress-table`` stores its measurements: ``<out>/compression-<split>.json``."""
    return Path(out_dir) / f"compression-{split}.json"


def compression_rows(runs: Sequence[str | Path | Run], bits: Sequence[int] = BITS, *, split: str = "test", data_dir: str | None = None,
                     progress: ProgressCallback | None = None) -> list[CompressionRow]:
    """Measure every (run, bits) cell; packed files are (re)made with the default settings for each bit width.

    ``progress``: an optional callback (:mod:`posthoc_vq.progress`) told how many cells are measured (and how far each one's encoding and decoding has got).

    Returns
    -------
    One :class:`~posthoc_vq.results.CompressionRow` per cell (``file_bytes``, ``ratio_own``, ``compound_factor``,
    ``psnr_db``, ``ssim``, ``psnr_change_db`` as means with CIs, ``converged``, ``warnings``).
    """
    if not runs:
        raise ConfigError("compression table: give at least one run directory")
    for b in bits:
        if b not in BITS:
            raise ConfigError(f"compression table: weight bits must be among 32, 8, 4 (got {b})")
    cells = []
    for path in runs:  # every run is checked before anything is measured
        run = Run.open(path)
        meta = run.model_record()
        require_trained(run.root, meta)
        run.verified_model_sha256()  # a missing or modified model file fails here, not half-way through the table
        cells.append((run, meta, run.model_file.stat().st_size))
    reference = max(size for _, _, size in cells)
    bits = sorted(dict.fromkeys(int(b) for b in bits), reverse=True)  # each run's rows widest first: 32 (fp32), 8, 4
    with reporting(progress):
        return _measure(cells, bits, reference, split, data_dir)


def _measure(cells: list[tuple[Run, dict[str, Any], int]], bits: Sequence[int], reference: int, split: str, data_dir: str | None) -> list[CompressionRow]:
    rows: list[CompressionRow] = []
    n_cells = len(cells) * len(bits)
    report("compression table cells", 0, n_cells)
    for run, meta, fp32_size in cells:
        cont = evaluate_continuous(run.root, split=split, data_dir=data_dir)
        for b in bits:
            if b == 32:
                size, quality, change, warnings = fp32_size, cont.continuous, None, cont.warnings
            else:
                name, _ = compress_run(run.root, WeightsConfig(bits=b))
                result = evaluate_weights(run.root, name, split=split, data_dir=data_dir)
                size, quality, change, warnings = result.size["packed_file_bytes"], result.quantized, result.psnr_change_db, result.warnings
            rows.append(CompressionRow(
                run=str(run.root), latent_dim=cont.model.latent_dim, parameters=meta["num_parameters"], bits=b,
                file_bytes=size, ratio_own=size / fp32_size, compound_factor=reference / size,
                psnr_db=quality.psnr_db, ssim=quality.ssim, psnr_change_db=change, converged=cont.training.converged, warnings=warnings,
            ))
            report("compression table cells", len(rows), n_cells)
    return rows


def write_compression_results(runs: Sequence[str | Path | Run], out_dir: str | Path, bits: Sequence[int] = BITS, *, split: str = "test",
                              data_dir: str | None = None, progress: ProgressCallback | None = None) -> Path:
    """Measure the table and store it as ``<out_dir>/compression-<split>.json`` (``split``, ``bits``, ``rows``); returns the path."""
    rows = compression_rows(runs, bits, split=split, data_dir=data_dir, progress=progress)
    return write_json(compression_file(out_dir, split), CompressionTable(split=split, bits=list(bits), rows=rows).to_json())
