"""The report of one run directory: header, training, reconstructions, codebooks, rate-distortion,
interpolation, tables, claims and limitations.

Reads the run's files (``config.json``, ``model.json``, ``history.json``, ``train_summary.json``,
``provenance.json``, ``eval/*.json``, the codebook and weights records, and the sample sets that
``posthoc-vq evaluate`` stores in ``eval/samples-*.safetensors``) through :class:`~posthoc_vq.run.Run`;
it never loads a model, assigns a code or evaluates anything, and writes only into the report
folder. Anything absent becomes a *missing* note naming the command that would produce it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import warnings
from pathlib import Path
from typing import Any, Callable

from posthoc_vq.errors import CheckpointError, PosthocVQError
from posthoc_vq.records import CodebookRecord, PackedWeightsRecord, read_dict, read_evaluation
from posthoc_vq.report import compression_table
from posthoc_vq.report.codebook_figures import codebook_figure, view_from_samples
from posthoc_vq.report.codebook_table import COLUMNS as STUDY_COLUMNS
from posthoc_vq.report.codebook_table import StaleResultWarning, load_results, rate_distortion_figure, table_rows
from posthoc_vq.report.document import Figure, Section, Table
from posthoc_vq.report.figures import training_curves
from posthoc_vq.report.image_figures import ImageRow, image_grid
from posthoc_vq.report.limitations import run_limitations, warning_lines
from posthoc_vq.report.samples import StoredSamples, read_samples
from posthoc_vq.results import Evaluation
from posthoc_vq.run import CODEBOOKS, WEIGHTS, Run

Step = Callable[[str], None]
GRID_CAPTION = ("Fixed {split} images (the first of each class), decoded by the continuous model, through each codebook and by each "
                "weight-quantized model. The numbers under a name are its mean PSNR over the whole {split} split (and its bits per image).")
INTERP_CAPTION = ("The straight line between the posterior means of {split} images #{a} (class {ca}) and #{b} (class {cb}), decoded "
                  "continuously and with every point snapped to each codebook's nearest code (piecewise constant, so it changes in jumps).")


def t_titles(steps: int) -> list[str]:
    """Column titles of an interpolation strip of ``steps`` points."""
    return [f"t={i / (steps - 1):.2f}" for i in range(steps)]


@dataclass
class RunFiles:
    """What a run directory holds (None or empty where a file is absent)."""

    run: Run
    split: str
    config: Any
    meta: dict[str, Any] | None
    history: list[dict[str, Any]] | None
    summary: dict[str, Any] | None
    provenance: dict[str, Any] | None
    continuous: Evaluation | None
    codebook_evals: list[Evaluation] = field(default_factory=list)
    weight_evals: list[Evaluation] = field(default_factory=list)
    codebooks: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> codebooks/<name>/codebook.json
    weights: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> weights/<name>/weights.json
    samples: StoredSamples | None = None
    stale_continuous: bool = False  # its continuous evaluation measured another version of the model: left out, said so

    @property
    def run_dir(self) -> Path:
        return self.run.root


def read_run(run_dir: str | Path | Run, split: str = "test") -> RunFiles:
    """Read a run directory's stored files. Raises PosthocVQError when ``run_dir`` is not a run directory."""
    try:
        run = Run.open(run_dir)
    except CheckpointError as err:
        raise PosthocVQError(str(err)) from None
    cont_path = run.eval_file(split)
    cont = read_evaluation(cont_path, what="evaluation result") if cont_path.exists() else None
    meta = run.model_record() if run.model_record_file.exists() else None
    measured = cont.model.sha256 if cont is not None else None
    stale = measured is not None and meta is not None and measured != meta.get("sha256")
    cont = None if stale else cont  # a number of another model is never shown as this one's: the report says so instead
    # checked records: a codebook.json or weights.json of the wrong shape is a one-line error naming it, never a traceback
    codebooks = {n: read_dict(run.codebook_files(n)[1], CodebookRecord, "codebook record") for n in run.codebook_names()}
    weights = {n: read_dict(run.weights_files(n)[1], PackedWeightsRecord, "packed-weight record") for n in run.weights_names()}
    rf = RunFiles(
        run, split, run.config(), meta, run.history(), run.summary(), run.provenance(), cont,
        load_results(run, split)[1] if cont else [], _current_weight_evals(run, split, meta, weights),
        codebooks, weights, stale_continuous=stale,
    )
    rf.samples = read_samples(run, split, model_sha=(meta or {}).get("sha256"), codebooks=codebooks, weights=weights)
    return rf


