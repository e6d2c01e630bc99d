"""Training checkpoints in a run directory: safetensors for tensors, JSON for everything else, never pickle.

Where each file lives is :mod:`posthoc_vq.run`'s business; this module writes the usable
model and the resume checkpoints. A resume checkpoint is a folder written in full
(``state.json`` last, holding the sha256 of the tensor files) before ``latest.json`` is
atomically switched to it, so a kill at any moment leaves the previous checkpoint intact.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch

from posthoc_vq.errors import CheckpointError
from posthoc_vq.io import load_tensors, save_tensors, write_json
from posthoc_vq.models import ConvVAE, load_state_checked
from posthoc_vq.records import CheckpointState, read_dict
from posthoc_vq.run import CHECKPOINT_MODEL, CHECKPOINT_OPTIMIZER, CHECKPOINT_STATE, Run

KEEP_CHECKPOINTS = 2


# ----------------------------------------------------------------------------- model weights


def trained_data(config: Any) -> dict[str, Any]:
    """The data settings a model was trained with (``model.json``'s ``data``; the data folder aside): checked against
    ``config.json`` whenever the model is loaded, so an edited ``data.name`` is refused, not silently used."""
    data = config.data.model_dump(mode="json")
    data.pop("data_dir", None)
    return data


def save_model(run: Run, model: ConvVAE, meta: dict[str, Any]) -> None:
    """Write the usable model (weights + JSON with its config and a checksum)."""
    run = run if isinstance(run, Run) else Run(run)
    sha = save_tensors(run.model_file, model.state_dict())
    write_json(
        run.model_record_file,
        {
            "model": model.config.model_dump(mode="json"),
            "num_parameters": model.num_parameters(),
            "fp32_bytes": model.fp32_bytes(),
            "sha256": sha,
            **meta,
        },
    )


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


def save_checkpoint(run: Run, epoch: int, model: ConvVAE, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> Path:
    """Write ``checkpoints/epoch-NNNN`` completely, then point ``latest.json`` at it."""
    run = run if isinstance(run, Run) else Run(run)
    folder = run.checkpoint_dir(epoch)
    if folder.exists():
        shutil.rmtree(folder)
    opt_tensors, opt_info = optimizer_tensors(optimizer)
    files = {
        CHECKPOINT_MODEL: save_tensors(folder / CHECKPOINT_MODEL, model.state_dict()),
        CHECKPOINT_OPTIMIZER: save_tensors(folder / CHECKPOINT_OPTIMIZER, opt_tensors),
    }
    write_json(folder / CHECKPOINT_STATE, {"epoch": epoch, "sha256": files, "optimizer": opt_info, **state})
    write_json(run.latest_file, {"checkpoint": folder.name, "epoch": epoch})
    for old in run.checkpoint_dirs()[:-KEEP_CHECKPOINTS]:
        shutil.rmtree(old, ignore_errors=True)
    return folder


def latest_checkpoint(run: Run) -> Path | None:
    """Folder of the newest complete checkpoint, or None when there is none."""
    return (run if isinstance(run, Run) else Run(run)).latest_checkpoint()


def load_checkpoint(folder: Path, model: ConvVAE, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore model and optimizer from a checkpoint folder; return its state.json."""
    state = read_dict(folder / CHECKPOINT_STATE, CheckpointState, "checkpoint state")
    sums = state["sha256"]
    load_state_checked(model, load_tensors(folder / CHECKPOINT_MODEL, sha256=sums[CHECKPOINT_MODEL]), folder / CHECKPOINT_MODEL)
    opt = load_tensors(folder / CHECKPOINT_OPTIMIZER, sha256=sums[CHECKPOINT_OPTIMIZER])
    try:
        restore_optimizer(optimizer, opt, state["optimizer"])
    except (KeyError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{folder / CHECKPOINT_OPTIMIZER} does not fit this model's optimizer ({err})") from None
    return state


def load_model(run_dir: str | Path) -> tuple[ConvVAE, dict[str, Any]]:
    """The usable model of a run in eval mode, with its record (see :meth:`posthoc_vq.run.Run.load_model`)."""
    return Run.open(run_dir).load_model()


def load_run_config(run_dir: str | Path):
    """The resolved config saved in a run directory (see :meth:`posthoc_vq.run.Run.config`)."""
    return Run.open(run_dir).config()
