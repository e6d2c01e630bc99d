"""The report of one run directory: header, training, reconstructions, codebooks, rate-distortion,
interpolation, tables, claims and limitations.

Reads the run's files (``config.json``, ``model.json``, ``history.json``, ``train_summary.json``,
``provenance.json``, ``eval/*.json``, ``codebooks/``, ``weights/``) and runs its models on a
few test images; writes only into the report folder. Anything absent becomes a *missing*
note naming the command that would produce it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from posthoc_vq.errors import DatasetError, PosthocVQError
from posthoc_vq.io import read_json
from posthoc_vq.report import compression_table
from posthoc_vq.report.codebook_figures import codebook_figure, codebook_view
from posthoc_vq.report.codebook_table import COLUMNS as STUDY_COLUMNS
from posthoc_vq.report.codebook_table import load_results, rate_distortion_figure, table_rows
from posthoc_vq.report.document import Figure, Section, Table
from posthoc_vq.report.figures import training_curves
from posthoc_vq.report.image_figures import ImageRow, image_grid
from posthoc_vq.report.limitations import run_limitations, warning_lines
from posthoc_vq.report.samples import (
    INTERPOLATION_STEPS, RunModels, interpolation_rows, open_run_models, reconstruction_rows, test_codes,
)
from posthoc_vq.train import load_run_config

Step = Callable[[str], None]
T_TITLES = [f"t={i / (INTERPOLATION_STEPS - 1):.2f}" for i in range(INTERPOLATION_STEPS)]
GRID_CAPTION = ("Fixed {split} images (the first of each class), decoded by the continuous model, through each codebook and by each "
                "weight-quantized model. The numbers under a name are its mean PSNR over the whole {split} split (and its bits per image).")
INTERP_CAPTION = ("The straight line between the posterior means of {split} images #{a} (class {ca}) and #{b} (class {cb}), decoded "
                  "continuously and with every point snapped to each codebook's nearest code (piecewise constant, so it changes in jumps).")


@dataclass
class RunFiles:
    """What a run directory holds (None or empty where a file is absent)."""

    run_dir: Path
    split: str
    config: Any
    meta: dict[str, Any] | None
    history: list[dict[str, Any]] | None
    summary: dict[str, Any] | None
    provenance: dict[str, Any] | None
    continuous: dict[str, Any] | None
    codebook_evals: list[dict[str, Any]] = field(default_factory=list)
    weight_evals: list[dict[str, Any]] = field(default_factory=list)
    codebooks: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> codebooks/<name>.json
    weights: list[str] = field(default_factory=list)


def _optional(path: Path, what: str) -> Any:
    return read_json(path, what=what) if path.exists() else None


def read_run(run_dir: str | Path, split: str = "test") -> RunFiles:
    """Read a run directory's files. Raises PosthocVQError when ``run_dir`` is not a run directory."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise PosthocVQError(f"run directory not found: {run_dir}; train one with `posthoc-vq train --out {run_dir}`")
    if not (run_dir / "config.json").exists():
        raise PosthocVQError(f"{run_dir} is not a run directory (no config.json); give a folder written by `posthoc-vq train`")
    cont = _optional(run_dir / "eval" / f"continuous-{split}.json", "evaluation result")
    books = load_results(run_dir, split)[1] if cont else []
    weight_evals = [read_json(p, what="weight evaluation") for p in sorted((run_dir / "eval").glob(f"weights-*-{split}.json"))]
    return RunFiles(
        run_dir, split, load_run_config(run_dir), _optional(run_dir / "model.json", "model metadata"),
        _optional(run_dir / "history.json", "training history"), _optional(run_dir / "train_summary.json", "training summary"),
        _optional(run_dir / "provenance.json", "provenance"), cont, books, weight_evals,
        {p.stem: read_json(p, what="codebook record") for p in sorted((run_dir / "codebooks").glob("*.json"))},
        sorted(p.stem for p in (run_dir / "weights").glob("*.safetensors")),
    )


