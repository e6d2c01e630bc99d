"""ONNX export of a run's encoder and decoder: fp32 graphs, and static QDQ INT8 graphs.

* fp32: ``torch.onnx.export(..., dynamo=True)`` (the torch.export-based exporter, with
  onnxscript), batch dimension dynamic. Encoder: ``x (B, C, H, W) -> mu, logvar (B, D)``;
  decoder: ``z (B, D) -> x (B, C, H, W)`` in [0, 1]. A model with a trained quantizer: the
  encoder gives ``mu`` = z_e only, and the decoder graph includes the quantizer
  (``z_e -> nearest code / FSQ rounding -> decoder``), so the two graphs run the whole model.
* INT8: onnxruntime's ``quantize_static`` in QDQ format, per-channel int8 weights and int8
  activations, calibrated on images (encoder) and their posterior means (decoder) drawn
  from the run's *train* split with a fixed seed; never the test split.

Every file is written to a temp name and renamed. ``export.json`` records sizes, the
calibration set, and the largest difference between onnxruntime and PyTorch outputs on a
check batch of test images.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn as nn

from posthoc_vq.errors import ConfigError
from posthoc_vq.extras import require
from posthoc_vq.io import atomic_folder, atomic_write, sha256_file, write_json
from posthoc_vq.latents import encode_split, load_run_splits
from posthoc_vq.progress import ProgressCallback, report, reporting
from posthoc_vq.provenance import provenance
from posthoc_vq.quantize.compressed import require_trained
from posthoc_vq.run import Run

OPSET = 18
QUANTIZED_OPS = ["Conv", "ConvTranspose", "Gemm", "MatMul"]  # BatchNormalization stays float between QDQ pairs
CALIBRATION_PIXELS = 2**23  # INT8 calibration images are capped at this many pixels in all (512 28x28 images; 54 of 480x320)
WHAT = "ONNX export"
EXPORT_MODULES = ("onnx", "onnxscript", "onnxruntime")  # torch.onnx's dynamo exporter needs onnx and onnxscript; checks and INT8 need onnxruntime

if TYPE_CHECKING:
    import onnxruntime as ort


def require_export() -> None:
    """Fail at once, naming the 'export' extra, unless onnx, onnxscript and onnxruntime all import."""
    for name in EXPORT_MODULES:
        require(name, "export", WHAT)


class EncoderGraph(nn.Module):
    """``x -> (mu, logvar)`` of a VAE, as one traceable module (``x -> mu`` = z_e with a trained quantizer)."""

    def __init__(self, vae: nn.Module):
        super().__init__()
        self.vae = vae

    def output_names(self) -> list[str]:
        return ["mu"] if getattr(self.vae, "quantizer", None) is not None else ["mu", "logvar"]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        post = self.vae.encode(x)
        return (post.mu,) if post.logvar is None else (post.mu, post.logvar)


class DecoderGraph(nn.Module):
    """``z -> x`` in the VAE's output range, as one traceable module (through the quantizer, if the model has one)."""

    def __init__(self, vae: nn.Module):
        super().__init__()
        self.vae = vae

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(z)


def dynamic_axes(input_name: str, downsampling: int | None) -> dict[int, Any]:
    """The dynamic axes of a graph's input: the batch; and for a fully convolutional model (``downsampling`` pixels per
    latent position) the height and width too, images as multiples of ``downsampling`` of the latent grid's."""
    batch = torch.export.Dim("batch")
    if downsampling is None:
        return {0: batch}
    h, w = torch.export.Dim("h", min=1, max=4096), torch.export.Dim("w", min=1, max=4096)
    return {0: batch, 2: downsampling * h, 3: downsampling * w} if input_name == "x" else {0: batch, 2: h, 3: w}


def export_module(module: nn.Module, example: torch.Tensor, path: Path, input_name: str, output_names: list[str],
                  downsampling: int | None = None) -> Path:
    """Export ``module`` (eval mode) to ONNX at ``path`` with a dynamic batch dimension (and dynamic H, W: :func:`dynamic_axes`)."""
    for name in ("onnx", "onnxscript"):
        require(name, "export", WHAT)
    module = module.eval()
    quiet = logging.getLogger("torch.onnx")
    level, quiet.level = quiet.level, logging.ERROR  # no 'torchvision is not installed' chatter
    with atomic_write(path) as tmp, warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        # optimize=True: the default of newer torch (2.13); torch 2.6's False leaves Constant nodes that onnxruntime's INT8 shape
        # inference cannot read (value_ints, not a tensor)
        def export(**options: Any) -> Any:
            return torch.onnx.export(
                module, (example,), dynamo=True, optimize=True, opset_version=OPSET, verbose=False, input_names=[input_name],
                output_names=output_names, dynamic_shapes={"x" if input_name == "x" else "z": dynamic_axes(input_name, downsampling)},
                **options,
            )

        try:
            program = export()
        except Exception as err:  # torch 2.5 and 2.6 with a current onnxscript: one-output batch norm nodes (_batch_norm_one_output)
            if _BATCH_NORM_NODE not in str(err):
                raise
            program = export(custom_translation_table={getattr(torch.ops.aten, _BATCH_NORM_NODE).default: _batch_norm_one_output})
        program.save(str(tmp))
    quiet.setLevel(level)
    return path


