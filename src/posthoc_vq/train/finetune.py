"""Decoder fine-tuning on a post-hoc codebook's quantized latents (``posthoc-vq finetune``).

A post-hoc codebook feeds the decoder vectors it was never trained on. Fine-tuning the decoder
on them, with the encoder frozen, is the middle arm between post-hoc quantization (no training)
and a model trained with its codebook, and this module measures what it costs.

The source run is only read: never locked, never written. Its train and val images are encoded
in memory by the frozen encoder into the codebook's kind of latents (``mu``, or ``z`` with the
codebook's seed; the run's latent cache is neither read nor written), quantized
with the codebook (nearest code per token; a residual codebook sums its stages; a class-conditional
one takes the nearest code of the token's image's class), and the decoder
(``fc_dec``/``conv_dec`` and ``decoder``, BatchNorm in train mode) is trained on (quantized latent
-> image) with the run's reconstruction loss, Adam, seeded shuffling and early stopping on the
val reconstruction loss. With ``part='decoder+codebook'`` the codebook's vectors (k-means, random-prior
and class-conditional: ``codebook_`` (K, D); residual: every stage) are parameters too: codes stay
nearest neighbours of the current vectors (reassigned every epoch; class-conditional: within the
token's class) and the vectors get their gradient
through the decoder, which they feed directly.

The result is a new run directory that evaluates like any other::

    config.json                      the source's config (the model and data are the source's)
    finetune.json                    source run, its model's sha256, codebook and its sha256, part, settings
    provenance.json                  this fine-tune's, with the source's provenance inside
    model.safetensors / model.json   the best validation epoch; epoch 0 is the source model, kept when nothing improves
    codebooks/<name>/                the codebook under the same name: unchanged (decoder) or fine-tuned (decoder+codebook)
    history.json/.csv, train_summary.json, checkpoints/   as a training run; ``--resume`` continues from the newest checkpoint

``train_summary.json`` records the fine-tune's own ``compute`` (wall seconds of encoding,
quantizing and the epochs, summed over resumes; optimizer steps; train images seen) and, as
``upstream``, what the source model's training, the encoding of the codebook's fit set and the
codebook's fit cost, so a quality-vs-compute plot can sum them.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn as nn
from rich.console import Console

from posthoc_vq.devices import autocast, device_record, resolve_device, resolve_precision
from posthoc_vq.errors import ConfigError, TrainingError
from posthoc_vq.io import write_json
from posthoc_vq.latents import encode_split, from_tokens, load_run_splits, to_tokens
from posthoc_vq.metrics.codebook import codebook_usage
from posthoc_vq.models import VAEBase, VAEOutput
from posthoc_vq.tokens import from_tokens as tokens_to_latents
from posthoc_vq.provenance import provenance
from posthoc_vq.quantize.codebooks import open_codebook
from posthoc_vq.quantize.latent.base import CodebookEstimator, predict_codes
from posthoc_vq.quantize.latent.store import save_codebook
from posthoc_vq.records import FinetuneRecord, compute_record, model_compute, read_dict, total_compute
from posthoc_vq.run import Run, check_codebook_name
from posthoc_vq.seeding import generator
from posthoc_vq.train.checkpoint import trained_data, latest_checkpoint, load_checkpoint, save_model
from posthoc_vq.train.loop import EpochSteps, LoopState, Stopping, run_epochs
from posthoc_vq.train.trainer import images_tensor

Part = Literal["decoder", "decoder+codebook"]
PARTS = ("decoder", "decoder+codebook")
ENCODER_MODULES = ("encoder", "fc_mu", "fc_logvar", "conv_mu", "conv_logvar")
DECODER_MODULES = ("fc_dec", "conv_dec", "decoder")
# methods whose vectors can be trained: the state tensor holding them (graph codebooks assign along a kNN graph of their fitted latents)
TRAINABLE_VECTORS = {"kmeans": "codebook", "random-prior": "codebook", "residual": "codebooks", "class-conditional": "codebook"}
# keys save_codebook writes itself from the estimator: never copied from the source record
STORE_KEYS = ("method", "params", "n_codes", "dim", "bits_per_vector", "tensor_shapes", "sha256", "state")


@dataclass
class FinetuneResult:
    """What :func:`finetune` did; the first fields are ``train_summary.json``'s, as a training run's."""

    run_dir: str
    epochs: int  # epochs completed (epoch 0, the source model, not counted)
    best_epoch: int  # 0: no epoch beat the source model on val, which is kept
    best_val_loss: float  # val reconstruction loss (per image) of the kept model on quantized latents
    converged: bool  # stopped by early stopping
    stop_reason: str  # 'early_stopping' | 'max_epochs'
    steps: int  # optimizer steps of the fine-tune
    seconds: float  # encoding, quantizing and the epochs, summed over resumes
    images_per_second: float
    images_seen: int  # train images through optimizer steps: epochs x train images
    source: str
    codebook: str
    part: str
    val_loss_before: float  # the source model's val reconstruction loss on the quantized latents

    @property
    def compute(self) -> dict[str, Any]:
        """The fine-tune's own compute record (wall seconds, optimizer steps, images seen)."""
        return compute_record(self.seconds, self.steps, self.images_seen)