def run_header(rf: RunFiles) -> list[tuple[str, str]]:
    """(field, value) pairs: dataset, model, parameters, seeds, fit sets, latents, versions, commit, dates."""
    c, prov = rf.config, rf.provenance or {}
    m = c.model
    fit = sorted({str(r["fit_on"]) for r in rf.codebook_evals})
    kinds = sorted({f"{r['latents']}" + (f" (seed {r['latent_seed']})" if r.get("latent_seed") is not None else "") for r in rf.codebook_evals})
    versions = prov.get("versions") or {}
    return [
        ("dataset", f"{c.data.name} (val fraction {c.data.val_fraction}, split seed {c.data.split_seed}); report on the {rf.split} split"),
        ("model", f"{m.family} VAE, latent {m.latent_dim}, channels {list(m.channels)}, beta {m.beta}, {m.recon_loss} reconstruction loss"),
        ("parameters", f"{rf.meta['num_parameters']:,}" if rf.meta else "unknown (no model.json)"),
        ("seeds", f"training seed {c.seed}, data split seed {c.data.split_seed}; codebook random_state "
                  + (", ".join(sorted({str((m.get("quantize") or m.get("params") or {}).get("random_state")) for m in rf.codebooks.values()})) or "- (no codebook)")),
        ("fit set", ", ".join(fit) or "no evaluated codebook"),
        ("latent choice", ", ".join(kinds) or "no evaluated codebook"),
        ("versions", ", ".join(f"{k} {v}" for k, v in versions.items() if v) + (f", python {prov['python']}" if prov.get("python") else "") or "unknown"),
        ("git commit", str(prov.get("git_commit") or "unknown")),
        ("trained", str(prov.get("created") or "unknown")),
    ]


def training_section(rf: RunFiles, out: Path) -> Section:
    """Training summary and the curves figure (train/val loss, reconstruction, KL; best epoch and stop marked)."""
    s = Section("training", "Training")
    if rf.summary:
        t = rf.summary
        s.paragraphs.append(f"{t.get('epochs')} epochs, best validation loss {t.get('best_val_loss', float('nan')):.4g} at epoch {t.get('best_epoch')}; "
                            f"stop reason: {t.get('stop_reason')}; converged: {t.get('converged')}; {t.get('steps')} optimiser steps"
                            + (f" in {t['seconds']:.0f} s." if t.get("seconds") else "."))
    else:
        s.missing.append(f"{rf.run_dir / 'train_summary.json'} not found: training did not finish (resume with `posthoc-vq train --resume --out {rf.run_dir}`).")
    if rf.history:
        training_curves(rf.history, rf.summary, out / "training-curves.png", f"{rf.run_dir.name}: training curves")
        s.figures.append(Figure("training-curves.png", "Training curves",
                                "Train (dashed) and validation (solid) loss, reconstruction term and KL per epoch; the dotted green line is the "
                                "best validation epoch (the weights kept), the grey line the early stop, a red line a stop at the epoch limit."))
    else:
        s.missing.append(f"{rf.run_dir / 'history.json'} not found: no training curves.")
    return s


def psnr_notes(rf: RunFiles) -> dict[str, str]:
    """Row name (continuous, codebook, weights) -> its mean PSNR on the split (and bits per image), from the evaluations."""
    notes = {}
    if rf.continuous:
        notes["continuous"] = f"{rf.continuous['continuous']['psnr_db']['mean']:.2f} dB"
    notes |= {r["codebook"]: f"{r['quantized']['psnr_db']['mean']:.2f} dB, {r['bits_per_image']:g} bits" for r in rf.codebook_evals}
    notes |= {r["weights"]: f"{r['quantized']['psnr_db']['mean']:.2f} dB" for r in rf.weight_evals if compression_table.codebook_block(r) is None}
    return notes


