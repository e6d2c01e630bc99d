"""Evaluation of a codebook on a model and held-out images.

x_cont = decode(latents), x_quant = decode(codebook[assignment]), for the same
latents the codebook was built on (``mu``, or ``z`` with the recorded seed). Latent
grids (N, C, h, w) are quantized per position: each C-vector token gets its own code.
Reported: absolute PSNR/SSIM of both against ground truth, the quantization
penalty (x_quant against x_cont), the per-image PSNR change with its CI, code
usage (counted over tokens) on the fit set and on these images, bits per image
(tokens per image x bits per token), graph statistics, and the audit's warnings. A run's
result also holds ``compute``: what the quantized model cost to make (training, a fine-tune,
encoding the fit set, fitting the codebook) and its total, for quality-vs-compute plots.

:func:`codebook_result` is the core, for any autoencoder and any images;
:func:`evaluate_codebook` is the run-directory layer over it (``posthoc-vq evaluate --codebook``).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from posthoc_vq.autoencoders import LatentShapeError, as_autoencoder, encode_images
from posthoc_vq.devices import resolve_device
from posthoc_vq.evaluation.bitstreams import codec_rate, open_codec
from posthoc_vq.evaluation.reconstruction import OutputComparison, QualityMeter, blocks, decode, finish, run_header, split_images
from posthoc_vq.latents import LatentSet, from_tokens, load_run_splits, run_continuous_output, run_latents
from posthoc_vq.metrics.codebook import codebook_usage
from posthoc_vq.progress import ProgressCallback, reporting
from posthoc_vq.quantize.priors import codes_grid
from posthoc_vq.quantize.latent.base import CodebookEstimator, predict_codes
from posthoc_vq.records import model_compute, total_compute
from posthoc_vq.results import Comparison, Evaluation
from posthoc_vq.run import Run


def check_codebook_fits(codebook: CodebookEstimator, latent_shape: tuple[int, ...], name: str) -> None:
    """Raise :class:`LatentShapeError` when the codebook's vectors are not the size of the model's tokens."""
    if codebook.dim != latent_shape[0]:
        what = f"(C, h, w) = {tuple(latent_shape)}, i.e. tokens of C={latent_shape[0]}" if len(latent_shape) > 1 else f"vectors of D={latent_shape[0]}"
        raise LatentShapeError(
            f"codebook '{name}' holds vectors of D={codebook.dim}, but the model's latents are {what}; "
            "this codebook was fitted on another model's latents: fit one on this model "
            "(posthoc_vq.fit_codebook(model, data, ...) or `posthoc-vq quantize RUN`)"
        )


def codebook_result(model: Any, codebook: CodebookEstimator, cb_meta: dict[str, Any], x: torch.Tensor, latents: LatentSet, split: str, *,
                    device: torch.device | str | None = None, coding: Any = None, x_cont: torch.Tensor | None = None) -> dict[str, Any]:
    """The metric part of a codebook evaluation.

    Parameters
    ----------
    model : any autoencoder (see :mod:`posthoc_vq.autoencoders`).
    codebook : fitted estimator over token vectors of the model's latent size.
    cb_meta : its record (method, latents, fit set, fit usage...); missing keys become None.
    x : (N, C, H, W) images in [0, 1], the ground truth.
    latents : their latents (N, *L), of the kind the codebook was fitted on, with the images' class
        labels (a ``class-conditional`` codebook codes each token within its image's class).
    split : name of these images in the result (``usage[split]``).
    device : where decoding runs (None: where the latents are, CPU); metrics and codes on CPU.
    coding : a :class:`~posthoc_vq.evaluation.bitstreams.RunCodec` of this model and codebook: the result then holds
        ``rate``, the nominal, ideal and real (file bytes) bits per pixel of each prior (:func:`~posthoc_vq.evaluation.bitstreams.codec_rate`).
    x_cont : the model's decode of ``latents`` when already at hand (:func:`~posthoc_vq.latents.run_continuous_output`); else decoded here.
    """
    name = cb_meta.get("name") or codebook.method
    check_codebook_fits(codebook, latents.latent_shape, name)
    tokens, token_labels = latents.tokens(), latents.token_labels()  # (N * T, C), (N * T,)
    codes = predict_codes(codebook, tokens, token_labels)  # (N * T,) or (N * T, M) for residual; class-conditional: within each token's class
    z = torch.from_numpy(latents.values)
    z_quant = from_tokens(codebook.inverse_transform(codes), latents.latent_shape)
    x_cont = decode(model, z, device=device) if x_cont is None else x_cont
    x_quant = decode(model, torch.from_numpy(z_quant), device=device)
    comparison = OutputComparison().add(x, x_cont, x_quant)
    result = codebook_fields(codebook, cb_meta, latents, codes, z_quant, split, comparison.result())
    if coding is not None:  # per_image_psnr_db: paired with per_image_bits (BD-rate CIs)
        result["rate"] = codec_rate(coding, codes_grid(codes, len(latents), latents.latent_shape)) | {
            "per_image_psnr_db": comparison.quantized.per_image()["psnr_db"].tolist()}
    return result


def codebook_fields(codebook: CodebookEstimator, cb_meta: dict[str, Any], latents: LatentSet, codes: np.ndarray, z_quant: np.ndarray, split: str,
                    comparison: Comparison) -> dict[str, Any]:
    """The keys of :func:`codebook_result` from the latents, their codes and quantized latents (N, *L), and :func:`compare_outputs`."""
    name = cb_meta.get("name") or codebook.method
    fit_on = cb_meta.get("fit_on")
    return {
        "codebook": name,
        "codebook_sha256": cb_meta.get("sha256"),  # the codebook measured (posthoc_vq.derivation)
        "method": cb_meta.get("method", codebook.method),
        "K": cb_meta.get("n_codes", codebook.n_codes),
        "bits_per_image": latents.tokens_per_image * codebook.bits_per_vector,
        "bits_per_token": codebook.bits_per_vector,
        "tokens_per_image": latents.tokens_per_image,
        "latent_shape": list(latents.latent_shape),
        "latents": latents.kind,
        "latent_seed": cb_meta.get("latent_seed"),
        "fit_on": fit_on,
        "fit_includes_test": cb_meta.get("fit_includes_test", None if fit_on is None else "test" in str(fit_on).split("+")),
        "n_fit": cb_meta.get("n_fit"),
        **blocks(comparison),
        "latent_mse": float(np.mean(np.square(latents.values - z_quant))),
        "usage": {"fit": cb_meta.get("fit_usage"), split: codebook_usage(codes, codebook.n_codes, latents.token_labels())},
        "graph": cb_meta.get("graph"),
    }


def streamed_result(model: Any, codebook: CodebookEstimator | None, cb_meta: dict[str, Any], batches: Iterable[tuple[torch.Tensor, np.ndarray]], split: str, *,
                    kind: str = "mu", seed: int = 0, batch_size: int = 1000, device: torch.device | str | None = None) -> tuple[dict[str, Any], LatentSet]:
    """:func:`codebook_result` (or, with ``codebook`` None, the ``continuous`` block) over a stream of image batches.

    ``batches`` yields (x (B, C, H, W) in [0, 1] on CPU, labels (B,) int64). Each batch is encoded,
    decoded (continuous and quantized), and its per-image metrics kept; the images are not. Codes
    are predicted per batch (a token's code depends only on the token). ``z`` latents draw their
    noise from one generator seeded with ``seed`` across the batches. Returns the result's metric
    part and the :class:`LatentSet` of all images.
    """
    ae = as_autoencoder(model)
    gen = torch.Generator().manual_seed(seed)
    cont, comparison = QualityMeter(), OutputComparison()
    values, labels, codes, z_quant = [], [], [], []
    name = cb_meta.get("name") or (codebook.method if codebook is not None else "continuous")
    for x, y in batches:
        z = encode_images(ae, x, kind if codebook is not None else "mu", seed, batch_size, device=device, generator=gen)
        x_cont = decode(ae, z, batch_size, device=device)
        values.append(z.numpy())
        labels.append(np.zeros(len(x), dtype=np.int64) if y is None else np.asarray(y, dtype=np.int64))
        if codebook is None:
            cont.add(x, x_cont)
            continue
        part = LatentSet(values[-1], labels[-1], split, kind, None)
        if len(values) == 1:
            check_codebook_fits(codebook, part.latent_shape, name)
        c = predict_codes(codebook, part.tokens(), part.token_labels())
        zq = from_tokens(codebook.inverse_transform(c), part.latent_shape)
        comparison.add(x, x_cont, decode(ae, torch.from_numpy(zq), batch_size, device=device))
        codes.append(c)
        z_quant.append(zq)
    latents = LatentSet(np.concatenate(values), np.concatenate(labels), split, kind if codebook is not None else "mu", seed if kind == "z" and codebook is not None else None)
    if codebook is None:
        return {"latents": "mu", "continuous": cont.result()}, latents
    body = codebook_fields(codebook, {**cb_meta, "name": name}, latents, np.concatenate(codes), np.concatenate(z_quant), split, comparison.result())
    return body, latents


def codebook_compute(summary: dict[str, Any] | None, cb_meta: dict[str, Any]) -> dict[str, Any]:
    """What a run's quantized model cost: ``training`` (and ``finetune``) from ``train_summary.json``,
    ``latent_encoding`` and ``codebook_fit`` from the codebook's record, each a compute record
    (wall seconds, optimiser steps, images seen; None where unknown), with their ``total``
    (:func:`~posthoc_vq.records.total_compute`)."""
    return total_compute({**model_compute(summary), "latent_encoding": cb_meta.get("encoding_compute"), "codebook_fit": cb_meta.get("compute")})


def evaluate_codebook(run_dir: str | Path | Run, name: str, *, split: str = "test", data_dir: str | None = None,
                      progress: ProgressCallback | None = None, device: str | torch.device | None = None) -> Evaluation:
    """Evaluate codebook ``name`` of a run on ``split``; writes ``eval/<name>-<split>.json`` and returns it.

    ``progress``: an optional callback (:mod:`posthoc_vq.progress`) told how far encoding, assignment and decoding have got.
    ``device``: where encoding and decoding run (:func:`~posthoc_vq.devices.resolve_device`; default CPU), recorded as ``device``;
    codes and metrics are computed on CPU.
    """
    run = Run.open(run_dir)
    path = run.eval_file(split, codebook=name)
    with run.lock("evaluate"), reporting(progress):
        config = run.config()
        codec = open_codec(run, name)  # the model, and the codebook with its priors (fitted now if it was saved without them)
        model, meta, codebook, cb_meta = codec.model, run.model_record(), codec.codebook, codec.cb_meta
        torch.set_num_threads(config.train.threads)
        splits = load_run_splits(run.root, data_dir)
        dev = resolve_device(device)
        model = model.to(dev)
        latents = run_latents(run.root, split, cb_meta["latents"], seed=cb_meta.get("latent_seed") or 0, splits=splits, model=model, device=dev)
        x = split_images(splits, split)
        x_cont = run_continuous_output(run.root, split, latents, model, device=dev) if latents.kind == "mu" and "+" not in split else None
        result = {**run_header(run, config, meta, split),
                  **codebook_result(model, codebook, {**cb_meta, "name": name}, x, latents, split, device=dev, coding=codec, x_cont=x_cont)}
        result["device"] = str(dev)
        result["compute"] = codebook_compute(run.summary(), cb_meta)
        return finish(result, config.seed, path)
