"""The commands' steps, once: what ``train``, ``quantize``, ``evaluate``, ``compress-weights`` and ``finetune`` do around
the library call, for the CLI, the library API and the sweep jobs alike (``ablate``'s tracking too: :func:`log_sweep`).

Each step opens the run it works on itself, decides which samples the report will draw (``evaluate`` and
``compress-weights`` store them), and logs to the experiment tracker when one is asked for (:class:`Tracking`: a
tracking failure is only a warning, a missing ``[tracking]`` extra fails before any work). The CLI
(:mod:`posthoc_vq.cli`) parses arguments, calls a step and prints what it returns; it opens no run and holds no
tracking code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from posthoc_vq.results import Evaluation
from posthoc_vq.run import Run, Sweep


def _print_warning(message: str) -> None:
    import sys

    print(f"warning (tracking): {message}", file=sys.stderr)


@dataclass
class Tracking:
    """Which experiment tracker a step logs to (``kind``: ``"mlflow"``, or None for none) and how a tracking failure is told."""

    kind: str | None = None
    warn: Callable[[str], None] = field(default=_print_warning)

    def check(self) -> None:
        """Fail before any work when ``kind`` names a tracker whose extra is not installed."""
        from posthoc_vq.tracking import check_tracker

        check_tracker(self.kind)

    def open(self, experiment: str, run_name: str, **kwargs: Any) -> Any:
        """The tracker (a no-op without ``kind``)."""
        from posthoc_vq.tracking import open_tracker

        return open_tracker(self.kind, experiment, run_name, warn=self.warn, **kwargs)


NO_TRACKING = Tracking()


def _log_files(tracker: Any, *paths: Path) -> None:
    for path in paths:
        tracker.log_artifact(path)


def _log_training(tracker: Any, run: Run, summary: dict[str, Any]) -> None:
    """A finished train/finetune run: its summary as metrics and tags, and its small files as artifacts (not the weights)."""
    from posthoc_vq.tracking import numeric

    tracker.log_metrics({f"summary.{k}": v for k, v in numeric({k: v for k, v in summary.items() if k != "run_dir"}).items()})
    tracker.set_tags({"stop_reason": summary.get("stop_reason", ""), "run_dir": str(run.root)})
    _log_files(tracker, run.config_file, run.model_record_file, run.history_json, run.history_csv, run.summary_file,
               run.provenance_file(False), run.config_changes_file, run.finetune_file)


# ----------------------------------------------------------------------------- train, fine-tune

def train_config(out: str | Path, preset: str | None, overrides: list[str], *, resume: bool = False, seed: int | None = None) -> Any:
    """The resolved config of ``train``: the run's own ``config.json`` (with ``overrides``) when resuming without a preset,
    else the preset (default ``digits``) with ``overrides`` and ``seed``."""
    from posthoc_vq.config import RunConfig, apply_overrides, load_run_config, validate

    out = Path(out)
    if resume and Run(out).exists() and preset is None:
        data = apply_overrides(Run.open(out).config().to_dict(), overrides, RunConfig)
        return validate(data, RunConfig, source=f"{out / 'config.json'} with overrides {overrides}")
    return load_run_config(preset or "digits", overrides, seed=seed)


def train(config: Any, out: str | Path, *, resume: bool = False, experiment: str | None = None, tracking: Tracking = NO_TRACKING, **options: Any) -> Any:
    """``posthoc-vq train``: :func:`posthoc_vq.train.train` with tracking (params, per-epoch metrics, summary, small files).

    ``experiment``: the tracker's experiment (default the dataset's name). ``options``: those of the trainer (``progress``,
    ``console``, ``device``). Returns its :class:`~posthoc_vq.train.TrainResult`."""
    from posthoc_vq.train import train as run_training

    out = Path(out)
    tracker = tracking.open(experiment or config.data.name, out.resolve().name, tags={"command": "train"})
    status = "FAILED"
    try:
        result = run_training(config, out, resume=resume, tracker=tracker, **options)
        status = "FINISHED"
        _log_training(tracker, Run.open(out), {**result.__dict__, "compute": result.compute})
    finally:
        tracker.end(status)
    return result


def finetune(run: str | Path, codebook: str, out: str | Path, *, tracking: Tracking = NO_TRACKING, **options: Any) -> Any:
    """``posthoc-vq finetune``: :func:`posthoc_vq.train.finetune`, then the fine-tuned run logged from its files (config and
    settings as params, history as metrics, step = epoch). Returns its result."""
    from posthoc_vq.train import finetune as run_finetune

    tracking.check()
    result = run_finetune(run, codebook, out, **options)
    if tracking.kind is not None:
        _log_finetune(tracking, Path(out), run, codebook)
    return result


def _log_finetune(tracking: Tracking, out: Path, source: str | Path, codebook: str) -> None:
    from posthoc_vq.io import read_json
    from posthoc_vq.tracking import flatten, numeric

    run = Run.open(out)
    config = run.config()
    tracker = tracking.open(config.data.name, out.resolve().name, tags={"command": "finetune", "source": str(source), "codebook": codebook})
    try:
        settings = read_json(run.finetune_file, what="fine-tuning settings") if run.finetune_file.exists() else {}
        tracker.log_params(flatten(config.to_dict()) | flatten(settings, "finetune."))
        for row in read_json(run.history_json, what="history") if run.history_json.exists() else []:
            tracker.log_metrics(numeric({k: v for k, v in row.items() if k not in ("epoch", "changes")}), step=row["epoch"])
        summary = read_json(run.summary_file, what="summary") if run.summary_file.exists() else {}
        _log_training(tracker, run, summary)
    except Exception as err:  # noqa: BLE001 - tracking never fails the command
        tracking.warn(f"could not read {out} for tracking: {err}")
    finally:
        tracker.end()


# ----------------------------------------------------------------------------- codebooks and packed weights

def quantize(run: str | Path, config: Any, **options: Any) -> tuple[str, Any, dict[str, Any], Path]:
    """``posthoc-vq quantize``: fit a codebook on a run's latents and save it. Returns (name, estimator, record, folder)."""
    from posthoc_vq.quantize.codebooks import fit_codebook_for_run

    name, estimator, meta = fit_codebook_for_run(run, config, **options)
    return name, estimator, meta, Run.open(run).artifact_dir("codebooks", name)


