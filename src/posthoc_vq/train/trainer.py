"""VAE trainer: Adam, LR schedule, early stopping on validation loss, resumable checkpoints.

The whole state needed to continue a run is saved at each epoch end (see
``checkpoint.py``); random streams are reseeded per epoch (see ``seeding.py``),
so ``fit(resume=True)`` after a kill gives the same weights as a run that was
never interrupted.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from posthoc_vq.config import RunConfig
from posthoc_vq.data import DatasetSplits, load_config_dataset
from posthoc_vq.devices import autocast, device_record, resolve_device, resolve_precision
from posthoc_vq.errors import ConfigError, TrainingError
from posthoc_vq.io import write_json
from posthoc_vq.models import ConvVAE, build_vae
from posthoc_vq.models.quantizers import CodeUsage
from posthoc_vq.provenance import provenance
from posthoc_vq.records import compute_record
from posthoc_vq.run import Run
from posthoc_vq.train.checkpoint import trained_data, latest_checkpoint, load_checkpoint, save_model
from posthoc_vq.train.history import format_changes, record_config_changes
from posthoc_vq.train.loop import EpochSteps, LoopState, Stopping, run_epochs
from posthoc_vq.seeding import derived_seed, generator, seed_everything
from posthoc_vq.tracking import NullTracker, SafeTracker, Tracker, flatten, numeric



@dataclass
class TrainResult:
    run_dir: str
    epochs: int  # epochs completed
    best_epoch: int
    best_val_loss: float
    converged: bool  # stopped by the early-stopping criterion
    stop_reason: str  # 'early_stopping' | 'max_epochs'
    steps: int  # optimizer steps taken
    seconds: float
    images_per_second: float
    images_seen: int = 0  # train images passed through optimizer steps: epochs x train images, over every invocation
    device: str = "cpu"  # where this invocation trained (a resumed run may have trained its earlier epochs elsewhere)
    precision: str = "fp32"  # what train.precision meant there ('auto' resolved: fp32 or bf16)

    @property
    def compute(self) -> dict[str, Any]:
        """What training cost (``train_summary.json``'s ``compute``): seconds of the epochs (train and
        val passes, summed over resumes), optimizer steps, images seen."""
        return compute_record(self.seconds, self.steps, self.images_seen)


def images_tensor(splits: DatasetSplits, split: str) -> torch.Tensor:
    """uint8 (N, C, H, W) tensor of one split; batches are converted to float on the fly."""
    return torch.from_numpy(splits.split(split).images).permute(0, 3, 1, 2).contiguous()


def resolve_model_config(config: RunConfig, splits: DatasetSplits) -> RunConfig:
    """Fill ``model.image_size``/``in_channels`` from the dataset; a conflicting value is a ConfigError."""
    model = config.model
    for key, actual in (("image_size", splits.image_size), ("in_channels", splits.channels)):
        given = getattr(model, key)
        if given is not None and given != actual:
            raise ConfigError(f"model.{key}={given} does not match dataset '{splits.name}' ({actual}); remove the key or fix it")
    try:
        model = model.model_validate({**model.model_dump(), "image_size": splits.image_size, "in_channels": splits.channels})
    except ValueError as err:
        raise ConfigError(f"model config does not fit dataset '{splits.name}': {err}") from None
    return config.model_copy(update={"model": model})


def _usage_text(row: dict[str, Any]) -> str:
    """A trained quantizer's epoch in words (empty for a continuous VAE)."""
    if "train_codes_used" not in row:
        return ""
    return (f"  commitment {row['val_commitment']:.3f}, codes used {row['train_codes_used']} (dead {row['train_codes_dead']}), "
            f"perplexity {row['train_perplexity']:.1f}, entropy {row['train_code_entropy_bits']:.2f} bits")


