"""The torch-free decoder runtime: bitstream files to images with numpy, constriction and onnxruntime alone.

    from posthoc_vq.codec.runtime import CodecRuntime
    rt = CodecRuntime("runs/fmnist/export/codec-kmeans-K1024-mu-train")   # int8=True: the INT8 decoder
    header, codes, images = rt.decompress(open("test.phvq", "rb").read())  # images (N, C, H, W) float32 in [0, 1]

It reads the folder that :func:`posthoc_vq.export.codec.export_codec` writes (``posthoc-vq export RUN --codec
--codebook NAME``)::

    codec.json                   the manifest (below)
    codebook.safetensors         "stages": (M, K, D) float32, the vectors each stage's codes stand for
    prior-<kind>.safetensors     the codebook's priors, byte for byte (posthoc_vq.codec.priors)
    decoder.onnx                 latents (N, *latent_shape) float32 -> images (N, C, H, W) in [0, 1], batch axis dynamic
    decoder-int8.onnx            the same, INT8 (optional; its format, QDQ or QOperator, is in the manifest)

Decoding a file: the header's model and codebook sha256 must be the manifest's (a file made for another model or
codebook is refused with :class:`~posthoc_vq.codec.bitstream.BitstreamError` naming both); the codes come from
:func:`posthoc_vq.codec.bitstream.read` with the prior the header names; the latents are the sum over stages of
the stage vectors (stage 0 first, in float32, as the codebooks' ``inverse_transform`` sums them), laid out as
``posthoc_vq.latents.from_tokens`` lays them out: (N, D) for one-vector latents, (N, D, h, w) for a token grid
(tokens are the grid positions in row-major order); the ONNX decoder then maps them to images, in batches of
:data:`DECODE_BATCH`. Every file is checked against the manifest's sha256 when the runtime loads.

The manifest (``format_version`` :data:`FORMAT_VERSION`) holds: ``model_sha256``, ``codebook_sha256``, ``image_shape``
(C, H, W), ``latent_shape``, ``grid`` (h, w, M), ``n_codes``, ``codebook_file``, ``priors`` (kind -> file, sha256,
bytes), ``decoders`` (``fp32`` and ``int8`` -> file, sha256, bytes, input and output names, format, the largest
difference from PyTorch's images), ``output`` (what the graph's output is: images in [0, 1], the model's output
range already mapped inside the graph), the INT8 candidates measured, calibration and provenance.

Imports numpy, constriction (through :mod:`posthoc_vq.codec.priors`) and onnxruntime only, and Pillow where
PNG files are asked for (without it, images are saved as ``.npy``): never torch.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from posthoc_vq.codec import bitstream, tensorfile
from posthoc_vq.codec.bitstream import BitstreamError, Header
from posthoc_vq.codec.priors import Prior, PriorError
from posthoc_vq.errors import CheckpointError, MissingExtraError, NotFoundError

FORMAT = "posthoc-vq-codec"
FORMAT_VERSION = 1
MANIFEST = "codec.json"
CODEBOOK_FILE = "codebook.safetensors"
CODEBOOK_TENSOR = "stages"
DECODER_FILES = {"fp32": "decoder.onnx", "int8": "decoder-int8.onnx"}
DECODE_BATCH = 64


def stage_sum_latents(stages: np.ndarray, codes: np.ndarray, latent_shape: Sequence[int]) -> np.ndarray:
    """Latents (N, *latent_shape) float32 of codes (N, h, w, M): the sum over stages of the stage vectors
    ``stages`` (M, K, D), stage 0 first, laid out as ``posthoc_vq.latents.from_tokens`` does."""
    codes = np.asarray(codes)
    n, h, w, m = codes.shape
    out = stages[0][codes[..., 0]]
    for s in range(1, m):
        out = out + stages[s][codes[..., s]]  # float32, in the order the codebooks' inverse_transform sums
    out = out.astype(np.float32, copy=False)
    if len(latent_shape) == 1:
        return np.ascontiguousarray(out.reshape(n, out.shape[-1]))
    return np.ascontiguousarray(np.moveaxis(out, -1, 1))  # (N, h, w, D) -> (N, D, h, w)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as err:
        raise MissingExtraError(
            f"the codec runtime needs onnxruntime: pip install onnxruntime (or 'posthoc-vq[export]') ({err})"
        ) from None
    return onnxruntime


@dataclass(frozen=True)
class DecodedFile:
    """One decoded file: its header, codes (N, h, w, M) and images (N, C, H, W) float32 in [0, 1]."""

    header: Header
    codes: np.ndarray
    images: np.ndarray


class CodecRuntime:
    """An exported codec folder, ready to decode bitstream files (see the module docstring).

    Parameters
    ----------
    folder : the export folder (``RUN/export/codec-<codebook>``).
    int8 : decode with ``decoder-int8.onnx`` instead of the fp32 ``decoder.onnx``.
    threads : onnxruntime intra-op threads (None: onnxruntime's default, one per physical core).
    batch_size : images per decoder call (default :data:`DECODE_BATCH`).
    """

    def __init__(self, folder: str | os.PathLike, *, int8: bool = False, threads: int | None = None, batch_size: int = DECODE_BATCH):
        self.folder = Path(folder)
        self.manifest = self._load_manifest()
        m = self.manifest
        try:
            self.model_sha256: str = m["model_sha256"]
            self.codebook_sha256: str = m["codebook_sha256"]
            self.image_shape: tuple[int, int, int] = tuple(int(v) for v in m["image_shape"])  # type: ignore[assignment]
            self.latent_shape: tuple[int, ...] = tuple(int(v) for v in m["latent_shape"])
            self.grid: tuple[int, int, int] = tuple(int(v) for v in m["grid"])  # type: ignore[assignment]
            self.n_codes = int(m["n_codes"])
            decoders, prior_specs, cb_spec = m["decoders"], m["priors"], m["codebook_file"]
        except (KeyError, TypeError, ValueError) as err:
            raise CheckpointError(f"{self.folder / MANIFEST}: incomplete manifest ({err!r}); export the codec again") from None
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = int(batch_size)
        tensors, _ = tensorfile.decode(self._checked_bytes(cb_spec), str(self.folder / cb_spec["file"]))
        stages = tensors.get(CODEBOOK_TENSOR)
        h, w, n_stages = self.grid
        if stages is None or stages.ndim != 3 or stages.shape[:2] != (n_stages, self.n_codes) or stages.shape[2] != self.latent_shape[0]:
            raise CheckpointError(f"{self.folder / cb_spec['file']}: expected '{CODEBOOK_TENSOR}' of shape ({n_stages}, {self.n_codes}, {self.latent_shape[0]}), "
                                  f"got {None if stages is None else stages.shape}; export the codec again")
        self.stages = np.ascontiguousarray(stages, dtype=np.float32)
        self.priors: dict[str, Prior] = {}
        for kind, spec in prior_specs.items():
            try:
                self.priors[kind] = Prior.from_bytes(self._checked_bytes(spec), str(self.folder / spec["file"]))
            except PriorError as err:
                raise CheckpointError(f"{err}; export the codec again") from None
        self.precision = "int8" if int8 else "fp32"
        if self.precision not in decoders:
            raise NotFoundError(f"{self.folder}: no {self.precision} decoder in this export ({', '.join(sorted(decoders))} only); "
                                "export it with INT8 (export_codec(..., int8=True)) or use the fp32 decoder")
        self.decoder = decoders[self.precision]
        ort = _onnxruntime()
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(self._checked_bytes(self.decoder), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    # ------------------------------------------------------------------ loading
    def _load_manifest(self) -> dict[str, Any]:
        path = self.folder / MANIFEST
        if not path.is_file():
            raise NotFoundError(f"{path}: no codec manifest; export the codec first (posthoc-vq export RUN --codec --codebook NAME)")
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise CheckpointError(f"{path}: unreadable manifest ({err}); export the codec again") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise CheckpointError(f"{path}: not a posthoc-vq codec manifest")
        version = manifest.get("format_version")
        if not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
            raise CheckpointError(f"{path}: codec format version {version}, but this posthoc-vq reads versions 1 to {FORMAT_VERSION}; upgrade posthoc-vq")
        return manifest

    def _checked_bytes(self, spec: dict[str, Any]) -> bytes:
        """The bytes of a file the manifest lists, checked against its sha256."""
        path = self.folder / spec["file"]
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise CheckpointError(f"{path}: missing, but {MANIFEST} lists it; export the codec again") from None
        if _sha256(data) != spec["sha256"]:
            raise CheckpointError(f"{path}: sha256 {_sha256(data)[:12]}... is not the {spec['sha256'][:12]}... that {MANIFEST} records (modified or damaged); "
                                  "export the codec again")
        return data

    # ------------------------------------------------------------------ codes -> images
    def latents(self, codes: np.ndarray) -> np.ndarray:
        """Latents (N, *latent_shape) float32 of codes (N, h, w, M)."""
        codes = np.asarray(codes)
        if codes.ndim != 4 or tuple(codes.shape[1:]) != self.grid:
            raise ValueError(f"codes must be (N, {', '.join(map(str, self.grid))}), got shape {codes.shape}")
        if codes.size and (not np.issubdtype(codes.dtype, np.integer) or codes.min() < 0 or codes.max() >= self.n_codes):
            raise ValueError(f"codes must be integer indices in [0, {self.n_codes})")
        return stage_sum_latents(self.stages, codes.astype(np.int64, copy=False), self.latent_shape)

    def decode_latents(self, z: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """Images (N, C, H, W) float32 in [0, 1] of latents (N, *latent_shape), ``batch_size`` at a time."""
        z = np.ascontiguousarray(z, dtype=np.float32)
        b = batch_size or self.batch_size
        if len(z) == 0:
            return np.empty((0, *self.image_shape), dtype=np.float32)
        parts = [self.session.run(None, {self.input_name: z[i : i + b]})[0] for i in range(0, len(z), b)]
        return np.concatenate(parts).astype(np.float32, copy=False)

    def decode_codes(self, codes: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """Images (N, C, H, W) float32 in [0, 1] of codes (N, h, w, M)."""
        return self.decode_latents(self.latents(codes), batch_size)

    # ------------------------------------------------------------------ files -> codes -> images
    def read(self, data: bytes, what: str = "bitstream") -> tuple[Header, np.ndarray]:
        """(header, codes (N, h, w, M)) of a file made for this codec; a file for another model or codebook is refused."""
        header, _ = bitstream.read_header(data, what)
        if header.model_sha256 != self.model_sha256:
            raise BitstreamError(f"{what}: made for another model (the file's model sha256 is {header.model_sha256}, "
                                 f"this codec's is {self.model_sha256})")
        if header.codebook_sha256 != self.codebook_sha256:
            raise BitstreamError(f"{what}: made with another codebook (the file's codebook sha256 is {header.codebook_sha256}, "
                                 f"this codec's ('{self.manifest.get('codebook', '?')}') is {self.codebook_sha256})")
        if header.image_shape != self.image_shape or header.grid != self.grid:
            raise BitstreamError(f"{what}: image {header.image_shape} / grid {header.grid} in the header, but this codec makes {self.image_shape} / {self.grid}")
        prior = self.priors.get(header.prior_kind)
        if prior is None:
            raise BitstreamError(f"{what}: made with the {header.prior_kind} prior, which this codec does not have ({', '.join(sorted(self.priors))})")
        return bitstream.read(data, prior, what)

    def decompress(self, data: bytes, what: str = "bitstream", batch_size: int | None = None) -> tuple[Header, np.ndarray, np.ndarray]:
        """(header, codes (N, h, w, M), images (N, C, H, W) float32 in [0, 1]) of a file's bytes."""
        header, codes = self.read(bytes(data), what)
        return header, codes, self.decode_codes(codes, batch_size)

    def decompress_files(self, files: Sequence[bytes | str | os.PathLike]) -> list[DecodedFile]:
        """Every file read and checked first, then all their codes decoded together, ``batch_size`` images at a time."""
        parts = []
        for f in files:
            if isinstance(f, (bytes, bytearray, memoryview)):
                data, what = bytes(f), "bitstream"
            else:
                try:
                    data, what = Path(f).read_bytes(), str(f)
                except (FileNotFoundError, IsADirectoryError):
                    raise NotFoundError(f"{f}: no such file") from None
            parts.append(self.read(data, what))
        if not parts:
            return []
        images = self.decode_codes(np.concatenate([codes for _, codes in parts]))
        bounds = np.cumsum([0] + [len(codes) for _, codes in parts])
        return [DecodedFile(h, c, images[a:b]) for (h, c), a, b in zip(parts, bounds[:-1], bounds[1:])]

    def decompress_to_png(self, files: Sequence[str | os.PathLike], out: str | os.PathLike, *, pillow: bool | None = None) -> dict[str, Any]:
        """Decode bitstream files into ``out``: ``<stem>.png``, or ``<stem>-<i>.png`` (5 digits) for a container's images.

        PNGs are 8-bit (clipped to [0, 1], x 255, rounded), as ``posthoc-vq decompress`` writes them. Without Pillow
        (or with ``pillow=False``) each image is saved as ``.npy`` instead: the float32 (C, H, W) image in [0, 1], unrounded.
        """
        image_module = _pillow() if pillow is not False else None
        if pillow and image_module is None:
            raise MissingExtraError("PNG output needs Pillow: pip install pillow")
        decoded = self.decompress_files(files)
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        suffix = ".png" if image_module is not None else ".npy"
        written = []
        for f, part in zip(files, decoded):
            stem = Path(f).stem
            for j, image in enumerate(part.images):
                path = out / (f"{stem}-{j:05d}{suffix}" if part.header.container else f"{stem}{suffix}")
                tmp = path.with_name(f".{path.name}.tmp")
                if image_module is not None:
                    a = np.rint(np.clip(image, 0, 1) * 255).astype(np.uint8)
                    image_module.fromarray(a[0] if a.shape[0] == 1 else np.moveaxis(a, 0, -1)).save(tmp, format="PNG")
                else:
                    with open(tmp, "wb") as fh:
                        np.save(fh, image)
                os.replace(tmp, path)
                written.append(str(path))
        return {"files": [str(f) for f in files], "images": written, "n_images": len(written), "format": suffix[1:],
                "decoder": self.precision}

    def describe(self) -> dict[str, Any]:
        return {"folder": str(self.folder), "codebook": self.manifest.get("codebook"), "model_sha256": self.model_sha256,
                "codebook_sha256": self.codebook_sha256, "image_shape": list(self.image_shape), "latent_shape": list(self.latent_shape),
                "grid": list(self.grid), "priors": sorted(self.priors), "decoder": self.precision, "decoder_file": self.decoder["file"]}


def _pillow() -> Any:
    try:
        from PIL import Image
    except ImportError:
        return None
    return Image
