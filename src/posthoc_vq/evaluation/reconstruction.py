"""Absolute reconstruction quality of a model on held-out images.

Decoded outputs and ground truth are both images in [0, 1] (a model's outputs are mapped
from its declared ``output_range``, see :mod:`posthoc_vq.autoencoders`); PSNR uses data
range 1 and is averaged per image.

The core works on any autoencoder and a tensor of images (:func:`continuous_result`,
:func:`model_header`); :func:`evaluate_continuous` is the run-directory layer over it.

A model with a trained quantizer (VQ, RVQ, FSQ) is evaluated like a codebook
(:func:`trained_quantizer_result`): its ``continuous`` block is the model's own output
(``decode`` quantizes z_e), ``quantized`` is the same block, and the result carries the
quantizer, exact bits per image, and code usage on the split; ``pre_quantization`` (the decoder
fed z_e, which it never saw in training) is for information only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from posthoc_vq.autoencoders import as_autoencoder, decode_latents
from posthoc_vq.data import DatasetSplits
from posthoc_vq.data.photos import PHOTO_DATASETS, PREPARATION
from posthoc_vq.devices import resolve_device
from posthoc_vq.audit import audit
from posthoc_vq.latents import encode_split, load_run_splits
from posthoc_vq.metrics.codebook import codebook_usage
from posthoc_vq.metrics.intervals import mean_ci
from posthoc_vq.metrics.reconstruction import DATA_RANGE, ms_ssim, ms_ssim_supported, mse, psnr, ssim, ssim_window
from posthoc_vq.models import VAEBase, latent_shape_of
from posthoc_vq.models.quantizers import MAX_BINCOUNT_CODES
from posthoc_vq.progress import ProgressCallback, reporting
from posthoc_vq.provenance import provenance
from posthoc_vq.records import model_compute, total_compute
from posthoc_vq.results import Comparison, Evaluation, ImageQuality, MeanCI, Result
from posthoc_vq.run import Run

PSNR_CAP_DB = 100.0  # per-image PSNR of a (near-)perfect reconstruction is capped here, not +inf


def split_images(splits: DatasetSplits, split: str) -> torch.Tensor:
    """(N, C, H, W) float32 images of a split in [0, 1]."""
    return splits.split(split).to_tensor()


def decode(model: Any, z: torch.Tensor, batch_size: int = 1000, *, device: torch.device | str | None = None) -> torch.Tensor:
    """Decoded images (N, C, H, W) in [0, 1] from latents (N, *L).

    ``model`` is any autoencoder (this package's VAEs, an adapter, ...); a decoder whose output
    leaves its declared range raises :class:`~posthoc_vq.autoencoders.OutputRangeError`.
    """
    return decode_latents(as_autoencoder(model), z, batch_size, device=device)


class QualityMeter:
    """Per-image MSE, PSNR and SSIM of outputs against references, gathered batch by batch.

    MS-SSIM is added for images large enough for its five scales (:func:`~posthoc_vq.metrics.reconstruction.ms_ssim_supported`,
    at least 176 px a side, e.g. Kodak); for smaller ones (MNIST, CIFAR) it is not computed and its key is absent.

    Only the per-image values (and the outputs' range) are kept, not the images, so a stream of
    batches gives exactly the per-image values and CIs of one tensor: :func:`image_quality` is
    this with one batch.
    """

    def __init__(self) -> None:
        self.mse: list[np.ndarray] = []
        self.psnr: list[np.ndarray] = []
        self.ssim: list[np.ndarray] = []
        self.ms_ssim: list[np.ndarray | None] = []  # None for a batch too small for MS-SSIM
        self.lo, self.hi, self.image_size = float("inf"), float("-inf"), None

    def add(self, reference: torch.Tensor, output: torch.Tensor) -> QualityMeter:
        self.image_size = reference.shape[-1]
        self.mse.append(mse(reference, output).numpy())
        self.psnr.append(psnr(reference, output, data_range=DATA_RANGE).clamp(max=PSNR_CAP_DB).numpy())
        if ms_ssim_supported(*reference.shape[-2:]):  # its first scale is SSIM with the same window: computed once
            multi, single = ms_ssim(reference, output, data_range=DATA_RANGE, with_ssim=True)
            self.ssim.append(single.numpy())
            self.ms_ssim.append(multi.numpy())
        else:
            self.ssim.append(ssim(reference, output, data_range=DATA_RANGE).numpy())
            self.ms_ssim.append(None)
        self.lo, self.hi = min(self.lo, float(output.min())), max(self.hi, float(output.max()))
        return self

    def per_image(self) -> dict[str, np.ndarray]:
        """(N,) arrays ``mse``, ``psnr_db``, ``ssim`` (and ``ms_ssim`` if every batch was large enough): one value per image, in order."""
        values = {"mse": np.concatenate(self.mse), "psnr_db": np.concatenate(self.psnr), "ssim": np.concatenate(self.ssim)}
        if self.ms_ssim and all(v is not None for v in self.ms_ssim):
            values["ms_ssim"] = np.concatenate(self.ms_ssim)
        return values

    def result(self) -> ImageQuality:
        """The :class:`~posthoc_vq.results.ImageQuality`: each metric's mean with a 95% CI over images (``ms_ssim`` only where computed)."""
        values = self.per_image()
        win, sigma = ssim_window(self.image_size)
        result = {
            "n_images": len(values["mse"]),
            "mse": mean_ci(values["mse"]).to_dict(),
            "psnr_db": mean_ci(values["psnr_db"]).to_dict(),
            "ssim": mean_ci(values["ssim"]).to_dict(),
            "ssim_window": {"size": win, "sigma": sigma},
            "psnr_cap_db": PSNR_CAP_DB,
            "output_range": [self.lo, self.hi],
        }
        if "ms_ssim" in values:  # absent for small images: their results are unchanged
            result["ms_ssim"] = mean_ci(values["ms_ssim"]).to_dict()
        return ImageQuality.model_validate(result)


def image_quality(reference: torch.Tensor, output: torch.Tensor) -> ImageQuality:
    """MSE, PSNR (dB) and SSIM per image against ``reference``, each as mean with a 95% CI over images.

    The range of ``output`` is recorded (``output_range``) for the audit; it is not clipped.
    """
    return QualityMeter().add(reference, output).result()


class OutputComparison:
    """:func:`compare_outputs` gathered batch by batch (per-image values only)."""

    def __init__(self) -> None:
        self.continuous, self.quantized, self.penalty = QualityMeter(), QualityMeter(), QualityMeter()

    def add(self, x: torch.Tensor, x_fp: torch.Tensor, x_q: torch.Tensor) -> OutputComparison:
        self.continuous.add(x, x_fp)
        self.quantized.add(x, x_q)
        self.penalty.add(x_fp, x_q)
        return self

    def result(self) -> Comparison:
        change = self.quantized.per_image()["psnr_db"] - self.continuous.per_image()["psnr_db"]  # both capped
        return Comparison(continuous=self.continuous.result(), quantized=self.quantized.result(), penalty=self.penalty.result(),
                          psnr_change_db=MeanCI.model_validate(mean_ci(change).to_dict()))


def blocks(result: Result) -> dict[str, Any]:
    """The fields a result block was made with, as keyword arguments for a larger result (blocks stay typed)."""
    return {k: getattr(result, k) for k in result.model_fields_set} | dict(result.model_extra or {})


def compare_outputs(x: torch.Tensor, x_fp: torch.Tensor, x_q: torch.Tensor) -> Comparison:
    """Quality of a reference output and a quantized one: ``continuous`` (reference vs ground truth), ``quantized``
    (quantized vs ground truth), ``penalty`` (quantized vs reference) and the per-image ``psnr_change_db``."""
    return OutputComparison().add(x, x_fp, x_q).result()


def run_header(run: Run, config, meta: dict[str, Any], split: str) -> dict[str, Any]:
    """Run, dataset, split, model size and training state: the first keys of every evaluation result."""
    summary = run.summary()
    shape = latent_shape_of(config.model)
    pretrained = meta.get("pretrained")
    if summary:
        training = {k: summary[k] for k in ("converged", "stop_reason", "epochs", "best_epoch", "steps")}
    else:  # an imported model was trained elsewhere: neither unfinished nor untrained
        training = {"converged": None, "stop_reason": "pretrained" if pretrained else "unfinished"}
    return {
        "run": str(run.root),
        "dataset": config.data.name,
        "split": split,
        **({"data": photo_data_record(config.data)} if config.data.name in PHOTO_DATASETS else {}),
        "model": {
            "sha256": meta.get("sha256"),  # the model measured: readers compare it with the run's model now (posthoc_vq.derivation)
            "family": config.model.family, "latent_dim": config.model.latent_dim, "latent_shape": list(shape) if shape is not None else None,
            "num_parameters": meta["num_parameters"], "fp32_bytes": meta["fp32_bytes"], "epoch": meta.get("epoch"), "trained_steps": meta.get("trained_steps"),
            **({"quantizer": config.model.quantizer} if config.model.quantizer != "none" else {}),  # trained with its quantizer: vq, rvq, fsq
            **({"pretrained": {k: pretrained.get(k) for k in ("name", "repository", "commit", "licence")}} if pretrained else {}),
        },
        "training": training,
        **({"finetune": _finetune_origin(run)} if run.finetune_file.exists() else {}),  # a decoder fine-tuned on a codebook's latents
    }


def photo_data_record(data) -> dict[str, Any]:
    """How a photo dataset's images were prepared (orientation, crop; never resized), and the config's own crop and subsets."""
    extra = {k: getattr(data, k) for k in ("crop", "max_train_images", "max_val_images", "max_test_images") if getattr(data, k) is not None}
    return {"preparation": dict(PREPARATION), **extra}


def _finetune_origin(run: Run) -> dict[str, Any]:
    from posthoc_vq.records import FinetuneRecord, read_dict

    record = read_dict(run.finetune_file, FinetuneRecord, "fine-tune record")
    return {k: record[k] for k in ("source_run", "codebook", "part")}


def model_header(model: Any, split: str, latent_shape: tuple[int, ...], dataset: str | None = None) -> dict[str, Any]:
    """The header of a result for a model given as an object (no run directory): its name,
    latent shape and, where it can be counted, parameter count; training state unknown."""
    ae = as_autoencoder(model)
    count = getattr(ae, "num_parameters", None)
    return {
        "run": None,
        "dataset": dataset,
        "split": split,
        "model": {
            "family": getattr(ae, "name", type(ae).__name__), "latent_dim": int(latent_shape[0]), "latent_shape": list(latent_shape),
            "num_parameters": count() if callable(count) else None, "output_range": list(ae.output_range),
        },
        "training": {"converged": None, "stop_reason": "unknown"},
    }


def continuous_result(model: Any, x: torch.Tensor, batch_size: int = 1000, z: torch.Tensor | None = None, *,
                      device: torch.device | str | None = None, quality: QualityMeter | None = None) -> dict[str, Any]:
    """Quality of decode(mu) against images ``x`` (N, C, H, W) in [0, 1]: the metric part of a result.

    ``z`` (N, *L): the images' posterior means, if already encoded. ``device``: where encoding and decoding run.
    ``quality``: an empty :class:`QualityMeter` to fill, for a caller that wants the per-image values too.
    """
    z = encode_split(model, x, "mu", batch_size=batch_size, device=device) if z is None else z
    x_cont = decode(model, z, batch_size, device=device)
    return {"latents": "mu", "continuous": (quality if quality is not None else QualityMeter()).add(x, x_cont).result()}


def code_usage(codes: np.ndarray, n_codes: int, labels: np.ndarray | None = None) -> dict[str, Any]:
    """:func:`~posthoc_vq.metrics.codebook.codebook_usage` of codes (N,) or (N, M), also for codebooks too large to
    count densely (FSQ's prod(levels) codes): those are counted over the codes that occur, then the totals are set."""
    codes = np.asarray(codes, dtype=np.int64)
    if codes.ndim > 1 or n_codes <= MAX_BINCOUNT_CODES:
        return codebook_usage(codes, n_codes, labels)
    occurring, dense = np.unique(codes, return_inverse=True)
    out = codebook_usage(dense.reshape(-1), len(occurring), labels)  # every statistic of the used codes is unchanged
    used = len(occurring)
    return out | {"n_codes": n_codes, "dead": n_codes - used, "usage_fraction": used / n_codes, "max_entropy_bits": float(np.log2(float(n_codes)))}


@torch.no_grad()
def trained_quantizer_result(model: VAEBase, x: torch.Tensor, z: torch.Tensor, labels: np.ndarray, split: str, continuous: ImageQuality,
                             batch_size: int = 1000) -> dict[str, Any]:
    """The codebook-like fields of a model with a trained quantizer, evaluated on images ``x`` (N, C, H, W) in [0, 1].

    Parameters
    ----------
    z : (N, *L) the images' z_e (``encode(x).mu``).
    labels : (N,) class of each image (usage per class counts tokens).
    continuous : the result's ``continuous`` block, the model's own output; repeated as ``quantized``.

    Returns
    -------
    ``quantizer`` (kind, codes per stage, stages, FSQ levels), ``bits_per_image`` (exact: tokens per image
    x bits per token), ``bits_per_token``, ``tokens_per_image``, ``latent_shape``, ``quantized``,
    ``pre_quantization`` (decoder fed z_e, informational), ``latent_mse`` (z_e against z_q) and
    ``usage`` on ``split`` (over tokens; per stage for rvq).
    """
    quantizer, was_training = model.quantizer, model.training
    model.eval()  # a lookup: no codebook update
    try:
        outs = [model.quantize(z[i : i + batch_size]) for i in range(0, len(z), batch_size)]
        x_pre = torch.cat([model.decode_unquantized(z[i : i + batch_size]) for i in range(0, len(z), batch_size)])
    finally:
        model.train(was_training)
    z_q, codes = torch.cat([o.z_q for o in outs]), torch.cat([o.codes for o in outs])
    latent_shape = tuple(z.shape[1:])
    tokens = int(np.prod(latent_shape[1:], dtype=np.int64))
    flat = codes.reshape(len(z) * tokens, quantizer.n_stages).numpy()  # (N * T, M), image-major like latents' tokens
    return {
        "quantizer": quantizer.describe(),
        "method": quantizer.kind, "K": quantizer.n_codes,
        "bits_per_image": tokens * quantizer.bits_per_vector, "bits_per_token": quantizer.bits_per_vector, "tokens_per_image": tokens,
        "latent_shape": list(latent_shape),
        "quantized": continuous,
        "pre_quantization": image_quality(x, x_pre),
        "latent_mse": float(torch.mean((z - z_q) ** 2)),
        "usage": {split: code_usage(flat[:, 0] if quantizer.n_stages == 1 else flat, quantizer.n_codes, np.repeat(np.asarray(labels, dtype=np.int64), tokens))},
    }


def finish(fields: dict[str, Any], seed: int | None, path: Path | None) -> Evaluation:
    """The typed result of the fields an evaluation assembled, with provenance and the audit's warnings; written to ``path`` if given."""
    evaluation = Evaluation.model_validate({**fields, "provenance": provenance(seed=seed)})
    evaluation.warnings = audit(evaluation)
    if path is not None:
        evaluation.write(path)
    return evaluation


def evaluate_continuous(run_dir: str | Path | Run, *, split: str = "test", data_dir: str | None = None, splits: DatasetSplits | None = None,
                        progress: ProgressCallback | None = None, device: str | torch.device | None = None) -> Evaluation:
    """Evaluate decode(mu) against ground truth on ``split``; writes ``eval/continuous-<split>.json``.

    A model with a trained quantizer also gets the fields of :func:`trained_quantizer_result`.

    Returns the JSON-able result (metrics with CIs, model size, training state, audit warnings, and
    ``compute``: what training (and a fine-tune) cost, see :func:`~posthoc_vq.records.model_compute`). ``progress``: an
    optional callback (:mod:`posthoc_vq.progress`) told how far encoding and decoding have got.
    ``device``: where encoding and decoding run (:func:`~posthoc_vq.devices.resolve_device`; default CPU), recorded as ``device``.
    """
    run = Run.open(run_dir)
    path = run.eval_file(split)
    with run.lock("evaluate"), reporting(progress):
        config = run.config()
        model, meta = run.load_model()
        splits = splits or load_run_splits(run.root, data_dir)
        torch.set_num_threads(config.train.threads)
        x = split_images(splits, split)
        dev = resolve_device(device)
        model = model.to(dev)
        z = encode_split(model, x, "mu", device=dev)
        quality = QualityMeter()
        result = {**run_header(run, config, meta, split), **continuous_result(model, x, z=z, device=dev, quality=quality)}
        if model.quantizer is not None:  # the lookups on CPU, beside the CPU latents
            result |= trained_quantizer_result(model.cpu(), x, z, splits.split(split).labels, split, result["continuous"])
            from posthoc_vq.evaluation.bitstreams import codec_rate, open_codec  # its own codes as bitstreams: real bpp
            from posthoc_vq.quantize.trained import TRAINED

            codec = open_codec(run, TRAINED, model=model)
            # the model's own output is what its bitstreams decode to (RunCodec.images, tested equal): its per-image PSNR
            result["rate"] = codec_rate(codec, codec.codes_of_latents(z)) | {"per_image_psnr_db": quality.per_image()["psnr_db"].tolist()}
        result["device"] = str(dev)
        result["compute"] = total_compute(model_compute(run.summary()))
        return finish(result, config.seed, path)
