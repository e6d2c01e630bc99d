"""One sweep job: train a model once, then evaluate every cell that shares it.

A job is all the cells with the same training config (one ``train_key``): it trains into
``<sweep>/runs/<train_key>`` (or reuses a finished model there, or resumes an interrupted
one), evaluates the continuous model, then for each cell fits its latent codebook (reused
when it exists), packs its weights, and evaluates the combination on the sweep's split.
Jobs are plain functions of plain data, so any executor (in-process, a process pool, Ray)
can run them; they return results and write nothing but artifacts into the run directory.
"""

from __future__ import annotations

import time
import traceback
from pathlib import Path
from typing import Any

import torch

from posthoc_vq.config import FinetuneConfig, QuantizeConfig, RunConfig, WeightsConfig
from posthoc_vq.experiments.spec import config_hash
from posthoc_vq.results import CodebookComparison, ComputeAccount, Evaluation, ImageQuality
from posthoc_vq.run import Run, Sweep



def protocol_key(run: RunConfig) -> str:
    """Hash of how a model was trained (optimiser, schedule, stopping, data split), seed and threads aside."""
    train = run.train.model_dump(mode="json")
    train.pop("threads", None)
    data = run.data.model_dump(mode="json")
    data.pop("data_dir", None)
    return config_hash({"train": train, "data": data})


def _quality(block: ImageQuality) -> dict[str, float]:
    return {"psnr_db": block.psnr_db.mean, "ssim": block.ssim.mean, "mse": block.mse.mean}


def _ensure_trained(run: RunConfig, run_dir: Path, device: str | None = None) -> None:
    from rich.console import Console

    from posthoc_vq import pipeline

    r = Run(run_dir)
    if r.summary_file.exists():
        return
    pipeline.train(run, run_dir, resume=r.exists(), progress=False, console=Console(quiet=True), device=device or "cpu")


def _reuse(path: Path) -> Evaluation | None:
    """An evaluation a killed job already finished: a sweep run's model never changes once trained,
    and every result file was written atomically, so an existing one is complete and current."""
    from posthoc_vq.records import read_evaluation

    return read_evaluation(path, "evaluation result") if path.exists() else None


