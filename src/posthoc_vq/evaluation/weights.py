"""Evaluation of a weight-quantized model against its fp32 model and against ground truth.

The quantized model runs the whole pipeline with its own weights:
``x_q = decode_q(encode_q(x).mu)``; the fp32 model gives ``x_fp = decode(encode(x).mu)``.
Reported, on a held-out split: the absolute quality of both against ground truth,
the quality of ``x_q`` against ``x_fp`` (how far quantization moves the output), and
the per-image PSNR change ``PSNR(x, x_q) - PSNR(x, x_fp)`` with its 95% CI (the quality
loss). With a latent codebook, the same for the quantized encoder/decoder around the
codebook: codes assigned to the quantized encoder's mu, codebook vectors decoded by the
quantized decoder, against the fp32 codebook model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from posthoc_vq.devices import resolve_device
from posthoc_vq.errors import ConfigError
from posthoc_vq.audit import audit
from posthoc_vq.evaluation.generation import quantize_latents
from posthoc_vq.evaluation.reconstruction import blocks, compare_outputs, decode, run_header, split_images
from posthoc_vq.latents import encode_split, load_run_splits, run_continuous_output, run_latents, to_tokens
from posthoc_vq.progress import ProgressCallback, reporting
from posthoc_vq.provenance import provenance
from posthoc_vq.quantize.codebooks import open_codebook
from posthoc_vq.quantize.compressed import open_compressed, require_trained
from posthoc_vq.quantize.latent.base import predict_codes
from posthoc_vq.results import CodebookComparison, Evaluation
from posthoc_vq.run import Run


def evaluate_weights(
    run_dir: str | Path | Run, name: str, *, split: str = "test", data_dir: str | None = None, codebook: str | None = None,
    progress: ProgressCallback | None = None, device: str | torch.device | None = None,
) -> Evaluation:
    """Evaluate packed weights ``name`` of a run on ``split``; writes ``eval/weights-<name>[-<codebook>]-<split>.json``.

    Returns the JSON-able result: file sizes and ratio, per-layer weight errors, quality
    against ground truth and against the fp32 model with CIs, and audit warnings. ``progress``: an optional callback
    (:mod:`posthoc_vq.progress`) told how far encoding and decoding have got. ``device``: where both
    models encode and decode (:func:`~posthoc_vq.devices.resolve_device`; default CPU), recorded as
    ``device``; codes are assigned and metrics computed on CPU.
    """
    run = Run.open(run_dir)
    path = run.eval_file(split, weights=name, codebook=codebook)
    with run.lock("evaluate"), reporting(progress):
        result = _evaluate(run, name, split, data_dir, codebook, resolve_device(device))
        result.write(path)
    return result


def _evaluate(run: Run, name: str, split: str, data_dir: str | None, codebook: str | None, device: torch.device) -> Evaluation:
    config = run.config()
    model, meta = run.load_model()
    require_trained(run.root, meta)
    qmodel, record = open_compressed(run, name)
    torch.set_num_threads(config.train.threads)
    splits = load_run_splits(run.root, data_dir)
    x = split_images(splits, split)
    model, qmodel = model.to(device), qmodel.to(device)
    if "+" in split:
        mu = encode_split(model, x, "mu", device=device)
        x_fp = decode(model, mu, device=device)
    else:  # the fp32 model's latents and output as every codebook evaluation has them: cached, not computed again
        latents = run_latents(run.root, split, "mu", splits=splits, model=model, device=device)
        mu, x_fp = torch.from_numpy(latents.values), run_continuous_output(run.root, split, latents, model, device=device)
    mu_q = encode_split(qmodel, x, "mu", device=device)  # on CPU
    result: dict[str, Any] = {
        **run_header(run, config, meta, split),
        "weights": name,
        "weights_sha256": record["sha256"],  # the packed weights measured (posthoc_vq.derivation)
        "bits": record["weights"]["bits"],
        "size": {k: record[k] for k in ("num_parameters", "quantized_parameters", "fp32_bytes", "fp32_file_bytes", "packed_file_bytes", "size_ratio", "compression_factor")},
        "layers": record["layers"],
        "latents": "mu",
        "latent_mse": float(torch.mean((mu - mu_q) ** 2)),
        **blocks(compare_outputs(x, x_fp, decode(qmodel, mu_q, device=device))),
        "device": str(device),
    }
    if codebook is not None:
        estimator, cb_meta = open_codebook(run, codebook)
        if cb_meta["latents"] != "mu":
            raise ConfigError(f"codebook '{codebook}' was fitted on {cb_meta['latents']} latents; weight evaluation with a codebook needs one fitted on mu")
        labels = np.asarray(splits.split(split).labels, dtype=np.int64)  # a class-conditional codebook codes within each image's class
        z_cb = torch.from_numpy(quantize_latents(estimator, mu.numpy(), labels))
        zq_cb = torch.from_numpy(quantize_latents(estimator, mu_q.numpy(), labels))
        token_labels = np.repeat(labels, int(np.prod(mu.shape[2:], dtype=np.int64)))
        with_codebook = CodebookComparison(**{
            "name": codebook, "method": cb_meta["method"], "K": cb_meta["n_codes"], "bits_per_image": estimator.bits_per_vector,
            "fit_on": cb_meta["fit_on"], "fit_includes_test": cb_meta["fit_includes_test"],
            "code_agreement": float(np.mean(predict_codes(estimator, to_tokens(mu.numpy()), token_labels) == predict_codes(estimator, to_tokens(mu_q.numpy()), token_labels))),
            **blocks(compare_outputs(x, decode(model, z_cb, device=device), decode(qmodel, zq_cb, device=device))),
        })
        with_codebook.warnings = audit(with_codebook)
        result["with_codebook"] = with_codebook
    evaluation = Evaluation.model_validate({**result, "provenance": provenance(seed=config.seed)})
    evaluation.warnings = audit(evaluation)
    return evaluation
