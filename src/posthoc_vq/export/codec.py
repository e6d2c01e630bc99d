"""Export a run's codebook as a self-contained codec folder, decodable without torch (:mod:`posthoc_vq.codec.runtime`).

    manifest = export_codec("runs/fmnist", "kmeans-K1024-mu-train")      # -> runs/fmnist/export/codec-kmeans-K1024-mu-train/

The folder (published as one unit: written into a temp sibling, then renamed, :func:`posthoc_vq.io.atomic_folder`):

* ``decoder.onnx``: fp32, latents ``z`` (N, *latent_shape) float32, batch axis dynamic -> images ``x`` (N, C, H, W) in
  [0, 1], exactly what :meth:`RunCodec.images <posthoc_vq.evaluation.bitstreams.RunCodec.images>` gives: the model's
  decoder (its decoder alone for the model's own trained quantizer, ``decode_unquantized``, as ``RunCodec`` decodes
  it) followed, inside the graph, by the map from the model's ``output_range`` to [0, 1] (none for (0, 1)).
* ``decoder-int8.onnx`` (``int8``): onnxruntime static quantization, calibrated on the codebook latents of
  ``calibration_size`` *train* images drawn with ``seed`` (what the decoder sees in the codec, not the posterior
  means). Two candidates are made: QDQ (:func:`posthoc_vq.export.onnx.quantize_onnx_int8`: int8 activations and
  per-channel int8 weights) and QOperator (uint8 activations, per-channel int8 weights; QLinearConv / QGemm kernels).
  The one kept is the faster at batch 64 among those whose mean PSNR against the fp32 PyTorch images is at least
  :data:`INT8_MIN_PSNR_DB` (the more accurate, flagged, if neither is); both measurements are in the manifest.
* ``codebook.safetensors``: ``stages`` (M, K, D) float32, the vectors each stage's codes stand for
  (:func:`posthoc_vq.quantize.priors.stage_codebooks`), written with :mod:`posthoc_vq.codec.tensorfile`.
* ``prior-<kind>.safetensors``: the codebook's priors, their bytes copied.
* ``codec.json``: the manifest that :class:`~posthoc_vq.codec.runtime.CodecRuntime` reads: format version, model and
  codebook sha256 (what bitstream headers must name), each file's sha256 and bytes, shapes, the largest
  |onnxruntime - PyTorch| of each decoder (through the runtime itself) on a batch of test images, the INT8
  candidates' latency and accuracy, calibration, provenance.
"""

from __future__ import annotations

import hashlib
import shutil
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn

from posthoc_vq.autoencoders import as_autoencoder
from posthoc_vq.codec import tensorfile
from posthoc_vq.codec.runtime import CODEBOOK_FILE, CODEBOOK_TENSOR, DECODER_FILES, FORMAT, FORMAT_VERSION, MANIFEST, CodecRuntime, stage_sum_latents
from posthoc_vq.errors import CheckpointError
from posthoc_vq.evaluation.bitstreams import RunCodec, open_codec
from posthoc_vq.evaluation.reconstruction import split_images
from posthoc_vq.export.onnx import OPSET, DecoderGraph, export_module, onnx_session, quantize_onnx_int8, require_export
from posthoc_vq.io import atomic_folder, write_json
from posthoc_vq.latents import load_run_splits
from posthoc_vq.progress import ProgressCallback, report, reporting
from posthoc_vq.provenance import provenance
from posthoc_vq.quantize.compressed import require_trained
from posthoc_vq.quantize.priors import PRIOR_FILE, stage_codebooks
from posthoc_vq.quantize.trained import TrainedCodebook
from posthoc_vq.run import Run

INT8_MIN_PSNR_DB = 30.0  # an INT8 decoder is kept only if its images are this close to the fp32 ones (mean PSNR over the check batch)
CHECK_IMAGES = 256  # test images whose codes check each decoder against PyTorch
TIMING_BATCH = 64
TIMING_THREADS = 2
LATENT_TOLERANCE = 1e-5  # stage sums vs the codebook's inverse_transform: both sum float32 stage vectors in one order


class UnitRangeDecoder(nn.Module):
    """``decode`` of a codec's images: the model's decoder (alone, for its own trained quantizer), its output mapped to [0, 1]."""

    def __init__(self, model: nn.Module, unquantized: bool, output_range: tuple[float, float]):
        super().__init__()
        self.model = model
        self.unquantized = unquantized
        self.lo, self.hi = (float(v) for v in output_range)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        x = self.model.decode_unquantized(z) if self.unquantized else self.model.decode(z)
        return x if (self.lo, self.hi) == (0.0, 1.0) else (x - self.lo) / (self.hi - self.lo)


def codec_decoder_graph(codec: RunCodec) -> nn.Module:
    """The traceable ``z -> images in [0, 1]`` of a codec, as :meth:`RunCodec.images` decodes."""
    trained = isinstance(codec.codebook, TrainedCodebook)
    output_range = tuple(as_autoencoder(codec.model).output_range)
    if not trained and output_range == (0.0, 1.0):
        return DecoderGraph(codec.model)
    return DecoderGraph(UnitRangeDecoder(codec.model, trained, output_range))  # type: ignore[arg-type]