def codebook_figures(rf: RunFiles, rm: RunModels, out: Path, prefix: str = "") -> list[Figure]:
    """One usage (and graph) figure per codebook of the run, from the codes of the whole split; files ``<prefix>codebook-<name>.png``."""
    figures = []
    for name, codebook, meta in rm.codebooks:
        codes, labels = test_codes(rm, name, meta)
        view = codebook_view(name, codebook, meta, codes, labels, rf.split)
        file = f"{prefix}codebook-{name}.png"
        codebook_figure(view, out / file)
        graph = ("; kNN graph degree distribution and component sizes from the stored adjacency" if view.degrees is not None else
                 "; graph statistics unavailable (the estimator keeps no kNN graph)" if meta.get("method") in ("geodesic", "hybrid") else "")
        figures.append(Figure(file, f"Codebook {name}",
                              f"Fitted on {meta.get('fit_on')} ({meta.get('latents')} latents); usage on the {rf.split} split: "
                              f"{', '.join(str(d) for d in view.dead)} dead of {view.counts.shape[1]} codes{graph}."))
    return figures


def image_sections(rf: RunFiles, rm: RunModels, out: Path) -> list[Section]:
    """Reconstruction grid, codebook figures and interpolation strip (they need the models)."""
    idx = rm.idx
    grid = Section("reconstructions", "Reconstructions")
    rows = [ImageRow("ground truth", rm.x[idx])] + reconstruction_rows(rm, psnr_notes(rf))
    image_grid(rows, out / "reconstructions.png", f"{rf.run_dir.name}: the same {len(idx)} {rf.split} images through every model",
               [f"#{i} class {rm.labels[i]}" for i in idx])
    grid.figures.append(Figure("reconstructions.png", "Reconstruction grid", GRID_CAPTION.format(split=rf.split)))
    if not rm.codebooks:
        grid.missing.append(no_codebook(rf.run_dir))
    if not rm.weights:
        grid.missing.append(f"no INT8/INT4 weights in {rf.run_dir / 'weights'}: make them with `posthoc-vq compress-weights {rf.run_dir} --bits 8` (and --bits 4).")

    books = Section("codebooks", "Codebooks", figures=codebook_figures(rf, rm, out))
    if not rm.codebooks:
        books.missing.append(no_codebook(rf.run_dir))

    interp = Section("interpolation", "Latent interpolation")
    a, b = int(idx[0]), int(idx[-1])
    image_grid(interpolation_rows(rm), out / "interpolation.png", f"{rf.run_dir.name}: {rf.split} image #{a} to #{b}", T_TITLES)
    interp.figures.append(Figure("interpolation.png", "Latent interpolation strip", INTERP_CAPTION.format(split=rf.split, a=a, b=b, ca=rm.labels[a], cb=rm.labels[b])))
    if not rm.codebooks:
        interp.missing.append("no codebook: only the continuous strip is shown.")
    return [grid, books, interp]


def no_codebook(run_dir: Path) -> str:
    """The missing note of a run without codebooks."""
    return f"no codebook in {run_dir / 'codebooks'}: fit one with `posthoc-vq quantize {run_dir}`."


def rate_distortion_section(rf: RunFiles, out: Path) -> Section:
    """PSNR vs bits per image of the evaluated codebooks (the study figure of :mod:`codebook_table`)."""
    s = Section("rate-distortion", "Rate-distortion")
    if rf.continuous and rf.codebook_evals:
        rate_distortion_figure(rf.continuous, rf.codebook_evals, out / "rate-distortion.png")
        s.figures.append(Figure("rate-distortion.png", "Rate-distortion",
                                f"{rf.split} PSNR against ground truth vs bits per image, mean with 95% CI over images; the continuous model is the "
                                "black line (its CI shaded). Open markers and dashed lines: codebooks fitted on data that includes the test split."))
    else:
        s.missing.append(_eval_missing(rf) if not rf.continuous else
                         f"no evaluated codebook on {rf.split}: `posthoc-vq quantize {rf.run_dir}` then `posthoc-vq evaluate {rf.run_dir} --codebook NAME`.")
    return s


def _eval_missing(rf: RunFiles) -> str:
    return f"{rf.run_dir / 'eval' / f'continuous-{rf.split}.json'} not found: run `posthoc-vq evaluate {rf.run_dir} --split {rf.split}`."