class _Tuned(nn.Module):
    """The VAE and, with part decoder+codebook, the codebook vectors: one state dict for checkpoints."""

    def __init__(self, vae: VAEBase, vectors: torch.Tensor | None):
        super().__init__()
        self.vae = vae
        if vectors is None:
            self.register_parameter("vectors", None)
        else:
            self.vectors = nn.Parameter(vectors.clone())  # (K, C), or (M, K, C) residual stages


def finetune(
    run_dir: str | Path | Run, codebook: str, out: str | Path, *, epochs: int = 20, part: Part = "decoder", lr: float | None = None,
    patience: int | None = None, min_delta: float | None = None, resume: bool = False, data_dir: str | None = None, progress: bool = True,
    console: Console | None = None, device: str | torch.device | None = "cpu",
) -> FinetuneResult:
    """Fine-tune a run's decoder (and optionally its codebook) on codebook ``codebook``'s quantized latents into a new run ``out``.

    Parameters
    ----------
    run_dir : the source run; only read (no lock is taken, nothing is written into it).
    codebook : name of a codebook of the source run (its vectors must be the model's latent size).
    out : the new run directory; refused when it already holds a run (unless ``resume``) or lies inside the source.
    epochs : most epochs; early stopping on the val reconstruction loss with ``patience`` (default: the run's ``train.patience``).
    part : ``decoder`` (the codebook is copied unchanged) or ``decoder+codebook`` (its vectors are trained too).
    lr : Adam learning rate (default: the run's ``train.lr``).
    min_delta : val-loss gain (per image) that counts as an improvement (default: the run's ``train.min_delta``).
    resume : continue ``out`` from its newest checkpoint (``epochs`` and ``patience`` may change; the rest must match).
    device : where images are encoded and the decoder is trained ('cpu', the default, 'auto', 'cuda', 'cuda:N', 'mps');
        the codes are assigned on CPU, the shuffling order is drawn on CPU (the same batches on every device).

    Returns
    -------
    FinetuneResult; the new run holds the model of the best val epoch and the codebook under the same name.
    """
    if part not in PARTS:
        raise ConfigError(f"unknown part {part!r}; fine-tune 'decoder' or 'decoder+codebook'")
    for flag, value, ok in (("--epochs", epochs, epochs >= 1), ("--lr", lr, lr is None or (math.isfinite(lr) and lr > 0)), ("--patience", patience, patience is None or patience >= 1)):
        if not ok:
            raise ConfigError(f"{flag} {value} is invalid: epochs and patience are at least 1, lr a positive number")
    source = Run.open(run_dir)
    name = check_codebook_name(codebook)
    target = Run(out)
    _check_apart(source, target)
    if target.exists() and not resume:
        raise ConfigError(f"{target.root} already holds a run; choose another --out (or pass --resume to continue a fine-tune there)")
    trained_quantizer = getattr(source.config().model, "quantizer", "none")
    if trained_quantizer != "none":  # its decode quantizes with its own codebook first: a post-hoc codebook's vectors never reach the decoder as they are
        raise ConfigError(f"{source.root} has a trained quantizer (model.quantizer={trained_quantizer}); fine-tuning a decoder on a post-hoc codebook applies to continuous VAEs")
    estimator, cb_meta = open_codebook(source, name)  # a missing codebook, or one of another latent size, is a clear error here
    if part == "decoder+codebook" and estimator.method not in TRAINABLE_VECTORS:
        raise ConfigError(
            f"codebook '{name}' is a {estimator.method} codebook, whose codes are assigned along a kNN graph of its fitted latents: "
            f"its vectors cannot be trained; use --part decoder, or a {' / '.join(TRAINABLE_VECTORS)} codebook"
        )
    run = Run.create(out)
    with run.lock("finetune"):
        if run.exists() and not resume:  # checked again under the lock: another writer may have created it meanwhile
            raise ConfigError(f"{run.root} already holds a run; choose another --out (or pass --resume to continue a fine-tune there)")
        return _Finetuner(source, run, name, estimator, cb_meta, epochs=epochs, part=part, lr=lr, patience=patience, min_delta=min_delta,
                          data_dir=data_dir, progress=progress, console=console, device=resolve_device(device)).fit(resume)