def evaluate_cell(
    run_dir: Path, cell: dict[str, Any], cont: Evaluation, split: str, data_dir: str | None,
    perceptual: list[str] | None = None, features: str | None = None, device: str | None = None,
) -> dict[str, Any]:
    """Metrics of one cell (codebook x weight bits) of a trained run; returns metrics and artifact paths."""
    from posthoc_vq import pipeline
    from posthoc_vq.quantize.codebooks import fit_codebook_for_run, list_codebooks
    from posthoc_vq.quantize.compressed import compress_run

    q = QuantizeConfig(**cell["quantize"]) if cell["quantize"] else None
    w = WeightsConfig(**cell["weights"])
    codebook = None
    if q is not None:
        codebook = q.default_name()
        if codebook not in list_codebooks(run_dir):
            fit_codebook_for_run(run_dir, q, data_dir=data_dir, device=device)
        else:
            _check_same_codebook(run_dir, codebook, q)
    if cell.get("finetune"):  # the rest of the cell evaluates the fine-tuned run (a sibling run directory)
        run_dir = _finetuned(run_dir, codebook, q, FinetuneConfig(**cell["finetune"]), data_dir, device)
    artifacts: dict[str, Any] = {"run_dir": str(run_dir), "codebook": codebook, "weights": None}
    if w.bits == 32:
        path = Run(run_dir).eval_file(split, codebook=codebook)
        result = cont
        if codebook:  # the same step as `posthoc-vq evaluate --codebook`, its samples stored where absent
            result = _reuse(path) or pipeline.evaluate_pixels(run_dir, codebook=codebook, split=split, data_dir=data_dir, device=device, samples="none")
            pipeline.store_samples(run_dir, split, "ensure", codebook=codebook, data_dir=data_dir)
        block, reference = (result.quantized if codebook else result.continuous), result.continuous
        warnings = result.warnings
    else:
        name = w.default_name()
        path = Run(run_dir).eval_file(split, weights=name, codebook=codebook)
        result = _reuse(path)
        if result is None:
            if name not in Run(run_dir).weights_names():  # packed once per run, like a codebook: reused by every cell
                compress_run(run_dir, w)
            result = pipeline.evaluate_pixels(run_dir, weights=name, codebook=codebook, split=split, data_dir=data_dir, samples="none")
        inner = result.with_codebook if codebook else result
        block, reference = inner.quantized, result.continuous
        warnings = result.warnings + (inner.warnings if codebook else [])
        artifacts["weights"] = name
        if codebook is None:
            pipeline.store_samples(run_dir, split, "ensure", weights=name, data_dir=data_dir)
    artifacts["eval"] = str(path)
    metrics = {
        **_quality(block),
        "psnr_db_ci": [block.psnr_db.low, block.psnr_db.high],
        "continuous_psnr_db": reference.psnr_db.mean,
        # a post-hoc codebook's rate; without one, a trained quantizer's (None for a continuous model)
        "bits_per_image": (result if w.bits == 32 else inner).bits_per_image if codebook else cont.bits_per_image,
        # real rates (file bytes x 8 / pixels, header included) of the codebook's priors, for claims on real bpp
        # (a trained quantizer's from its own evaluation; a continuous model has none)
        **_real_rates((result if w.bits == 32 else inner) if codebook else cont),
        "fit_includes_test": bool((result if w.bits == 32 else inner).fit_includes_test) if codebook else False,
        "warnings": sorted({x.code for x in warnings}),
        # compute behind the cell's model: training (+ latent encoding, codebook fit, fine-tune), see evaluation "compute" blocks
        **_compute((result if w.bits == 32 else cont).compute),
    }
    if cell.get("finetune"):  # both trainings must have converged: the source VAE's and the fine-tune's
        metrics["converged"] = cont.training.converged is True and result.training.converged is True
        metrics["continuous_psnr_db"] = cont.continuous.psnr_db.mean  # the source VAE's, as for the post-hoc codebook it started from
    if perceptual:
        metrics |= _perceptual(run_dir, codebook, artifacts["weights"], perceptual, split, data_dir, features)
    return {"metrics": metrics, "artifacts": artifacts}


def _real_rates(result: Evaluation | CodebookComparison) -> dict[str, float | None]:
    """``real_bpp_<prior>`` (one file per image, header included), ``container_bpp_<prior>`` (all images in one file) and
    ``nominal_bpp`` of an evaluation's ``rate`` block (None without one)."""
    rate = getattr(result, "rate", None)
    priors = rate.priors if rate is not None else {}
    out = {f"real_bpp_{p}": priors[p].real_bpp.mean if p in priors else None for p in ("empirical", "context")}
    out |= {f"container_bpp_{p}": priors[p].container_bpp if p in priors else None for p in ("empirical", "context")}
    return out | {"nominal_bpp": rate.nominal_bpp if rate is not None else None}


def _check_same_codebook(run_dir: Path, name: str, q: QuantizeConfig) -> None:
    """A codebook is reused only when it was fitted with the cell's settings (threads and name aside)."""
    from posthoc_vq.errors import ConfigError
    from posthoc_vq.io import read_json

    record = Run(run_dir).codebook_files(name)[1]
    stored = QuantizeConfig(**read_json(record, what="codebook record")["quantize"]).fitted_settings()
    wanted = q.fitted_settings()
    if stored != wanted:
        diff = ", ".join(f"{k}: {stored.get(k)!r} there, {wanted.get(k)!r} here" for k in sorted(set(stored) | set(wanted)) if stored.get(k) != wanted.get(k))
        raise ConfigError(f"{record}: codebook '{name}' was fitted with other settings ({diff}); give the cell's quantize.name "
                          "a new name, or delete that codebook folder to refit it")


