"""Run-directory checkpoints: safetensors for tensors, JSON for everything else, never pickle.

Layout of a run directory::

    config.json                 fully resolved RunConfig
    provenance.json             seed, versions, git commit, command
    model.safetensors           weights to use (best validation epoch)
    model.json                  model config, epoch, metrics, size, sha256 of the weights
    history.csv / history.json  per-epoch curves
    train_summary.json          converged?, stop reason, epochs, steps, time
    checkpoints/latest.json     points at the newest complete resume checkpoint
    checkpoints/epoch-NNNN/     model.safetensors, optimizer.safetensors, state.json

A resume checkpoint is a folder written in full (state.json last, holding the
sha256 of the tensor files) before ``latest.json`` is atomically switched to
it, so a kill at any moment leaves the previous checkpoint intact.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch

from posthoc_vq.config import RunConfig, VAEConfig, validate
from posthoc_vq.errors import CheckpointError
from posthoc_vq.io import load_tensors, read_json, save_tensors, write_json
from posthoc_vq.models import ConvVAE, build_vae

MODEL_FILE, MODEL_META = "model.safetensors", "model.json"
CKPT_DIR, LATEST = "checkpoints", "latest.json"
KEEP_CHECKPOINTS = 2


# ----------------------------------------------------------------------------- model weights


def save_model(run_dir: Path, model: ConvVAE, meta: dict[str, Any]) -> None:
    """Write the usable model (weights + JSON with its config and a checksum)."""
    sha = save_tensors(run_dir / MODEL_FILE, model.state_dict())
    write_json(
        run_dir / MODEL_META,
        {
            "model": model.config.model_dump(mode="json"),
            "num_parameters": model.num_parameters(),
            "fp32_bytes": model.fp32_bytes(),
            "sha256": sha,
            **meta,
        },
    )


def load_model(run_dir: str | Path) -> tuple[ConvVAE, dict[str, Any]]:
    """Load the usable model of a run directory in eval mode, with its metadata.

    Raises CheckpointError when the run has no model, or its files are damaged
    or do not fit the recorded architecture.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run directory not found: {run_dir}; train one with `posthoc-vq train --out {run_dir}`")
    meta = read_json(run_dir / MODEL_META, what="model metadata (the run has not finished an epoch?)")
    config = validate(meta.get("model", {}), VAEConfig, source=str(run_dir / MODEL_META))
    model = build_vae(config)
    state = load_tensors(run_dir / MODEL_FILE, sha256=meta.get("sha256"))
    _load_state(model, state, run_dir / MODEL_FILE)
    model.eval()
    return model, meta


def _load_state(module: torch.nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        detail = "; ".join(
            part
            for part in (
                f"missing {missing[:3]}" if missing else "",
                f"unexpected {unexpected[:3]}" if unexpected else "",
                f"shape mismatch in {wrong[:3]}" if wrong else "",
            )
            if part
        )
        raise CheckpointError(f"{path} does not match the model recorded beside it ({detail}); the run directory is inconsistent")
    module.load_state_dict(state)


# ----------------------------------------------------------------------------- optimizer


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state_dict into tensors (for safetensors) and JSON-able groups."""
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for pid, slot in sd["state"].items():
        for name, value in slot.items():
            if torch.is_tensor(value):
                tensors[f"state.{pid}.{name}"] = value
            else:
                scalars[f"{pid}.{name}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, pid, name = key.split(".", 2)
        state.setdefault(int(pid), {})[name] = value
    for key, value in info.get("scalars", {}).items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": info["param_groups"]})


# ----------------------------------------------------------------------------- resume checkpoints


def save_checkpoint(run_dir: Path, epoch: int, model: ConvVAE, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> Path:
    """Write ``checkpoints/epoch-NNNN`` completely, then point ``latest.json`` at it."""
    root = run_dir / CKPT_DIR
    folder = root / f"epoch-{epoch:04d}"
    if folder.exists():
        shutil.rmtree(folder)
    opt_tensors, opt_info = optimizer_tensors(optimizer)
    files = {
        "model.safetensors": save_tensors(folder / "model.safetensors", model.state_dict()),
        "optimizer.safetensors": save_tensors(folder / "optimizer.safetensors", opt_tensors),
    }
    write_json(folder / "state.json", {"epoch": epoch, "sha256": files, "optimizer": opt_info, **state})
    write_json(root / LATEST, {"checkpoint": folder.name, "epoch": epoch})
    for old in sorted(root.glob("epoch-*"))[:-KEEP_CHECKPOINTS]:
        shutil.rmtree(old, ignore_errors=True)
    return folder


def latest_checkpoint(run_dir: Path) -> Path | None:
    """Folder of the newest complete checkpoint, or None when there is none."""
    pointer = run_dir / CKPT_DIR / LATEST
    if not pointer.exists():
        return None
    name = read_json(pointer, what="checkpoint pointer").get("checkpoint")
    folder = run_dir / CKPT_DIR / str(name)
    if not (folder / "state.json").exists():
        raise CheckpointError(f"{pointer} points at {folder}, which is missing or incomplete; delete {pointer} to restart training")
    return folder


def load_checkpoint(folder: Path, model: ConvVAE, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore model and optimizer from a checkpoint folder; return its state.json."""
    state = read_json(folder / "state.json", what="checkpoint state")
    sums = state.get("sha256", {})
    _load_state(model, load_tensors(folder / "model.safetensors", sha256=sums.get("model.safetensors")), folder / "model.safetensors")
    opt = load_tensors(folder / "optimizer.safetensors", sha256=sums.get("optimizer.safetensors"))
    try:
        restore_optimizer(optimizer, opt, state["optimizer"])
    except (KeyError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{folder / 'optimizer.safetensors'} does not fit this model's optimizer ({err})") from None
    return state


def load_run_config(run_dir: str | Path) -> RunConfig:
    """The resolved config saved in a run directory."""
    path = Path(run_dir) / "config.json"
    data = read_json(path, what="run config")
    return validate(data, RunConfig, source=str(path))