def _current_weight_evals(run: Run, split: str, meta: dict[str, Any] | None, weights: dict[str, dict[str, Any]]) -> list[Evaluation]:
    """The stored evaluations of packed weights that measured the run's model and the weights as they are now; the others
    are left out with a :class:`~posthoc_vq.report.codebook_table.StaleResultWarning`."""
    out = []
    for path in run.weights_eval_files(split):
        result = read_evaluation(path, what="weight evaluation")
        measured, packed = result.model.sha256, result.weights_sha256
        current = weights.get(result.weights, {}).get("sha256")
        if (measured is not None and meta is not None and measured != meta.get("sha256")) or (packed is not None and packed != current):
            book = f" --codebook {result.with_codebook.name}" if result.with_codebook is not None else ""
            warnings.warn(f"{path} measured another version of the model or of packed weights '{result.weights}' and is left out; "
                          f"evaluate again: `posthoc-vq evaluate {run.root} --weights {result.weights}{book} --split {split}`", StaleResultWarning, stacklevel=2)
            continue
        out.append(result)
    return out


def run_header(rf: RunFiles) -> list[tuple[str, str]]:
    """(field, value) pairs: dataset, model, parameters, seeds, fit sets, latents, versions, commit, dates."""
    c, prov = rf.config, rf.provenance or {}
    m = c.model
    fit = sorted({str(r.fit_on) for r in rf.codebook_evals})
    kinds = sorted({f"{r.latents}" + (f" (seed {r.latent_seed})" if r.latent_seed is not None else "") for r in rf.codebook_evals})
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
        s.missing.append(f"{rf.run.summary_file} not found: training did not finish (resume with `posthoc-vq train --resume --out {rf.run_dir}`).")
    if rf.history:
        training_curves(rf.history, rf.summary, out / "training-curves.png", f"{rf.run_dir.name}: training curves")
        s.figures.append(Figure("training-curves.png", "Training curves",
                                "Train (dashed) and validation (solid) loss, reconstruction term and KL per epoch; the dotted green line is the "
                                "best validation epoch (the weights kept), the grey line the early stop, a red line a stop at the epoch limit."))
    else:
        s.missing.append(f"{rf.run.history_json} not found: no training curves.")
    return s


def psnr_notes(rf: RunFiles) -> dict[str, str]:
    """Row name (continuous, codebook, weights) -> its mean PSNR on the split (and bits per image), from the evaluations."""
    notes = {}
    if rf.continuous:
        notes["continuous"] = f"{rf.continuous.continuous.psnr_db.mean:.2f} dB"
    notes |= {r.codebook: f"{r.quantized.psnr_db.mean:.2f} dB, {r.bits_per_image:g} bits" for r in rf.codebook_evals}
    notes |= {r.weights: f"{r.quantized.psnr_db.mean:.2f} dB" for r in rf.weight_evals if compression_table.codebook_block(r) is None}
    return notes