def _perceptual(run_dir: Path, codebook: str | None, weights: str | None, wanted: list[str], split: str, data_dir: str | None, features: str | None) -> dict[str, Any]:
    """FD / KID of the cell's reconstructions against the split, by the fp32 model or packed weights ``weights`` (a stored result is reused)."""
    from posthoc_vq.evaluation.perceptual import perceptual_metrics

    path = Run(run_dir).eval_file(split, codebook=codebook, weights=weights, kind="perceptual")
    r = _reuse(path)
    if r is None or not all(m in r["sets"].get("reconstruction", {}) for m in wanted):
        r = perceptual_metrics(run_dir, codebook=codebook, weights=weights, split=split, metrics=wanted, features=features, data_dir=data_dir)
    rec = r["sets"]["reconstruction"]
    return {m: (rec[m]["mean"] if isinstance(rec[m], dict) else rec[m]) for m in wanted}


def _compute(block: ComputeAccount | None) -> dict[str, Any]:
    total = block.total if block is not None else None
    return {"compute_seconds": total and total.wall_seconds, "optimizer_steps": total and total.optimizer_steps, "images_seen": total and total.images_seen}


def _finetuned(run_dir: Path, codebook: str, q: QuantizeConfig, ft: FinetuneConfig, data_dir: str | None, device: str | None = None) -> Path:
    """The run whose decoder was fine-tuned on ``codebook``'s latents (made once, resumed if interrupted)."""
    from posthoc_vq import pipeline

    key = config_hash({"quantize": q.model_dump(mode="json"), "finetune": ft.model_dump(mode="json")})
    target = Sweep.finetune_run(run_dir, key)
    if not target.summary_file.exists():
        pipeline.finetune(run_dir, codebook, target.root, epochs=ft.epochs, part=ft.part, lr=ft.lr, patience=ft.patience, min_delta=ft.min_delta,
                 resume=target.exists(), data_dir=data_dir, progress=False, device=device or "cpu")
    return target.root


def _trained_on(run_dir: Path) -> str | None:
    """The device the run's last training invocation used (its summary's ``device``), e.g. 'cpu' or 'cuda:0'."""
    from posthoc_vq.io import read_json

    return read_json(Run(run_dir).summary_file, what="training summary").get("device")


def run_job(task: dict[str, Any]) -> list[dict[str, Any]]:
    """Run one job (see module docstring). ``task`` keys: sweep_dir, train_key, run (RunConfig dict),
    cells (list of {cell_id, quantize, weights}), split, threads, data_dir, device (None: CPU).

    Returns one ``{cell_id, metrics, artifacts, seconds}`` or ``{cell_id, error}`` per cell.
    """
    from posthoc_vq.evaluation import evaluate_continuous
    from posthoc_vq.evaluation.samples import ensure_samples

    torch.set_num_threads(task["threads"])
    run = RunConfig(**task["run"])
    run_dir = Sweep(task["sweep_dir"]).run(task["train_key"]).root
    with Run.create(run_dir).lock("ablate job"):  # one writer per run: a second sweep driver fails here, never mixes models
        start = time.perf_counter()
        device = task.get("device")
        _ensure_trained(run, run_dir, device)
        cont = _reuse(Run(run_dir).eval_file(task["split"])) or evaluate_continuous(run_dir, split=task["split"], data_dir=task["data_dir"], device=device)
        ensure_samples(run_dir, task["split"], data_dir=task["data_dir"])  # the report's images, stored beside the result
        shared = {
            "converged": cont.training.converged, "trained_steps": cont.model.trained_steps,
            "epochs": cont.training.epochs, "best_epoch": cont.training.best_epoch, "protocol": protocol_key(run),
            "device": _trained_on(run_dir),
        }
        train_seconds = time.perf_counter() - start
        out = []
        for cell in task["cells"]:
            tic = time.perf_counter()
            try:
                res = evaluate_cell(run_dir, cell, cont, task["split"], task["data_dir"], task.get("perceptual"), task.get("features"), device)
            except Exception:  # one failing cell must not lose the others of the job
                out.append({"cell_id": cell["cell_id"], "error": traceback.format_exc()})
                continue
            res["metrics"] = shared | res["metrics"]  # a cell's own value (a fine-tune's convergence) wins
            out.append({"cell_id": cell["cell_id"], **res, "seconds": time.perf_counter() - tic, "train_seconds": train_seconds})
        return out