def _file_record(path: Path) -> dict[str, Any]:
    data = path.read_bytes()
    return {"file": path.name, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def _psnr_db(reference: np.ndarray, output: np.ndarray) -> np.ndarray:
    """(N,) per-image PSNR in dB (data range 1), capped at 100 dB."""
    mse = ((reference.astype(np.float64) - output) ** 2).reshape(len(reference), -1).mean(1)
    return np.minimum(10 * np.log10(1.0 / np.maximum(mse, 1e-10)), 100.0)


def _median_ms(methods: dict[str, Callable[[], Any]], rounds: int = 9, calls: int = 3) -> dict[str, float]:
    """Median per-call milliseconds of each method: blocks of ``calls`` back-to-back calls, rounds interleaving the methods."""
    for fn in methods.values():  # warm-up
        fn(), fn()
    times: dict[str, list[float]] = {k: [] for k in methods}
    for _ in range(rounds):
        for name, fn in methods.items():
            tic = time.perf_counter()
            for _ in range(calls):
                fn()
            times[name].append((time.perf_counter() - tic) / calls)
    return {k: 1e3 * statistics.median(v) for k, v in times.items()}


def _batch(z: np.ndarray, n: int) -> np.ndarray:
    reps = -(-n // len(z))
    return np.ascontiguousarray(np.concatenate([z] * reps)[:n])


def export_codec(
    run_dir: str | Path, codebook_name: str, out: str | Path | None = None, *, int8: bool = True, calibration_size: int = 512,
    seed: int = 0, data_dir: str | None = None, progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Export codebook ``codebook_name`` of a run (``"trained"``: the model's own quantizer) as a codec folder; returns its manifest.

    Parameters
    ----------
    out : the folder, default ``<run>/export/codec-<codebook_name>``; replaced as one unit if it exists.
    int8 : also write ``decoder-int8.onnx`` (see the module docstring for how its format is chosen).
    calibration_size, seed : train images drawn (with ``seed``) to calibrate the INT8 activation ranges.
    data_dir : where the run's dataset is, if not where it was trained from.
    progress : an optional callback (:mod:`posthoc_vq.progress`) told how many export steps are done.
    """
    require_export()  # before any work: a missing extra fails in one line naming it
    run = Run.open(run_dir)
    folder = Path(out) if out else run.export_dir / f"codec-{codebook_name}"
    with run.lock("export"), reporting(progress):
        return _export(run, codebook_name, folder, int8, calibration_size, seed, data_dir)


def _export(run: Run, name: str, folder: Path, int8: bool, calibration_size: int, seed: int, data_dir: str | None) -> dict[str, Any]:
    steps, done = (6 if int8 else 4), 0

    def step() -> None:
        nonlocal done
        done += 1
        report("codec export steps", done, steps)

    report("codec export steps", 0, steps)
    require_trained(run.root, run.model_record())
    config = run.config()
    torch.set_num_threads(config.train.threads)
    codec = open_codec(run, name)
    books = np.ascontiguousarray(stage_codebooks(codec.codebook), dtype=np.float32)
    splits = load_run_splits(run.root, data_dir)
    x_check = split_images(splits, "test")[:CHECK_IMAGES]
    check_codes = codec.codes(x_check)
    z_check = stage_sum_latents(books, check_codes, codec.latent_shape)
    z_ref = codec.latents(check_codes)
    latent_diff = float(np.abs(z_check - z_ref).max()) if len(z_check) else 0.0
    if latent_diff > LATENT_TOLERANCE:
        raise CheckpointError(f"codebook '{name}' decodes codes to other latents than the sum of its stage vectors (max difference {latent_diff:.3g}); "
                              "it cannot be exported as a codec")
    reference = codec.images(check_codes).numpy()
    step()

    manifest: dict[str, Any] = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "run": str(run.root), "codebook": name,
        "method": codec.cb_meta.get("method"), "model_sha256": codec.model_sha256, "codebook_sha256": codec.codebook_sha256,
        "image_shape": list(codec.image_shape), "latent_shape": list(codec.latent_shape), "grid": list(codec.grid), "n_codes": int(books.shape[1]),
        "latents": {"rule": "sum over stages of codebook 'stages'[m][code] (stage 0 first, float32), laid out (N, D) or (N, D, h, w)",
                    "max_abs_diff_vs_inverse_transform": latent_diff},
        "output": {"range": [0.0, 1.0], "model_output_range": list(as_autoencoder(codec.model).output_range),
                   "mapping": "in the graph: (x - lo) / (hi - lo) of the model's output range (none for (0, 1))",
                   "decoder": "decode_unquantized (the decoder alone)" if isinstance(codec.codebook, TrainedCodebook) else "decode"},
        "opset": OPSET,
    }
    with atomic_folder(folder) as tmp:
        cb_sha = tensorfile.save(tmp / CODEBOOK_FILE, {CODEBOOK_TENSOR: books},
                                 {"codebook": name, "codebook_sha256": codec.codebook_sha256, "model_sha256": codec.model_sha256})
        manifest["codebook_file"] = {**_file_record(tmp / CODEBOOK_FILE), "tensor": CODEBOOK_TENSOR, "shape": list(books.shape)}
        assert manifest["codebook_file"]["sha256"] == cb_sha
        manifest["priors"] = {}
        for kind, prior in codec.priors().items():
            src = codec.folder / PRIOR_FILE.format(kind=kind)
            shutil.copyfile(src, tmp / src.name)
            manifest["priors"][kind] = {**_file_record(tmp / src.name), "id": prior.sha256[:16]}

        fp32 = export_module(codec_decoder_graph(codec), torch.from_numpy(z_check[:2]), tmp / DECODER_FILES["fp32"], "z", ["x"])
        io_names = {"input": "z", "output": "x"}
        manifest["decoders"] = {"fp32": {**_file_record(fp32), **io_names, "format": "fp32"}}
        step()
        timing: dict[str, Any] = {}
        if int8:
            train = split_images(splits, "train")
            pick = np.sort(np.random.default_rng(seed).choice(len(train), size=min(calibration_size, len(train)), replace=False))
            z_cal = stage_sum_latents(books, codec.codes(train[pick]), codec.latent_shape)
            manifest["calibration"] = {"split": "train", "n_images": len(pick), "seed": seed, "inputs": "codebook latents of the images' codes"}
            candidates = {
                "qdq": quantize_onnx_int8(fp32, tmp / "candidate-qdq.onnx", "z", z_cal),
                "qoperator": quantize_onnx_int8(fp32, tmp / "candidate-qoperator.onnx", "z", z_cal, quant_format="qoperator"),
            }
            step()
            chosen, timing = _choose_int8(fp32, candidates, z_check, reference)
            best = tmp / DECODER_FILES["int8"]
            candidates[chosen].replace(best)
            for path in candidates.values():
                path.unlink(missing_ok=True)
            manifest["decoders"]["int8"] = {**_file_record(best), **io_names, "format": chosen}
            step()

        write_json(tmp / MANIFEST, manifest)
        for precision in manifest["decoders"]:  # each decoder checked through the runtime itself, as a user decodes
            got = CodecRuntime(tmp, int8=precision == "int8", threads=TIMING_THREADS).decode_codes(check_codes)
            psnr = _psnr_db(reference, got)
            manifest["decoders"][precision].update({
                "max_abs_diff_vs_torch": float(np.abs(got - reference).max()), "psnr_vs_torch_db_mean": float(psnr.mean()),
                "psnr_vs_torch_db_min": float(psnr.min()), "check_images": len(check_codes), "check_split": "test",
            })
        if int8:
            manifest["int8"] = timing
        step()
        manifest["provenance"] = provenance(seed=seed)
        write_json(tmp / MANIFEST, manifest)
    step()
    return manifest


def _choose_int8(fp32: Path, candidates: dict[str, Path], z_check: np.ndarray, reference: np.ndarray) -> tuple[str, dict[str, Any]]:
    """The INT8 candidate kept: the fastest at batch 64 of those within :data:`INT8_MIN_PSNR_DB` of the fp32 images (else the most accurate)."""
    sessions = {"fp32": onnx_session(fp32, TIMING_THREADS), **{k: onnx_session(p, TIMING_THREADS) for k, p in candidates.items()}}
    z64 = _batch(z_check, TIMING_BATCH)
    ms = _median_ms({k: (lambda s=s: s.run(None, {"z": z64})) for k, s in sessions.items()})
    record: dict[str, Any] = {"fp32": {"batch64_ms": ms["fp32"]}, "threads": TIMING_THREADS, "timing_batch": TIMING_BATCH,
                              "min_psnr_db": INT8_MIN_PSNR_DB, "rule": "fastest at batch 64 among candidates with mean PSNR vs the fp32 images >= min_psnr_db"}
    for kind, path in candidates.items():
        got = sessions[kind].run(None, {"z": z_check})[0]
        psnr = _psnr_db(reference, got)
        record[kind] = {"batch64_ms": ms[kind], "bytes": path.stat().st_size, "max_abs_diff_vs_torch": float(np.abs(got - reference).max()),
                        "psnr_vs_torch_db_mean": float(psnr.mean()), "psnr_vs_torch_db_min": float(psnr.min()),
                        "speedup_vs_fp32": ms["fp32"] / ms[kind]}
    eligible = [k for k in candidates if record[k]["psnr_vs_torch_db_mean"] >= INT8_MIN_PSNR_DB]
    if eligible:
        chosen = min(eligible, key=lambda k: record[k]["batch64_ms"])
    else:
        chosen = max(candidates, key=lambda k: record[k]["psnr_vs_torch_db_mean"])
    record.update({"chosen": chosen, "within_accuracy": bool(eligible), "faster_than_fp32": record[chosen]["batch64_ms"] < ms["fp32"]})
    return chosen, record