def codebook_figures(rf: RunFiles, out: Path, prefix: str = "") -> list[Figure]:
    """One usage (and graph) figure per codebook with stored samples; files ``<prefix>codebook-<name>.png``."""
    figures = []
    for name, samples in rf.samples.codebooks.items():
        meta = rf.codebooks.get(name, {})
        view = view_from_samples(name, meta, samples, rf.split)
        file = f"{prefix}codebook-{name}.png"
        codebook_figure(view, out / file)
        graph = ("; kNN graph degree distribution and component sizes from the stored adjacency" if view.degrees is not None else
                 "; graph statistics unavailable (the estimator keeps no kNN graph)" if meta.get("method") in ("geodesic", "hybrid") else "")
        figures.append(Figure(file, f"Codebook {name}",
                              f"Fitted on {meta.get('fit_on')} ({meta.get('latents')} latents); usage on the {rf.split} split: "
                              f"{', '.join(str(d) for d in view.dead)} dead of {view.counts.shape[1]} codes{graph}."))
    return figures


def weights_order(rf: RunFiles) -> list[str]:
    """Packed weights with stored samples, INT8 before INT4, then by name."""
    return sorted(rf.samples.weights, key=lambda n: (-int((rf.weights.get(n) or {}).get("weights", {}).get("bits", 0)), n))


def reconstruction_rows(rf: RunFiles, notes: dict[str, str] | None = None, prefix: str = "") -> list[ImageRow]:
    """Rows continuous | each codebook | each packed-weight model of the stored samples (no ground-truth row).

    ``notes`` maps a row name (``continuous``, a codebook or a weights name) to text under its label (e.g. its test PSNR).
    """
    notes = notes or {}
    label = lambda name, shown: f"{prefix}{shown}" + (f"\n{notes[name]}" if name in notes else "")  # noqa: E731
    s = rf.samples
    rows = [ImageRow(label("continuous", "continuous (mu)"), s.continuous["reconstruction"])]
    rows += [ImageRow(label(name, name), book["reconstruction"]) for name, book in s.codebooks.items()]
    rows += [ImageRow(label(name, f"weights {name}"), s.weights[name]["reconstruction"]) for name in weights_order(rf)]
    return rows


def interpolation_rows(rf: RunFiles, prefix: str = "") -> list[ImageRow]:
    """The stored interpolation strip decoded continuously, then snapped to each codebook: one row each."""
    s = rf.samples
    return [ImageRow(f"{prefix}continuous", s.continuous["interpolation"])] + [ImageRow(f"{prefix}{name}", book["interpolation"])
                                                                           for name, book in s.codebooks.items()]


def image_sections(rf: RunFiles, out: Path) -> list[Section]:
    """Reconstruction grid, codebook figures and interpolation strip, from the stored sample sets."""
    grid = Section("reconstructions", "Reconstructions")
    books = Section("codebooks", "Codebooks", figures=codebook_figures(rf, out))
    interp = Section("interpolation", "Latent interpolation")
    s = rf.samples
    if rf.meta is None:
        grid.missing.append(f"{rf.run.model_record_file} not found: the run has no trained model yet, so there are no decoded images.")
    else:
        grid.missing += s.missing
    if s.continuous is not None:
        idx, labels = s.idx, s.labels
        rows = [ImageRow("ground truth", s.continuous["ground_truth"])] + reconstruction_rows(rf, psnr_notes(rf))
        image_grid(rows, out / "reconstructions.png", f"{rf.run_dir.name}: the same {len(idx)} {rf.split} images through every model",
                   [f"#{i} class {c}" for i, c in zip(idx, labels)])
        grid.figures.append(Figure("reconstructions.png", "Reconstruction grid", GRID_CAPTION.format(split=rf.split)))
        a, b = idx[0], idx[-1]
        strip = interpolation_rows(rf)
        image_grid(strip, out / "interpolation.png", f"{rf.run_dir.name}: {rf.split} image #{a} to #{b}", t_titles(strip[0].images.shape[0]))
        interp.figures.append(Figure("interpolation.png", "Latent interpolation strip",
                                     INTERP_CAPTION.format(split=rf.split, a=a, b=b, ca=labels[0], cb=labels[-1])))
    else:
        interp.missing.append(f"no continuous samples on {rf.split}: no interpolation strip (`posthoc-vq evaluate {rf.run_dir} --split {rf.split}` stores them).")
    if not rf.codebooks and not trained_quantizer(rf):  # a trained quantizer's codes are its own: no post-hoc codebook is missing
        for section in (grid, books):
            section.missing.append(no_codebook(rf.run_dir))
        if s.continuous is not None:
            interp.missing.append("no codebook: only the continuous strip is shown.")
    if not rf.weights:
        grid.missing.append(f"no INT8/INT4 weights in {rf.run_dir / WEIGHTS}: make them with `posthoc-vq compress-weights {rf.run_dir} --bits 8` (and --bits 4).")
    return [grid, books, interp]


