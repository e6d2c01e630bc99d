"""The epoch loop, once, for training (:mod:`~posthoc_vq.train.trainer`) and decoder fine-tuning (:mod:`~posthoc_vq.train.finetune`).

Each epoch: train, validate, judge the validation loss against the best so far (an improvement beats it by more than
``min_delta``; the first ``min_epochs`` epochs never count toward ``patience``), keep the best model, write the history
and a resumable checkpoint, print one line, and stop early after ``patience`` epochs without improvement. What differs
between the two (what an epoch trains, what is saved, what a checkpoint carries besides the loop's own state, the line
printed) comes in as callables. Progress: a bar over the epochs with ETA and one over each epoch's batches.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from posthoc_vq.run import Run
from posthoc_vq.train.checkpoint import save_checkpoint
from posthoc_vq.train.history import write_history


@dataclass
class Stopping:
    """Early stopping on the validation loss."""

    epochs: int  # the cap; a run that reaches it has not converged
    patience: int
    min_delta: float
    min_epochs: int = 0  # warm-up: these epochs never count toward patience
    enabled: bool = True


@dataclass
class LoopState:
    """The loop's resumable state (saved in every checkpoint under these names)."""

    history: list[dict[str, Any]] = field(default_factory=list)
    best_val: float = math.inf
    best_epoch: int = 0
    bad_epochs: int = 0
    seconds: float = 0.0
    images_seen: int = 0
    last_checkpoint: Path | None = None

    def checkpoint(self) -> dict[str, Any]:
        return {"history": self.history, "best_val": self.best_val, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs,
                "seconds": self.seconds, "images_seen": self.images_seen}


@dataclass
class EpochSteps:
    """What one kind of training does in an epoch.

    ``train(epoch, on_batch)`` and ``validate()`` return the row's losses (``train_loss``..., ``val_loss``...);
    ``keep_best(epoch, row)`` saves the model of an improved epoch; ``after(row)`` runs once the epoch is judged (a
    learning-rate schedule); ``checkpoint()`` gives the checkpoint's own fields (optimizer step, settings...);
    ``log(epoch, row)`` reports a finished row (a tracker); ``line(row, improved)`` is the printed line; ``saved(path)`` is
    told each checkpoint written (a diverging run resumes from the last one).
    """

    train: Callable[[int, Callable[[float], None]], dict[str, float]]
    validate: Callable[[], dict[str, float]]
    keep_best: Callable[[int, dict[str, Any]], None]
    checkpoint: Callable[[], dict[str, Any]]
    line: Callable[[dict[str, Any], bool], str]
    after: Callable[[dict[str, Any]], None] = lambda row: None
    log: Callable[[int, dict[str, Any]], None] = lambda epoch, row: None
    lr: Callable[[], float] = lambda: math.nan
    saved: Callable[[Path], None] = lambda path: None  # told each checkpoint as soon as it is written


def run_epochs(run: Run, model: Any, optimizer: Any, state: LoopState, stopping: Stopping, steps: EpochSteps, *, start_epoch: int,
               n_batches: int, n_images: int, console: Console, progress: bool, label: str = "epoch",
               first_row: dict[str, Any] | None = None) -> str:
    """Run epochs ``start_epoch``..``stopping.epochs`` (updating ``state``); returns the stop reason, ``early_stopping`` or ``max_epochs``.

    ``n_images``: images one epoch trains on (for ``images_seen``); ``first_row``: fields added to the first epoch's row
    (a resume's config changes).
    """
    if stopping.enabled and state.bad_epochs >= stopping.patience:  # a resumed run that had already stopped
        return "early_stopping"
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]:.3f}"),
                   TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console, disable=not progress)
    with bar:
        epochs_task = bar.add_task(f"{label}s", total=stopping.epochs, completed=start_epoch - 1, loss=float("nan"))
        for epoch in range(start_epoch, stopping.epochs + 1):
            task = bar.add_task(f"{label} {epoch}", total=n_batches, loss=float("nan"))
            tic = time.perf_counter()
            row: dict[str, Any] = {"epoch": epoch, "lr": steps.lr()}
            row |= steps.train(epoch, lambda loss, task=task: bar.update(task, advance=1, loss=loss))
            row |= steps.validate()
            if first_row and epoch == start_epoch:
                row |= first_row
            row["seconds"] = time.perf_counter() - tic
            state.seconds += row["seconds"]
            state.images_seen += n_images
            improved = row["val_loss"] < state.best_val - stopping.min_delta
            row["improved"] = improved
            state.history.append(row)
            steps.log(epoch, row)
            if improved:
                state.best_val, state.best_epoch, state.bad_epochs = row["val_loss"], epoch, 0
                steps.keep_best(epoch, row)
            elif epoch > stopping.min_epochs:  # the warm-up's epochs never count toward patience
                state.bad_epochs += 1
            steps.after(row)
            write_history(run, state.history)
            state.last_checkpoint = save_checkpoint(run, epoch, model, optimizer, {**steps.checkpoint(), **state.checkpoint()})
            steps.saved(state.last_checkpoint)
            bar.remove_task(task)
            bar.update(epochs_task, advance=1, loss=row["val_loss"])
            console.print(steps.line(row, improved), highlight=False)
            if stopping.enabled and state.bad_epochs >= stopping.patience:
                return "early_stopping"
    return "max_epochs"
