"""Training: trainer, checkpoints, seeding, and the run-directory entry point."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from posthoc_vq.config import RunConfig
from posthoc_vq.errors import ConfigError
from posthoc_vq.train.checkpoint import load_model, load_run_config
from posthoc_vq.train.trainer import SUMMARY_FILE, Trainer, TrainResult

# Keys that may change when a run is resumed (they do not change what was already trained).
RESUMABLE_CHANGES = {("train", "epochs"), ("train", "patience")}


def train(config: RunConfig, run_dir: str | Path, *, resume: bool = False, progress: bool = True, console: Console | None = None) -> TrainResult:
    """Train ``config`` into ``run_dir``, or continue it with ``resume``.

    A run directory that already holds a run is refused unless ``resume`` is set.
    On resume the saved config is used; ``config`` may differ from it only in
    ``train.epochs`` and ``train.patience``.
    """
    run_dir = Path(run_dir)
    saved = run_dir / "config.json"
    if saved.exists() and not resume:
        raise ConfigError(f"{run_dir} already holds a run; pass --resume to continue it, or choose another --out")
    if resume and saved.exists():
        old = load_run_config(run_dir)
        new = config.model_copy(update={"model": config.model.model_copy(update={"image_size": old.model.image_size, "in_channels": old.model.in_channels})})
        changed = _diff(old.to_dict(), new.to_dict())
        bad = [k for k in changed if tuple(k.split(".")) not in RESUMABLE_CHANGES]
        if bad:
            raise ConfigError(f"--resume of {run_dir} with a different config ({', '.join(bad)}); only train.epochs and train.patience may change")
        config = old.model_copy(update={"train": old.train.model_copy(update={"epochs": config.train.epochs, "patience": config.train.patience})})
    return Trainer(config, run_dir, progress=progress, console=console).fit(resume=resume)


def _diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _diff(va, vb, f"{prefix}{key}.")
        elif va != vb:
            out.append(f"{prefix}{key}")
    return out


__all__ = ["SUMMARY_FILE", "TrainResult", "Trainer", "load_model", "load_run_config", "train"]