_BATCH_NORM_NODE = "_native_batch_norm_legit_no_training"


def _batch_norm_one_output(input, weight, bias, running_mean, running_var, momentum: float, eps: float):  # noqa: A002 - aten's names
    """ONNX for an eval-mode batch norm node of torch 2.5 and 2.6's exported programs, which have one output where onnxscript's
    translation (0.5 and newer) gives three, so that their export fails ('tuple' object has no attribute 'dtype'). Used only
    after that failure: a torch whose batch norm nodes have three outputs (2.13 and 2.15, checked) never comes here. Opset 18
    (:data:`OPSET`)."""
    from onnxscript import opset18

    return opset18.BatchNormalization(input, weight, bias, running_mean, running_var, epsilon=eps)


def _calibration_reader(name: str, values: np.ndarray, batch_size: int = 64) -> Any:
    """An onnxruntime ``CalibrationDataReader`` giving batches of one input array (the class is made here: onnxruntime is optional)."""
    quantization = require("onnxruntime.quantization", "export", WHAT)

    class _Calibration(quantization.CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = iter([{name: values[i : i + batch_size]} for i in range(0, len(values), batch_size)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._batches, None)

    return _Calibration()


def quantize_onnx_int8(src: Path, dst: Path, input_name: str, calibration: np.ndarray, op_types: list[str] | None = None, *,
                       quant_format: str = "qdq") -> Path:
    """Static INT8 quantization of an ONNX model (per-channel int8 weights), calibrated on ``calibration``;
    ``op_types``: the operators to quantize (default :data:`QUANTIZED_OPS`).

    ``quant_format``: ``qdq`` (QuantizeLinear / DequantizeLinear around float operators, int8 activations) or ``qoperator``
    (onnxruntime's integer kernels, QLinearConv / QGemm, uint8 activations; an operator without one, such as
    ConvTranspose, stays float between QuantizeLinear / DequantizeLinear).
    """
    quantization = require("onnxruntime.quantization", "export", WHAT)
    quant_pre_process = require("onnxruntime.quantization.shape_inference", "export", WHAT).quant_pre_process
    QuantFormat, QuantType = quantization.QuantFormat, quantization.QuantType  # noqa: N806 - onnxruntime's enums
    if quant_format not in ("qdq", "qoperator"):
        raise ValueError(f"quant_format must be 'qdq' or 'qoperator', got {quant_format!r}")
    fmt, activations = (QuantFormat.QDQ, QuantType.QInt8) if quant_format == "qdq" else (QuantFormat.QOperator, QuantType.QUInt8)
    reader = _calibration_reader(input_name, calibration)
    pre = dst.with_name(dst.name + ".pre.onnx")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quant_pre_process(str(src), str(pre))
            with atomic_write(dst) as tmp:
                quantization.quantize_static(
                    str(pre), str(tmp), reader, quant_format=fmt, per_channel=True,
                    activation_type=activations, weight_type=QuantType.QInt8, op_types_to_quantize=op_types or QUANTIZED_OPS,
                )
    finally:
        pre.unlink(missing_ok=True)
    return dst


def onnx_session(path: str | Path, threads: int = 2) -> ort.InferenceSession:
    """An onnxruntime CPU session with ``threads`` intra-op threads."""
    ort = require("onnxruntime", "export", WHAT)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _decoder_ops(model: nn.Module) -> list[str]:
    """Operators to quantize in the decoder: a trained VQ's nearest-code search is a MatMul against the codebook,
    which stays float (int8 distances would pick other codes); the decoder's layers are Conv, ConvTranspose and Gemm."""
    return [op for op in QUANTIZED_OPS if op != "MatMul"] if getattr(model, "quantizer", None) is not None else QUANTIZED_OPS


def export_run(
    run_dir: str | Path, out_dir: str | Path | None = None, *, int8: bool = False, calibration_size: int = 512,
    seed: int = 0, data_dir: str | None = None, progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Export a run's encoder and decoder to ONNX (and INT8 QDQ with ``int8``); writes ``export.json``.

    Parameters
    ----------
    out_dir : output folder, default ``<run>/export``.
    calibration_size : train images (and their mu) used to calibrate the INT8 activation ranges.
    seed : which train images are drawn for calibration.
    progress : an optional callback (:mod:`posthoc_vq.progress`) told how many export steps are done
        (each graph exported, each INT8 model calibrated, each file checked against PyTorch).
    """
    require_export()  # before any work: a missing extra fails in one line naming it
    run = Run.open(run_dir)
    out = Path(out_dir) if out_dir else run.export_dir
    with run.lock("export"), reporting(progress):
        _check_export_folder(out)
        with atomic_folder(out) as tmp:  # one unit: the files of one export and its record, or the previous export untouched
            return _export(run, tmp, out, int8, calibration_size, seed, data_dir)


EXPORT_FILES = ("export.json", "encoder.onnx", "decoder.onnx", "encoder-int8.onnx", "decoder-int8.onnx")


def _check_export_folder(out: Path) -> None:
    """The folder an export replaces may hold only an earlier export (its files, or leftovers of a killed one)."""
    if not out.exists():
        return
    if not out.is_dir():
        raise ConfigError(f"{out} is a file; export writes a folder: choose another --out")
    other = sorted(p.name for p in out.iterdir() if p.name not in EXPORT_FILES and not p.name.endswith(".onnx.pre.onnx"))
    if other:
        raise ConfigError(f"{out} holds files that are not an export's ({', '.join(other[:3])}{'...' if len(other) > 3 else ''}); an export "
                          "replaces its whole folder: choose an empty or new --out")


def _export(run: Run, tmp: Path, out: Path, int8: bool, calibration_size: int, seed: int, data_dir: str | None) -> dict[str, Any]:
    """The body of :func:`export_run`, under the run's lock: every file written into ``tmp``, recorded by its path in ``out``
    (where the folder is published) with its sha256."""
    n_files = 4 if int8 else 2
    steps, done = 2 * n_files, 0  # write each file, then check each one against PyTorch

    def step() -> None:
        nonlocal done
        done += 1
        report("export steps", done, steps)

    report("export steps", 0, steps)
    model, meta = run.load_model()
    require_trained(run.root, meta)
    config = run.config()
    torch.set_num_threads(config.train.threads)
    splits = load_run_splits(run.root, data_dir)
    f = int(model.downsampling) if getattr(model, "fully_convolutional", False) else None
    x_check = splits.split("test").to_tensor()[:64 if f is None else 2]  # photographs: two full-size images
    z_check = encode_split(model, x_check, "mu")
    encoder = EncoderGraph(model)
    files = {"encoder": export_module(encoder, x_check[:2], tmp / "encoder.onnx", "x", encoder.output_names(), f)}
    step()
    files["decoder"] = export_module(DecoderGraph(model), z_check[:2], tmp / "decoder.onnx", "z", ["x"], f)
    step()
    record: dict[str, Any] = {"run": str(run.root), "opset": OPSET, "source_model_sha256": meta["sha256"]}
    if model.quantizer is not None:
        record["quantizer"] = {**model.quantizer.describe(), "in_graph": "decoder"}
    if int8:
        train = splits.split("train").to_tensor()
        n_cal = min(calibration_size, len(train), max(1, CALIBRATION_PIXELS // (train.shape[2] * train.shape[3])))  # photographs: a few dozen
        pick = np.random.default_rng(seed).choice(len(train), size=n_cal, replace=False)
        x_cal = train[np.sort(pick)]
        z_cal = encode_split(model, x_cal, "mu")
        files["encoder_int8"] = quantize_onnx_int8(files["encoder"], tmp / "encoder-int8.onnx", "x", x_cal.numpy())
        step()
        files["decoder_int8"] = quantize_onnx_int8(files["decoder"], tmp / "decoder-int8.onnx", "z", z_cal.numpy(), _decoder_ops(model))
        step()
        record["calibration"] = {"split": "train", "n_images": len(x_cal), "seed": seed}
    with torch.no_grad():
        ref = {"encoder": model.encode(x_check).mu.numpy(), "decoder": model.decode(z_check).numpy()}
    record["files"] = {}
    for key, path in files.items():
        part = key.split("_")[0]
        feed = {"x": x_check.numpy()} if part == "encoder" else {"z": z_check.numpy()}
        got = onnx_session(path).run(None, feed)[0]
        record["files"][key] = {
            "path": str(out / path.name), "bytes": os.path.getsize(path), "sha256": sha256_file(path),
            "max_abs_diff_vs_torch": float(np.abs(got - ref[part]).max()), "check_batch": len(x_check),
        }
        step()
    record["provenance"] = provenance(seed=config.seed)
    write_json(tmp / "export.json", record)
    return record