def compress_weights(run: str | Path, config: Any, *, evaluate: bool = True, split: str = "test", data_dir: str | None = None,
                     codebook: str | None = None, progress: Any = None) -> tuple[str, dict[str, Any], Evaluation | None]:
    """``posthoc-vq compress-weights``: pack the run's weights; unless ``evaluate`` is False, evaluate them on ``split``
    (with ``codebook`` between encoder and decoder if given) and store the report's samples of the packed model.
    Returns (name, packed-weight record, evaluation or None)."""
    from posthoc_vq.quantize.compressed import compress_run

    name, record = compress_run(run, config)
    if not evaluate:
        return name, record, None
    return name, record, evaluate_pixels(run, weights=name, codebook=codebook, split=split, data_dir=data_dir, progress=progress)


# ----------------------------------------------------------------------------- evaluation

#: the headline numbers of a pixel evaluation logged to a tracker: section -> metrics (each its mean over images)
TRACKED_EVAL = {"continuous": ("psnr_db", "ssim", "mse"), "quantized": ("psnr_db", "ssim", "mse"), "penalty": ("psnr_db", "ssim", "mse")}


def evaluate_pixels(run: str | Path, *, codebook: str | None = None, weights: str | None = None, split: str = "test", data_dir: str | None = None,
                    progress: Any = None, device: Any = None, samples: str = "write") -> Evaluation:
    """``posthoc-vq evaluate`` (PSNR, SSIM): the continuous model, a codebook or packed weights on ``split``, and the samples
    the report draws (decoded images, code counts; none for weights around a codebook).

    ``samples``: ``write`` (anew, as the CLI does), ``ensure`` (only where absent, as a sweep job does) or ``none``."""
    from posthoc_vq.evaluation import evaluate_codebook, evaluate_continuous
    from posthoc_vq.evaluation.weights import evaluate_weights

    if weights:
        result = evaluate_weights(run, weights, split=split, data_dir=data_dir, codebook=codebook, progress=progress, device=device)
        if codebook is None:
            store_samples(run, split, samples, weights=weights, data_dir=data_dir)
        return result
    if codebook:
        result = evaluate_codebook(run, codebook, split=split, data_dir=data_dir, progress=progress, device=device)
    else:
        result = evaluate_continuous(run, split=split, data_dir=data_dir, progress=progress, device=device)
    store_samples(run, split, samples, codebook=codebook, data_dir=data_dir)
    return result


def store_samples(run: str | Path, split: str, policy: str = "write", **which: Any) -> None:
    """The decoded images and code counts a report draws for ``which`` (``codebook`` or ``weights``; neither: the
    continuous model): ``write`` anew, ``ensure`` only where absent, ``none``."""
    from posthoc_vq.evaluation.samples import ensure_samples, write_samples

    if policy not in ("write", "ensure", "none"):
        raise ValueError(f"samples must be write, ensure or none, got {policy!r}")
    if policy != "none":
        (write_samples if policy == "write" else ensure_samples)(run, split, **which)


def evaluate_perceptual(run: str | Path, metrics: list[str], **options: Any) -> dict[str, Any]:
    """``posthoc-vq evaluate --metrics fd,kid,...``: :func:`posthoc_vq.evaluation.perceptual.perceptual_metrics`."""
    from posthoc_vq.evaluation.perceptual import perceptual_metrics

    return perceptual_metrics(run, metrics=metrics, **options)