def _scheduler(config: RunConfig, optimizer: torch.optim.Optimizer):
    t = config.train
    if t.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=t.epochs)
    if t.lr_schedule == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=t.lr_step_size, gamma=t.lr_gamma)
    if t.lr_schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=t.lr_gamma, patience=max(1, t.patience // 2))
    return None


class Trainer:
    """Train one VAE run into ``run_dir``.

    Parameters
    ----------
    config : the run's config; ``model.image_size``/``in_channels`` are resolved from the data.
    run_dir : output folder (created).
    splits : pre-loaded data (else loaded from ``config.data``).
    progress : show a rich progress bar with ETA.
    tracker : an experiment tracker (:mod:`posthoc_vq.tracking`): gets the resolved config as params
        (dotted keys) when training starts and each epoch's numbers as metrics (step = epoch); a
        tracker that raises is turned off with one warning, training goes on.
    device : where to train ('cpu', the default, 'auto', 'cuda', 'cuda:N', 'mps'; see
        :func:`posthoc_vq.devices.resolve_device`). The images go to the device once (uint8); the
        shuffling order and the reparameterisation noise are drawn from CPU generators on every
        device, so a GPU run sees the same batches and noise as a CPU run and differs only by the
        device's arithmetic. Recorded in the run's provenance and summary; checkpoints hold CPU
        tensors, so a run may be resumed on another device.
    """

    def __init__(self, config: RunConfig, run_dir: str | Path, *, splits: DatasetSplits | None = None, progress: bool = True, console: Console | None = None,
                 tracker: Tracker | None = None, device: str | torch.device | None = "cpu"):
        self.device = resolve_device(device)
        torch.set_num_threads(config.train.threads)
        d = config.data
        self.splits = splits or load_config_dataset(d)
        self.config = resolve_model_config(config, self.splits)
        self.run = Run.create(run_dir)
        self.run_dir = self.run.root
        self.console = console or Console(stderr=True)
        self.progress = progress
        # a tracker never breaks training: one that raises warns once on stderr and is turned off
        self.tracker = NullTracker() if tracker is None else tracker if isinstance(tracker, SafeTracker) else SafeTracker(tracker)
        self.train_x = images_tensor(self.splits, "train").to(self.device)
        self.val_x = images_tensor(self.splits, "val").to(self.device)
        seed_everything(self.config.seed)
        self.model: ConvVAE = build_vae(self.config.model).to(self.device)  # initialised on CPU: the same weights on every device
        t = self.config.train
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
        self.scheduler = _scheduler(self.config, self.optimizer)
        self.precision = resolve_precision(t.precision, self.device)
        self.autocast = lambda: autocast(self.device, self.precision)

    # ------------------------------------------------------------------ one epoch
    def train_epoch(self, epoch: int, on_batch=None) -> dict[str, float]:
        """One pass over the shuffled train split; returns mean loss, recon and KL per image
        (with a trained quantizer also the commitment loss and the epoch's code usage)."""
        t, seed = self.config.train, self.config.seed
        self.model.train()
        order = torch.randperm(len(self.train_x), generator=generator(seed, "shuffle", epoch))
        noise = generator(seed, "noise", epoch)
        sums = torch.zeros(3, dtype=torch.float64)
        quantizer = self.model.quantizer
        usage, commitment = (CodeUsage(quantizer.n_codes, quantizer.n_stages), 0.0) if quantizer is not None else (None, None)
        if quantizer is not None:  # k-means init and dead-code restarts draw from torch's global generator: reseeded per epoch, so --resume reproduces
            torch.manual_seed(derived_seed(seed, "quantizer", epoch))
        n_batches = math.ceil(len(order) / t.batch_size)
        for i in range(n_batches):
            idx = order[i * t.batch_size : (i + 1) * t.batch_size]
            x = self.train_x[idx].float().div_(255.0)  # (B, C, H, W) in [0, 1]
            with self.autocast():
                out = self.model(x, generator=noise)
            losses = self.model.loss(x, out)
            loss_value = losses.loss.item()
            if not math.isfinite(loss_value):
                raise TrainingError(
                    f"loss became {loss_value} at epoch {epoch}, step {i + 1} of {n_batches} (global step {self.step + 1}). " + self._divergence_advice()
                )
            self.optimizer.zero_grad(set_to_none=True)
            losses.loss.backward()
            if t.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip)
            self.optimizer.step()
            self.step += 1
            sums += torch.tensor([loss_value * len(idx), losses.recon.item() * len(idx), losses.kl.item() * len(idx)], dtype=torch.float64)
            if usage is not None:
                usage.update(out.codes)
                commitment += losses.commitment.item() * len(idx)
            if on_batch is not None:
                on_batch(loss_value)
        loss, recon, kl = (sums / len(order)).tolist()
        row = {"train_loss": loss, "train_recon": recon, "train_kl": kl}
        if usage is not None:
            row |= {"train_commitment": commitment / len(order)} | {f"train_{k}": v for k, v in usage.stats().items()}
        return row

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Mean negative ELBO on the val split, with a fixed noise stream so epochs are comparable."""
        self.model.eval()
        noise = generator(self.config.seed, "val")
        sums = torch.zeros(3, dtype=torch.float64)
        commitment = 0.0
        bs = self.config.train.eval_batch_size
        for i in range(0, len(self.val_x), bs):
            x = self.val_x[i : i + bs].float().div_(255.0)
            with self.autocast():
                out = self.model(x, generator=noise)
            losses = self.model.loss(x, out)
            sums += torch.tensor([losses.loss.item(), losses.recon.item(), losses.kl.item()], dtype=torch.float64) * len(x)
            if losses.commitment is not None:
                commitment += losses.commitment.item() * len(x)
        loss, recon, kl = (sums / len(self.val_x)).tolist()
        if not math.isfinite(loss):
            raise TrainingError(f"validation loss became {loss}. " + self._divergence_advice())
        row = {"val_loss": loss, "val_recon": recon, "val_kl": kl}
        if self.model.quantizer is not None:
            row["val_commitment"] = commitment / len(self.val_x)
        return row

    def _divergence_advice(self) -> str:
        """What to do after a NaN/inf loss: resume from the last checkpoint with a lower lr, or start over if there is none."""
        t = self.config.train
        remedy = f"--set train.lr={t.lr / 10:g} --set train.grad_clip={1.0 if t.grad_clip is None else t.grad_clip / 2:g}"
        ckpt = getattr(self, "last_checkpoint", None)
        if ckpt is not None:
            return (
                f"The last good checkpoint is kept in {ckpt}; continue from it with a lower learning rate and/or gradient clipping "
                f"(train.lr and train.grad_clip may change on resume): posthoc-vq train --out {self.run_dir} --resume {remedy}"
            )
        return (
            "No checkpoint was saved yet (the first epoch did not finish), so there is nothing to continue: train again from scratch "
            f"with a lower learning rate and/or gradient clipping (for example {remedy}), after removing {self.run_dir} or with another --out. "
            f"Or keep the run's other settings with --resume, which starts over when there is no checkpoint: "
            f"posthoc-vq train --out {self.run_dir} --resume {remedy}"
        )

    def _resume_changes(self, trained: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
        """Config values that differ between the checkpoint's config (``trained``) and this one: dotted key -> from/to."""
        if trained is None:
            return {}
        out: dict[str, dict[str, Any]] = {}

        def walk(a: dict, b: dict, prefix: str) -> None:
            for key in sorted(set(a) | set(b)):
                va, vb = a.get(key), b.get(key)
                if isinstance(va, dict) and isinstance(vb, dict):
                    walk(va, vb, f"{prefix}{key}.")
                elif va != vb:
                    out[f"{prefix}{key}"] = {"from": va, "to": vb}

        walk(trained, self.config.to_dict(), "")
        return out

    def _apply_resume_changes(self, changes: dict[str, dict[str, Any]]) -> None:
        """Put a changed ``train.lr`` into the optimizer restored from the checkpoint (it carries the old lr).

        Without a schedule every step uses the new lr; with one, the schedule keeps its position
        and is rescaled to start from the new lr (its base lr becomes ``train.lr``).
        """
        if "train.lr" not in changes:
            return  # grad_clip, epochs and patience are read from the config as training goes
        old, new = changes["train.lr"]["from"], self.config.train.lr
        for group in self.optimizer.param_groups:
            group["lr"] = new if self.scheduler is None else new * (group["lr"] / old)
            if "initial_lr" in group:
                group["initial_lr"] = new
        if self.scheduler is not None:
            if hasattr(self.scheduler, "base_lrs"):
                self.scheduler.base_lrs = [new * (base / old) for base in self.scheduler.base_lrs]
            self.scheduler._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    # ------------------------------------------------------------------ the run
    def fit(self, resume: bool = False) -> TrainResult:
        """Train until early stopping or ``train.epochs``; resume from the newest checkpoint if asked.

        Holds the run's writer lock throughout (:meth:`posthoc_vq.run.Run.lock`).
        """
        with self.run.lock("train"):
            return self._fit(resume)

    def _fit(self, resume: bool) -> TrainResult:
        t = self.config.train
        self.step, start_epoch, history = 0, 1, []
        best_val, best_epoch, bad_epochs, seconds = math.inf, 0, 0, 0.0
        images_seen = 0
        ckpt = latest_checkpoint(self.run) if resume else None
        self.last_checkpoint, changes = ckpt, {}
        if ckpt is not None:
            state = load_checkpoint(ckpt, self.model, self.optimizer)
            if self.scheduler is not None and state.get("scheduler"):
                self.scheduler.load_state_dict(state["scheduler"])
            self.step, history = state["step"], state["history"]
            best_val, best_epoch, bad_epochs = state["best_val"], state["best_epoch"], state["bad_epochs"]
            start_epoch, seconds = state["epoch"] + 1, state["seconds"]
            images_seen = state.get("images_seen", len(self.train_x) * state["epoch"])  # checkpoints before compute accounting: every epoch saw the train split
            self.console.print(f"resuming {self.run_dir} after epoch {state['epoch']}")
            # what the checkpoint was trained with (older checkpoints: the config.json not yet rewritten)
            trained = state.get("config") or (self.run.config().to_dict() if self.run.exists() else None)
            changes = self._resume_changes(trained)
            if changes:
                self._apply_resume_changes(changes)
                if "train.min_epochs" in changes:  # the epochs after the best one that the new warm-up does not cover
                    bad_epochs = max(0, state["epoch"] - max(best_epoch, t.min_epochs))
                record_config_changes(self.run, trained, start_epoch, state["epoch"], changes)
                self.console.print(f"changed from epoch {start_epoch} on: {format_changes(changes)}", highlight=False)
        self._write_run_files(resumed=ckpt is not None)
        self.tracker.log_params(flatten(self.config.to_dict()))
        if ckpt is not None:  # a resumed run's tracker run holds the whole history, the epochs before the resume too
            self.tracker.set_tags({"resumed_after_epoch": state["epoch"]})
            for old in history:
                self.tracker.log_metrics(numeric({k: v for k, v in old.items() if k not in ("epoch", "changes")}), step=old["epoch"])

        state = LoopState(history, best_val, best_epoch, bad_epochs, seconds, images_seen, self.last_checkpoint)
        steps = EpochSteps(
            train=lambda epoch, on_batch: self.train_epoch(epoch, on_batch=on_batch),
            validate=self.validate,
            keep_best=lambda epoch, row: save_model(self.run, self.model, {"epoch": epoch, "val_loss": row["val_loss"], "trained_steps": self.step,
                                                                           "data": trained_data(self.config)}),
            after=self._schedule,
            checkpoint=lambda: {
                "step": self.step, "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
                "config": self.config.to_dict(),  # what this checkpoint was trained with: resume records changes against it
            },
            log=lambda epoch, row: self.tracker.log_metrics(numeric({k: v for k, v in row.items() if k not in ("epoch", "changes")}), step=epoch),
            line=lambda row, improved: (f"epoch {row['epoch']:3d}  train {row['train_loss']:.3f}  val {row['val_loss']:.3f} "
                                        f"(recon {row['val_recon']:.3f}, kl {row['val_kl']:.3f})  {'*' if improved else ' '}  {row['seconds']:.1f}s"
                                        + _usage_text(row)),
            lr=lambda: self.optimizer.param_groups[0]["lr"],
            saved=lambda path: setattr(self, "last_checkpoint", path),
        )
        stopping = Stopping(t.epochs, t.patience, t.min_delta, t.min_epochs, t.early_stopping)
        stop_reason = run_epochs(self.run, self.model, self.optimizer, state, stopping, steps, start_epoch=start_epoch,
                                 n_batches=math.ceil(len(self.train_x) / t.batch_size), n_images=len(self.train_x), console=self.console,
                                 progress=self.progress, first_row={"changes": changes} if changes else None)
        self.last_checkpoint = state.last_checkpoint
        history, best_val, best_epoch, seconds, images_seen = state.history, state.best_val, state.best_epoch, state.seconds, state.images_seen

        epochs_done = history[-1]["epoch"] if history else 0
        result = TrainResult(
            run_dir=str(self.run_dir), epochs=epochs_done, best_epoch=best_epoch, best_val_loss=best_val,
            converged=stop_reason == "early_stopping", stop_reason=stop_reason, steps=self.step, seconds=seconds,
            images_per_second=len(self.train_x) * epochs_done / seconds if seconds else 0.0, images_seen=images_seen, device=str(self.device),
            precision=self.precision,
        )
        write_json(self.run.summary_file, {**asdict(result), "compute": result.compute})
        return result

    def _schedule(self, row: dict[str, Any]) -> None:
        """One step of the learning-rate schedule after an epoch (plateau: on its validation loss)."""
        if self.scheduler is not None:
            self.scheduler.step(row["val_loss"]) if self.config.train.lr_schedule == "plateau" else self.scheduler.step()

    def _write_run_files(self, resumed: bool) -> None:
        write_json(self.run.config_file, self.config.to_dict())
        info = provenance(seed=self.config.seed, resumed=resumed, dataset_sizes={s: len(self.splits.split(s)) for s in ("train", "val", "test")},
                          precision=self.precision, **device_record(self.device))
        write_json(self.run.provenance_file(resumed), info)
