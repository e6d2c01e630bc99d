"""Training: trainer, checkpoints, seeding, the run-directory entry point, and decoder fine-tuning on a codebook."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from rich.console import Console

from posthoc_vq.config import RunConfig
from posthoc_vq.errors import ConfigError
from posthoc_vq.locking import LOCK_FILE
from posthoc_vq.run import Run
from posthoc_vq.train.checkpoint import load_model, load_run_config
from posthoc_vq.train.finetune import FinetuneResult, finetune
from posthoc_vq.run import SUMMARY as SUMMARY_FILE
from posthoc_vq.train.trainer import Trainer, TrainResult
from posthoc_vq.tracking import Tracker

# Keys that may change when a run is resumed: they do not change what was already trained, only
# how training goes on (a lower lr or gradient clipping is the remedy for a diverged run). A change
# is recorded in the run: in history.json/.csv at the first epoch trained with it, and in
# config_changes.json beside the original config; config.json holds the config now in force.
RESUMABLE_CHANGES = {("train", "epochs"), ("train", "patience"), ("train", "min_epochs"), ("train", "lr"), ("train", "grad_clip")}


def train(config: RunConfig, run_dir: str | Path, *, resume: bool = False, progress: bool = True, console: Console | None = None,
          tracker: Tracker | None = None, device: str | torch.device | None = "cpu") -> TrainResult:
    """Train ``config`` into ``run_dir``, or continue it with ``resume``.

    A run directory that already holds a run is refused unless ``resume`` is set.
    On resume the saved config is used; ``config`` may differ from it only in the
    keys of :data:`RESUMABLE_CHANGES` (``train.epochs``, ``train.patience``, ``train.min_epochs``,
    ``train.lr``, ``train.grad_clip``), which then apply from the next epoch on.
    When the run has no checkpoint yet, resuming starts it over with ``config``.
    ``tracker`` (:mod:`posthoc_vq.tracking`) gets the resolved config and each epoch's metrics.
    ``device``: where to train (see :class:`Trainer`); a run may be resumed on another device.
    """
    run = Run.create(run_dir)
    with run.lock("train"):  # a second train (or any writer) of this run fails at once, naming this one
        try:
            return _train_locked(config, run, resume, progress, console, tracker, device)
        except BaseException:
            _remove_if_empty(run.root)  # a training that failed before writing anything leaves no folder behind (we hold its lock)
            raise


def _remove_if_empty(folder: Path) -> None:
    """Remove ``folder`` if it holds nothing but its lock file (nobody holds it once the lock is released)."""
    try:
        if {p.name for p in folder.iterdir()} <= {LOCK_FILE}:
            shutil.rmtree(folder, ignore_errors=True)
    except OSError:
        pass


def _train_locked(config: RunConfig, run: Run, resume: bool, progress: bool, console: Console | None, tracker: Tracker | None = None,
                  device: str | torch.device | None = "cpu") -> TrainResult:
    run_dir = run.root
    if run.exists() and not resume:
        raise ConfigError(f"{run_dir} already holds a run; pass --resume to continue it, or choose another --out")
    if resume and run.exists():
        old = run.config()
        new = config.model_copy(update={"model": config.model.model_copy(update={"image_size": old.model.image_size, "in_channels": old.model.in_channels})})
        changed = _diff(old.to_dict(), new.to_dict())
        bad = [k for k in changed if tuple(k.split(".")) not in RESUMABLE_CHANGES]
        if bad:
            allowed = ", ".join(".".join(k) for k in sorted(RESUMABLE_CHANGES))
            raise ConfigError(
                f"--resume of {run_dir} with a different config ({', '.join(bad)}); only {allowed} may change when a run is resumed. "
                f"To train with other settings, start a new run with another --out"
            )
        data = old.to_dict()
        for section, key in RESUMABLE_CHANGES:
            data[section][key] = getattr(getattr(config, section), key)
        config = RunConfig.model_validate(data)
    return Trainer(config, run_dir, progress=progress, console=console, tracker=tracker, device=device).fit(resume=resume)


def _diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _diff(va, vb, f"{prefix}{key}.")
        elif va != vb:
            out.append(f"{prefix}{key}")
    return out


__all__ = ["SUMMARY_FILE", "FinetuneResult", "TrainResult", "Trainer", "finetune", "load_model", "load_run_config", "train"]