def track_evaluation(tracking: Tracking, run: str | Path, results: dict[str, Any], *, codebook: str | None = None, weights: str | None = None,
                     split: str = "test") -> None:
    """Log an evaluation: headline metrics (means; ``<section>.<metric>``), bits per image, warnings as a tag, the eval JSON.

    ``results``: ``pixel`` (an :class:`~posthoc_vq.results.Evaluation`) and/or ``perceptual`` (its JSON)."""
    if tracking.kind is None:
        return
    from posthoc_vq.tracking import numeric

    r_run = Run(run)
    try:
        experiment = r_run.config().data.name
    except Exception:  # noqa: BLE001 - a run without a readable config still gets tracked
        experiment = "posthoc-vq"
    what = "+".join(filter(None, (weights, codebook))) or "continuous"
    tracker = tracking.open(experiment, f"{Path(run).resolve().name}/{what}", tags={"command": "evaluate", "run_dir": str(run)})
    try:
        tracker.log_params({"run": str(run), "codebook": codebook or "", "weights": weights or "", "split": split})
        metrics: dict[str, float] = {}
        pixel = results.get("pixel")
        if pixel is not None:
            sections = [("", pixel)] + ([("with_codebook.", pixel.with_codebook)] if pixel.with_codebook is not None else [])
            for prefix, r in sections:
                for section, names in TRACKED_EVAL.items():
                    block = getattr(r, section)
                    for name in names if block is not None else ():
                        metrics[f"{prefix}{section}.{name}"] = getattr(block, name).mean
            if pixel.bits_per_image is not None:
                metrics["bits_per_image"] = pixel.bits_per_image
            tracker.log_artifact(r_run.eval_file(split, codebook=codebook, weights=weights))
        if "perceptual" in results:
            metrics |= {f"perceptual.{k}": v for k, v in numeric(results["perceptual"].get("sets", {})).items()}
            tracker.log_artifact(r_run.eval_file(split, codebook=codebook, weights=weights, kind="perceptual"))
        tracker.log_metrics(numeric(metrics))
        codes = {w.code for w in pixel.warnings} if pixel is not None else set()
        codes |= {w["code"] for w in (results.get("perceptual") or {}).get("warnings", [])}
        tracker.set_tags({"warnings": ",".join(sorted(codes)) or "none"})
    finally:
        tracker.end()


def eval_file(run: str | Path, split: str = "test", **kind: Any) -> Path:
    """Where an evaluation of ``run`` is stored (``codebook``, ``weights``, ``kind`` as :meth:`~posthoc_vq.run.Run.eval_file`)."""
    return Run(run).eval_file(split, **kind)


def geometry_file(run: str | Path, split: str = "test") -> Path:
    return Run(run).geometry_file(split)


# ----------------------------------------------------------------------------- sweeps

def claims_file(out: str | Path) -> Path:
    return Sweep(out).claims_md


def log_sweep(tracking: Tracking, out: str | Path, claims: dict[str, Any], done: list[dict[str, Any]] | None) -> None:
    """Log a finished sweep (``posthoc_vq.ablate`` reads its database): one parent run (the spec as params, the counts as
    metrics, the claims as artifacts) and a child run per done cell (its axes as params, its stored metrics).
    ``done``: the database's done rows, None when the database could not be read."""
    if tracking.kind is None:
        return
    from posthoc_vq.io import read_json
    from posthoc_vq.tracking import flatten, numeric

    sweep = Sweep(Path(out))
    try:
        spec = read_json(sweep.spec_file, what="sweep spec")
        if done is None:
            raise ValueError(f"{sweep.db_file} could not be read")
    except Exception as err:  # noqa: BLE001 - tracking never fails the command
        tracking.warn(f"could not read {out} for tracking: {err}")
        return
    name = str(spec.get("name") or sweep.root.name)
    parent = tracking.open(name, sweep.root.resolve().name, tags={"command": "ablate", "sweep_dir": str(out)})
    try:
        parent.log_params(flatten({k: v for k, v in spec.items() if k != "name"}))
        parent.log_metrics(numeric({k: claims.get(k) for k in ("n_cells", "n_done", "n_failed", "ran_now")}))
        parent.set_tags({f"verdicts.{v}": n for v, n in (claims.get("counts") or {}).items()})
        _log_files(parent, sweep.spec_file, sweep.claims_json, sweep.claims_md)
        parent_id = getattr(parent, "run_id", None)
        for row in done if parent_id else []:
            child = tracking.open(name, str(row["cell_id"]), parent_run_id=parent_id,
                                  tags={"command": "ablate", "cell_id": row["cell_id"], "train_key": row["train_key"]})
            try:
                child.log_params(flatten(row.get("axes") or {}))
                child.log_metrics(numeric((row.get("metrics") or {}) | {"seconds": row.get("seconds")}))
            finally:
                child.end()
    finally:
        parent.end("FINISHED" if not claims.get("n_failed") else "FAILED")