def trained_quantizer(rf: RunFiles) -> bool:
    """Whether the run's model was trained with its quantizer (``model.quantizer`` other than none)."""
    return getattr(rf.config.model, "quantizer", "none") != "none"


def no_codebook(run_dir: Path) -> str:
    """The missing note of a run without codebooks."""
    return f"no codebook in {run_dir / CODEBOOKS}: fit one with `posthoc-vq quantize {run_dir}`."


def rate_distortion_section(rf: RunFiles, out: Path) -> Section:
    """PSNR vs bits per image of the evaluated codebooks (the study figure of :mod:`codebook_table`)."""
    s = Section("rate-distortion", "Rate-distortion")
    if rf.continuous and rf.codebook_evals:
        rate_distortion_figure(rf.continuous, rf.codebook_evals, out / "rate-distortion.png", rf.codebooks)
        s.figures.append(Figure("rate-distortion.png", "Rate-distortion",
                                f"{rf.split} PSNR against ground truth vs bits per image, mean with 95% CI over images; the continuous model is the "
                                "black line (its CI shaded). One line per codebook recipe (method, latents, fit set, and graph k and symmetry for graph "
                                "methods; K and residual stages vary along it), colour by method, a marker per line; equal rates share one x position. "
                                "Open markers and dashed lines: codebooks fitted on data that includes the test split."))
    else:
        s.missing.append(_eval_missing(rf) if not rf.continuous else
                         f"no evaluated codebook on {rf.split}: `posthoc-vq quantize {rf.run_dir}` then `posthoc-vq evaluate {rf.run_dir} --codebook NAME`.")
    return s


def _eval_missing(rf: RunFiles) -> str:
    if rf.stale_continuous:
        return (f"{rf.run.eval_file(rf.split)} measured another version of the run's model (it is stale and left out): "
                f"run `posthoc-vq evaluate {rf.run_dir} --split {rf.split}`.")
    return f"{rf.run.eval_file(rf.split)} not found: run `posthoc-vq evaluate {rf.run_dir} --split {rf.split}`."


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
    sources = ([("continuous", rf.continuous)] if rf.continuous else []) + [(r.codebook, r) for r in rf.codebook_evals] \
        + [(r.weights + (f"+{b.name}" if (b := compression_table.codebook_block(r)) else ""), r) for r in rf.weight_evals]
    s.items = run_limitations(
        meta=rf.meta, summary=rf.summary, seed=rf.config.seed, split=rf.split, codebook_evals=rf.codebook_evals, codebooks=list(rf.codebooks),
        evaluated={r.codebook for r in rf.codebook_evals}, warnings=warning_lines(sources),
        git_commit=(rf.provenance or {}).get("git_commit"),
    )
    if not rf.continuous:
        s.missing.append(_eval_missing(rf))
    return s


def run_sections(rf: RunFiles, out: Path, *, step: Step = lambda _: None) -> list[Section]:
    """Every section of a run report, figures written into ``out``."""
    step("training curves")
    sections = [training_section(rf, out)]
    step("reconstructions, codebooks and interpolation (stored samples)")
    sections += image_sections(rf, out)
    step("tables")
    return sections + [rate_distortion_section(rf, out), tables_section(rf), claims_section(rf)]