def tables_section(rf: RunFiles) -> Section:
    """The study table (codebooks) and the compression table (weights), from the stored evaluations."""
    s = Section("tables", "Tables")
    if not rf.continuous:
        s.missing.append(_eval_missing(rf))
        return s
    s.tables.append(Table(STUDY_COLUMNS, table_rows(rf.continuous, rf.codebook_evals, rf.split), "Study table: codebooks", key="study",
                          notes=[f"PSNR/SSIM of decoded outputs in [0, 1] against ground truth on the {rf.split} split, mean and 95% CI over images; "
                                 "penalty: quantized against continuous output; usage, entropy and perplexity on the same split; graph statistics of graph methods."]))
    if not rf.codebook_evals:
        s.missing.append(f"no evaluated codebook: the study table has the continuous row only (`posthoc-vq evaluate {rf.run_dir} --codebook NAME`).")
    rows = compression_table.rows_from_evaluations(rf.run_dir, rf.split)
    s.tables.append(Table(compression_table.COLUMNS, compression_table.format_rows(rows), "Compression table: weights", key="compression",
                          notes=["File bytes: size on disk of the file that ships (fp32 model.safetensors or the packed file). PSNR change: per-image "
                                 "PSNR of the weight-quantized model minus the fp32 model's, 95% CI over images; '+ codebook' rows run the codebook "
                                 "between the quantized encoder and decoder, against the fp32 model with the same codebook."]))
    if len(rows) == 1:
        s.missing.append(f"no evaluated INT8/INT4 weights: `posthoc-vq compress-weights {rf.run_dir} --bits 8` (and --bits 4).")
    return s


def claims_section(rf: RunFiles) -> Section:
    """No verdicts for a single run; its limitations, written from the data."""
    s = Section("claims", "Claims and limitations")
    s.paragraphs.append("A single run makes no comparative claim: verdicts (validated, no significant difference, insufficient evidence, invalid) "
                        "come from sweeps over seeds (`posthoc-vq ablate`, then `posthoc-vq report SWEEP`). What this run's numbers can and cannot support:")
    sources = ([("continuous", rf.continuous)] if rf.continuous else []) + [(r["codebook"], r) for r in rf.codebook_evals] \
        + [(r["weights"] + (f"+{b['name']}" if (b := compression_table.codebook_block(r)) else ""), r) for r in rf.weight_evals]
    s.items = run_limitations(
        meta=rf.meta, summary=rf.summary, seed=rf.config.seed, split=rf.split, codebook_evals=rf.codebook_evals, codebooks=list(rf.codebooks),
        evaluated={r["codebook"] for r in rf.codebook_evals}, warnings=warning_lines(sources),
        git_commit=(rf.provenance or {}).get("git_commit"),
    )
    if not rf.continuous:
        s.missing.append(_eval_missing(rf))
    return s


def run_sections(rf: RunFiles, out: Path, *, data_dir: str | None = None, step: Step = lambda _: None) -> list[Section]:
    """Every section of a run report, figures written into ``out``."""
    step("training curves")
    sections = [training_section(rf, out)]
    if rf.meta is None:
        missing = Section("reconstructions", "Reconstructions, codebooks, interpolation")
        missing.missing.append(f"{rf.run_dir / 'model.json'} not found: the run has no trained model yet, so no images can be decoded.")
        sections.append(missing)
    else:
        step("decoding images and assigning codes")
        try:
            rm = open_run_models(rf.run_dir, rf.split, data_dir)
        except DatasetError as err:
            rm = None
            missing = Section("reconstructions", "Reconstructions, codebooks, interpolation")
            missing.missing.append(f"the run's dataset could not be loaded, so no images are shown ({err}); give --data-dir.")
            sections.append(missing)
        if rm is not None:
            sections += image_sections(rf, rm, out)
    step("tables")
    return sections + [rate_distortion_section(rf, out), tables_section(rf), claims_section(rf)]