def _check_apart(source: Run, target: Run) -> None:
    a, b = source.root.resolve(), target.root.resolve()
    if a == b:
        raise ConfigError(f"--out {target.root} is the source run; a fine-tune writes a new run and never touches its source: choose another --out")
    if a in b.parents:
        raise ConfigError(f"--out {target.root} lies inside the source run {source.root}, which a fine-tune never writes into; choose another --out")
    if b in a.parents:
        raise ConfigError(f"--out {target.root} contains the source run {source.root}; choose another --out")


def decoder_parameters(vae: VAEBase) -> list[nn.Parameter]:
    """The decoder's parameters; the encoder's are frozen (``requires_grad`` off). A module of neither part is an error."""
    children = dict(vae.named_children())
    unknown = sorted(set(children) - set(ENCODER_MODULES) - set(DECODER_MODULES))
    if unknown:
        raise ConfigError(f"{type(vae).__name__} has modules {unknown} that are neither encoder nor decoder; fine-tuning does not know this model family")
    for n in ENCODER_MODULES:
        if n in children:
            children[n].requires_grad_(False)
    return [p for n in DECODER_MODULES if n in children for p in children[n].parameters()]


class _Finetuner:
    """One fine-tune into ``run`` (whose lock the caller holds)."""

    def __init__(self, source: Run, run: Run, name: str, estimator: CodebookEstimator, cb_meta: dict[str, Any], *, epochs: int, part: str,
                 lr: float | None, patience: int | None, min_delta: float | None, data_dir: str | None, progress: bool, console: Console | None,
                 device: torch.device = torch.device("cpu")):
        self.source, self.run, self.name, self.estimator, self.cb_meta, self.part = source, run, name, estimator, cb_meta, part
        self.device = device
        self.console = console or Console(stderr=True)
        self.progress = progress
        self.config = source.config()
        t = self.config.train
        torch.set_num_threads(t.threads)
        self.settings = {
            "source_run": str(source.root), "source_model_sha256": source.verified_model_sha256(), "codebook": name,
            "codebook_sha256": cb_meta["sha256"], "method": estimator.method, "part": part, "epochs": int(epochs),
            "lr": float(lr if lr is not None else t.lr), "patience": int(patience if patience is not None else t.patience),
            "batch_size": t.batch_size, "min_delta": float(min_delta if min_delta is not None else t.min_delta), "grad_clip": t.grad_clip, "seed": self.config.seed,
        }
        self.splits = load_run_splits(source.root, data_dir)
        self.vae, self.source_meta = source.load_model()
        trainable = TRAINABLE_VECTORS.get(estimator.method) if part == "decoder+codebook" else None
        vectors = estimator.state_tensors()[trainable] if trainable else None
        self.vector_key = trainable
        self.model = _Tuned(self.vae, vectors).to(device)
        params = decoder_parameters(self.vae) + ([self.model.vectors] if trainable else [])
        self.optimizer = torch.optim.Adam(params, lr=self.settings["lr"], weight_decay=t.weight_decay)
        self.precision = resolve_precision(t.precision, device)
        self.autocast = lambda: autocast(device, self.precision)
        self.train_x, self.val_x = (images_tensor(self.splits, s).to(device) for s in ("train", "val"))  # uint8 (N, C, H, W)
        self.split_labels = {s: np.asarray(self.splits.split(s).labels, dtype=np.int64) for s in ("train", "val")}  # per-class usage; class-conditional codes

    # ------------------------------------------------------------------ quantized latents
    def _encode(self) -> None:
        """Latents of the train and val images under the frozen encoder, of the kind the codebook was fitted on
        (``mu``, or ``z`` with its recorded seed), as tokens (N * T, C)."""
        kind, seed = self.cb_meta.get("latents") or "mu", self.cb_meta.get("latent_seed") or 0
        self.vae.eval()
        with torch.no_grad():
            z = {s: encode_split(self.vae, self.splits.split(s).to_tensor(), kind, seed, device=self.device) for s in ("train", "val")}  # (N, *L) on CPU
        self.latent_shape = tuple(z["train"].shape[1:])
        self.tokens_per_image = int(np.prod(self.latent_shape[1:], dtype=np.int64))
        self.tokens = {s: to_tokens(v.numpy()) for s, v in z.items()}  # (N * T, C)
        self.token_labels = {s: np.repeat(y, self.tokens_per_image) for s, y in self.split_labels.items()}  # (N * T,): each token its image's class
        if self.vector_key is None:  # fixed vectors: quantize once, exactly as the evaluation does
            self.fixed = {s: torch.from_numpy(from_tokens(self.estimator.inverse_transform(predict_codes(self.estimator, t, self.token_labels[s])), self.latent_shape)).to(self.device)
                          for s, t in self.tokens.items()}  # (N, *L)

    def _current_estimator(self) -> CodebookEstimator:
        """The codebook with the vectors as they are now (the source's for part decoder)."""
        if self.vector_key is not None:
            self.estimator.load_state({self.vector_key: self.model.vectors.detach().cpu().clone()}, self.estimator.state_info())
        return self.estimator

    def _assign(self) -> None:
        """Codes (N, T) or (N, T, M) of the train and val tokens: the nearest current vectors (residual: stage by stage)."""
        if self.vector_key is None:
            return
        estimator = self._current_estimator()
        self.codes = {}
        for s, t in self.tokens.items():
            codes = predict_codes(estimator, t, self.token_labels[s])  # (N * T,) or (N * T, M)
            self.codes[s] = torch.from_numpy(codes).reshape(-1, self.tokens_per_image, *codes.shape[1:]).to(self.device)

    def _latents(self, split: str, idx: torch.Tensor | slice) -> torch.Tensor:
        """Quantized latents (B, *L) of images ``idx`` of a split; differentiable in the vectors when they are trained."""
        if self.vector_key is None:
            return self.fixed[split][idx]
        book, codes = self.model.vectors, self.codes[split][idx]  # (K, C) or (M, K, C); (B, T) or (B, T, M)
        if book.dim() == 3:  # residual: the sum of one vector per stage
            tokens = sum(book[m][codes[..., m]] for m in range(book.shape[0]))  # (B, T, C)
        else:
            tokens = book[codes]  # (B, T, C)
        return tokens_to_latents(tokens, tuple(self.latent_shape))  # (B, *L), differentiable in the vectors

    def _recon(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The run's reconstruction loss per image of decode(z) against x (the VAE's own loss, whose KL term is 0 here)."""
        with self.autocast():
            logits = self.vae.decode_logits(z)
        zero = torch.zeros_like(z)
        return self.vae.loss(x, VAEOutput(self.vae.to_image(logits), logits, zero, zero, z)).recon

    # ------------------------------------------------------------------ one epoch
    def _train_mode(self) -> None:
        """Decoder (and its BatchNorm) in train mode; the frozen encoder's BatchNorm statistics stay as they are."""
        self.model.train()
        for n in ENCODER_MODULES:
            if hasattr(self.vae, n):
                getattr(self.vae, n).eval()

    def train_epoch(self, epoch: int, on_batch=None) -> float:
        """One pass over the shuffled train split; returns the mean reconstruction loss per image."""
        bs, seed = self.settings["batch_size"], self.settings["seed"]
        self._train_mode()
        order = torch.randperm(len(self.train_x), generator=generator(seed, "finetune-shuffle", epoch))
        total = 0.0
        for i in range(0, len(order), bs):
            idx = order[i : i + bs]
            x = self.train_x[idx].float().div_(255.0)  # (B, C, H, W) in [0, 1]
            loss = self._recon(x, self._latents("train", idx))
            value = loss.item()
            if not math.isfinite(value):
                ckpt = latest_checkpoint(self.run)
                kept = f"the last good checkpoint is kept in {ckpt}, but --resume keeps the lr: " if ckpt is not None else "no checkpoint was saved yet: "
                raise TrainingError(f"fine-tune loss became {value} at epoch {epoch} (global step {self.step + 1}); {kept}start over with a lower --lr and another --out")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.settings["grad_clip"] is not None:
                torch.nn.utils.clip_grad_norm_([p for g in self.optimizer.param_groups for p in g["params"]], self.settings["grad_clip"])
            self.optimizer.step()
            self.step += 1
            total += value * len(idx)
            if on_batch is not None:
                on_batch(value)
        return total / len(order)

    def _train_and_assign(self, epoch: int, on_batch) -> dict[str, float]:
        """One epoch, then the codes of the next epoch and of validation: the nearest ones to the (possibly trained) vectors now."""
        loss = self.train_epoch(epoch, on_batch=on_batch)
        self._assign()
        return {"train_loss": loss, "train_recon": loss}

    @torch.no_grad()
    def validate(self) -> float:
        """Mean reconstruction loss per image on the val split, decoded from its quantized latents."""
        self.model.eval()
        bs, total = self.config.train.eval_batch_size, 0.0
        for i in range(0, len(self.val_x), bs):
            x = self.val_x[i : i + bs].float().div_(255.0)
            total += self._recon(x, self._latents("val", slice(i, i + bs))).item() * len(x)
        loss = total / len(self.val_x)
        if not math.isfinite(loss):
            raise TrainingError(f"fine-tune validation loss became {loss}; start over with a lower --lr and another --out")
        return loss

    # ------------------------------------------------------------------ the run
    def fit(self, resume: bool) -> FinetuneResult:
        s = self.settings
        self.step, start_epoch, history, images_seen = 0, 1, [], 0
        best_val, best_epoch, bad_epochs, seconds, val_before = math.inf, 0, 0, 0.0, math.nan
        ckpt = latest_checkpoint(self.run) if resume and self.run.exists() else None
        if resume and self.run.exists():
            self._check_resume()
        if ckpt is not None:
            state = load_checkpoint(ckpt, self.model, self.optimizer)
            self.step, history, images_seen = state["step"], state["history"], state["images_seen"]
            best_val, best_epoch, bad_epochs = state["best_val"], state["best_epoch"], state["bad_epochs"]
            start_epoch, seconds, val_before = state["epoch"] + 1, state["seconds"], state["val_loss_before"]
            self.console.print(f"resuming the fine-tune {self.run.root} after epoch {state['epoch']}")
        self._write_run_files(resumed=ckpt is not None)

        tic = time.perf_counter()
        self._encode()
        self._assign()
        if ckpt is None:  # epoch 0: the source model on the quantized latents, kept unless an epoch beats it
            best_val = val_before = self.validate()
            self._save_best(0, best_val)
        seconds += time.perf_counter() - tic

        state = LoopState(history, best_val, best_epoch, bad_epochs, seconds, images_seen)
        steps = EpochSteps(
            train=self._train_and_assign,
            validate=lambda: dict.fromkeys(("val_loss", "val_recon"), self.validate()),
            keep_best=lambda epoch, row: self._save_best(epoch, row["val_loss"]),
            checkpoint=lambda: {"step": self.step, "val_loss_before": val_before, "finetune": s},
            line=lambda row, improved: (f"fine-tune epoch {row['epoch']:3d}  train recon {row['train_loss']:.3f}  val recon {row['val_loss']:.3f} "
                                        f"(before {val_before:.3f})  {'*' if improved else ' '}  {row['seconds']:.1f}s"),
            lr=lambda: self.optimizer.param_groups[0]["lr"],
        )
        stop_reason = run_epochs(self.run, self.model, self.optimizer, state, Stopping(s["epochs"], s["patience"], s["min_delta"]), steps,
                                 start_epoch=start_epoch, n_batches=math.ceil(len(self.train_x) / s["batch_size"]), n_images=len(self.train_x),
                                 console=self.console, progress=self.progress, label="fine-tune epoch")
        history, best_val, best_epoch, seconds, images_seen = state.history, state.best_val, state.best_epoch, state.seconds, state.images_seen

        epochs_done = history[-1]["epoch"] if history else 0
        result = FinetuneResult(
            run_dir=str(self.run.root), epochs=epochs_done, best_epoch=best_epoch, best_val_loss=best_val, converged=stop_reason == "early_stopping",
            stop_reason=stop_reason, steps=self.step, seconds=seconds, images_per_second=images_seen / seconds if seconds else 0.0,
            images_seen=images_seen, source=str(self.source.root), codebook=self.name, part=self.part, val_loss_before=val_before,
        )
        write_json(self.run.summary_file, {**asdict(result), "compute": result.compute, "finetune": s, "upstream": self._upstream()})
        return result

    def _upstream(self) -> dict[str, Any]:
        """What the source model's training (a fine-tuned source: its training and fine-tune), the encoding of the
        codebook's fit set and the codebook's fit cost; None where the source predates compute accounting."""
        model = total_compute(model_compute(self.source.summary()))
        return {
            "training": model["total"] if model["complete"] else None,
            "latent_encoding": self.cb_meta.get("encoding_compute"),
            "codebook_fit": self.cb_meta.get("compute"),
        }

    def _save_best(self, epoch: int, val_loss: float) -> None:
        """The model (and, with trained vectors, the codebook) of a new best val epoch; epoch 0 writes the source's."""
        src_steps = self.source_meta.get("trained_steps")
        save_model(self.run, self.vae, {
            "epoch": epoch, "val_loss": val_loss, "trained_steps": None if src_steps is None else src_steps + self.step,
            "finetune": {"source_run": self.settings["source_run"], "source_model_sha256": self.settings["source_model_sha256"],
                         "source_epoch": self.source_meta.get("epoch"), "source_trained_steps": src_steps, "codebook": self.name,
                         "part": self.part, "epoch": epoch, "steps": self.step},
            "data": trained_data(self.config),
        })
        if epoch == 0 or self.vector_key is not None:
            self._save_codebook(epoch)

    def _save_codebook(self, epoch: int) -> None:
        """The codebook into the new run under the same name: the source's vectors, or the trained ones with their usage on the train split."""
        estimator = self._current_estimator()
        meta = {k: v for k, v in self.cb_meta.items() if k not in STORE_KEYS + ("model_sha256",)}  # the source model's: see fine_tuned_from
        meta |= {"name": self.name, "run": str(self.run.root), "part": self.part,
                 "fine_tuned_from": {"run": self.settings["source_run"], "codebook": self.name, "sha256": self.cb_meta["sha256"], "epoch": epoch}}
        if self.vector_key is not None:  # the vectors moved: usage on the fit set is recounted on the train split with them
            meta["fit_usage"] = codebook_usage(predict_codes(estimator, self.tokens["train"], self.token_labels["train"]), estimator.n_codes, self.token_labels["train"])
            meta["fit_usage_note"] = "recounted on the train split with the fine-tuned vectors"
        save_codebook(self.run.new_artifact("codebooks", self.name), estimator, meta)

    def _check_resume(self) -> None:
        """A resumed fine-tune continues the same one: same source model, codebook, part and lr (epochs and patience may change)."""
        if not self.run.finetune_file.exists():
            raise ConfigError(f"{self.run.root} is not a fine-tuned run (no {self.run.finetune_file.name}); --resume continues a fine-tune, choose another --out")
        old = read_dict(self.run.finetune_file, FinetuneRecord, "fine-tune record")
        changed = [k for k in ("source_model_sha256", "codebook", "codebook_sha256", "part", "lr", "batch_size", "seed") if old.get(k) != self.settings[k]]
        if changed:
            detail = ", ".join(f"{k}: {old.get(k)} -> {self.settings[k]}" for k in changed)
            raise ConfigError(f"--resume of the fine-tune {self.run.root} with a different source or settings ({detail}); "
                              "only --epochs and --patience may change; start a new fine-tune with another --out")

    def _write_run_files(self, resumed: bool) -> None:
        write_json(self.run.config_file, self.config.to_dict())
        write_json(self.run.finetune_file, self.settings)
        sizes = {s: len(self.splits.split(s)) for s in ("train", "val", "test")}
        write_json(self.run.provenance_file(resumed), provenance(seed=self.config.seed, resumed=resumed, dataset_sizes=sizes,
                                                                 finetune_of={"run": str(self.source.root), "provenance": self.source.provenance()},
                                                                 precision=self.precision, **device_record(self.device)))
