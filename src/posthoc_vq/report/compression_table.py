"""The compound-compression table: latent size (any trained runs) x weight bits (32, 8, 4).

For every run and bit width, one row with the size of the file that would ship (the
run's fp32 ``model.safetensors`` for 32 bits, the packed file otherwise), its ratio to
the run's own fp32 file and to the *reference* (the largest fp32 file among the runs,
so the study's "latent reduction x INT4" compound factor is read off directly), and the
measured test quality: PSNR/SSIM against ground truth and the PSNR change against the
run's fp32 model, with 95% CIs. Untrained runs are refused; unconverged runs are flagged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from posthoc_vq.config import WeightsConfig
from posthoc_vq.errors import ConfigError
from posthoc_vq.evaluation.reconstruction import evaluate_continuous
from posthoc_vq.evaluation.weights import evaluate_weights
from posthoc_vq.io import atomic_write, read_json, write_json
from posthoc_vq.quantize.compressed import compress_run, require_trained
from posthoc_vq.report.tables import markdown_table, write_csv
from posthoc_vq.train import load_model
from posthoc_vq.train.checkpoint import MODEL_FILE

COLUMNS = (
    "run", "latent dim", "parameters", "weight bits", "file bytes", "vs own fp32", "compound factor", "PSNR (dB)",
    "PSNR 95% CI", "SSIM", "PSNR change vs fp32 (dB)", "change 95% CI", "converged",
)


def _ci(m: dict[str, Any], digits: int) -> str:
    return f"[{m['low']:.{digits}f}, {m['high']:.{digits}f}]"


def compression_rows(runs: Sequence[str | Path], bits: Sequence[int] = (32, 8, 4), *, split: str = "test", data_dir: str | None = None) -> list[dict[str, Any]]:
    """Measure every (run, bits) cell; packed files are (re)made with the default settings for each bit width.

    Returns
    -------
    One dict per cell with the raw numbers (``file_bytes``, ``ratio_own``, ``compound_factor``,
    ``psnr_db``, ``ssim``, ``psnr_change_db`` as mean/CI dicts, ``converged``, ``warnings``).
    """
    if not runs:
        raise ConfigError("compression table: give at least one run directory")
    for b in bits:
        if b not in (32, 8, 4):
            raise ConfigError(f"compression table: weight bits must be among 32, 8, 4 (got {b})")
    cells = []
    for run in runs:
        run = Path(run)
        _, meta = load_model(run)
        require_trained(run, meta)
        cells.append((run, meta, (run / MODEL_FILE).stat().st_size))
    reference = max(size for _, _, size in cells)
    rows = []
    for run, meta, fp32_size in cells:
        cont = evaluate_continuous(run, split=split, data_dir=data_dir)
        for b in bits:
            if b == 32:
                size, quality, change, warnings = fp32_size, cont["continuous"], None, cont["warnings"]
            else:
                name, _ = compress_run(run, WeightsConfig(bits=b))
                result = evaluate_weights(run, name, split=split, data_dir=data_dir)
                size, quality, change, warnings = result["size"]["packed_file_bytes"], result["quantized"], result["psnr_change_db"], result["warnings"]
            rows.append({
                "run": str(run), "latent_dim": cont["model"]["latent_dim"], "parameters": meta["num_parameters"], "bits": b,
                "file_bytes": size, "ratio_own": size / fp32_size, "compound_factor": reference / size,
                "psnr_db": quality["psnr_db"], "ssim": quality["ssim"], "psnr_change_db": change,
                "converged": cont["training"].get("converged"), "warnings": warnings,
            })
    return rows


def format_rows(rows: list[dict[str, Any]]) -> list[dict[str, str]]:
    out = []
    for r in rows:
        c = r["psnr_change_db"]
        out.append({
            "run": r["run"], "latent dim": str(r["latent_dim"]), "parameters": f"{r['parameters']:,}", "weight bits": str(r["bits"]),
            "file bytes": f"{r['file_bytes']:,}", "vs own fp32": f"{100 * r['ratio_own']:.1f}%", "compound factor": f"{r['compound_factor']:.1f}x",
            "PSNR (dB)": f"{r['psnr_db']['mean']:.2f}", "PSNR 95% CI": _ci(r["psnr_db"], 2), "SSIM": f"{r['ssim']['mean']:.4f}",
            "PSNR change vs fp32 (dB)": "-" if c is None else f"{c['mean']:+.3f}", "change 95% CI": "-" if c is None else _ci(c, 3),
            "converged": {True: "yes", False: "NO (flagged)", None: "unknown"}[r["converged"]],
        })
    return out


def write_compression_table(runs: Sequence[str | Path], out_dir: str | Path, bits: Sequence[int] = (32, 8, 4), *, split: str = "test", data_dir: str | None = None) -> dict[str, Path]:
    """Measure the table and write ``compression-<split>.md``, ``.csv`` and ``.json`` into ``out_dir``."""
    out = Path(out_dir)
    rows = compression_rows(runs, bits, split=split, data_dir=data_dir)
    table = format_rows(rows)
    notes = [
        f"{split} split. File bytes: size on disk of the file that ships (fp32 model.safetensors, or the packed safetensors file). "
        "Compound factor: the largest fp32 file among these runs divided by this file.",
        "PSNR/SSIM of decoded outputs in [0, 1] against ground truth; PSNR change: per-image PSNR of the weight-quantized "
        "model minus that of the run's fp32 model (95% CI over images). Defaults: INT8 per-channel symmetric, INT4 groups of 32 symmetric.",
    ]
    flagged = [r["run"] for r in rows if r["converged"] is False and r["bits"] == bits[0]]
    if flagged:
        notes.append(f"NOT CONVERGED (stopped at max epochs), so their quality is not a fair comparison: {', '.join(flagged)}")
    paths = {"markdown": out / f"compression-{split}.md", "csv": out / f"compression-{split}.csv", "json": out / f"compression-{split}.json"}
    with atomic_write(paths["markdown"]) as tmp:
        tmp.write_text(markdown_table(COLUMNS, table) + "\n" + "\n".join(f"- {n}" for n in notes) + "\n")
    write_csv(paths["csv"], COLUMNS, table)
    write_json(paths["json"], {"split": split, "bits": list(bits), "rows": rows})
    return paths


def rows_from_evaluations(run_dir: str | Path, split: str = "test") -> list[dict[str, Any]]:
    """Rows in the format of :func:`compression_rows` for one run, read from its stored evaluations (nothing is measured).

    One fp32 row (from ``eval/continuous-<split>.json``) and one per ``eval/weights-<name>[-<codebook>]-<split>.json``;
    ``run`` holds the artifact's label (``fp32``, the weights name, ``+ codebook`` when one sat between encoder and decoder).
    The compound factor is relative to this run's fp32 file. Returns [] when the run has no continuous evaluation.
    """
    run_dir = Path(run_dir)
    cont_path = run_dir / "eval" / f"continuous-{split}.json"
    if not cont_path.exists():
        return []
    cont = read_json(cont_path, what="evaluation result")
    fp32 = (run_dir / MODEL_FILE).stat().st_size
    base = {"latent_dim": cont["model"]["latent_dim"], "parameters": cont["model"]["num_parameters"], "converged": cont["training"].get("converged")}
    rows = [{**base, "run": "fp32", "bits": 32, "file_bytes": fp32, "ratio_own": 1.0, "compound_factor": 1.0, "psnr_db": cont["continuous"]["psnr_db"],
             "ssim": cont["continuous"]["ssim"], "psnr_change_db": None, "warnings": cont.get("warnings", [])}]
    for path in sorted((run_dir / "eval").glob(f"weights-*-{split}.json")):
        r = read_json(path, what="weight evaluation")
        size = r["size"]["packed_file_bytes"]
        book = codebook_block(r)
        block, label = (r, r["weights"]) if book is None else (book, f"{r['weights']} + {book['name']}")
        rows.append({**base, "run": label, "bits": r["bits"], "file_bytes": size, "ratio_own": size / fp32, "compound_factor": fp32 / size,
                     "psnr_db": block["quantized"]["psnr_db"], "ssim": block["quantized"]["ssim"], "psnr_change_db": block["psnr_change_db"],
                     "warnings": r.get("warnings", [])})
    return rows


def codebook_block(result: dict[str, Any]) -> dict[str, Any] | None:
    """The with-codebook part of a weight evaluation (``with_codebook``; older files kept it under ``codebook``), or None."""
    block = result.get("with_codebook") or result.get("codebook")
    return block if isinstance(block, dict) else None
