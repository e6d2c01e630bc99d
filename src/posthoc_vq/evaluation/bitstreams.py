"""A run's model and codebook as a codec: images to bitstream files and back, and the rates they hold.

    codec = open_codec("runs/fmnist", "kmeans-K1024-mu-train")
    files = codec.compress(x, prior="empirical")            # one file (bytes) per image, (N, C, H, W) in [0, 1]
    header, codes, images = codec.decompress(files[0])       # images (1, C, H, W) decoded as `evaluate --codebook` decodes

Compressing encodes the images' posterior means, assigns each token its code (``predict``, as
``evaluate --codebook``), and writes the codes with a prior (:mod:`posthoc_vq.codec`). Decompressing
reads the codes back exactly and decodes ``codebook.inverse_transform(codes)`` with the model, in batches of
:data:`DECODE_BATCH` like the evaluation, so the images equal the evaluation's on CPU.

Rates (:func:`rate_fields`), per image, in bits per pixel (pixels = H x W, whatever the channels):

* ``nominal``: tokens x stages x log2 K (what the uniform prior's ideal is);
* ``ideal`` per prior: -log2 p of the image's codes under the prior;
* ``real`` per prior: the bytes x 8 of the image's own file (header and CRC included; ``header_bytes_mean``
  of them are not payload);
* ``container`` per prior: one file for all the images, its bytes x 8 / (N x pixels).

An evaluation's ``rate`` block also holds ``per_image_psnr_db`` (the quantized output's PSNR per image, in the
order of ``per_image_bits``) for paired bootstrap CIs of BD-rate (:mod:`posthoc_vq.evaluation.rd_comparison`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from posthoc_vq.codec import bitstream
from posthoc_vq.codec.bitstream import BitstreamError, Header
from posthoc_vq.codec.priors import MAX_TABLE_CODES, PRIOR_KINDS, Prior
from posthoc_vq.errors import ConfigError, NotFoundError
from posthoc_vq.io import read_json
from posthoc_vq.evaluation.reconstruction import decode
from posthoc_vq.latents import encode_split, from_tokens, run_latents, to_tokens
from posthoc_vq.metrics.intervals import mean_ci
from posthoc_vq.quantize.codebooks import open_codebook
from posthoc_vq.quantize.latent.base import CodebookEstimator, predict_codes
from posthoc_vq.quantize.priors import PRIOR_FILE, codes_grid, stage_codebooks, fit_priors, has_priors, load_prior, prior_summary, save_priors
from posthoc_vq.quantize.trained import TRAINED, TrainedCodebook
from posthoc_vq.progress import ProgressCallback, report, reporting
from posthoc_vq.run import Run
from posthoc_vq.autoencoders import FunctionAutoencoder

DECODE_BATCH = 1000  # as evaluate: decode(model, z) in batches of 1000


class ImageShapeError(ConfigError):
    """Images whose size or channels are not the model's."""


def downsampling_of(model: Any) -> int | None:
    """The pixels per latent position of a fully convolutional model (whose latent grid follows the image), else None."""
    return int(model.downsampling) if getattr(model, "fully_convolutional", False) else None


def ensure_priors(run: Run, folder: Path, codebook: CodebookEstimator, cb_meta: dict[str, Any]) -> None:
    """Fit and store the priors of a codebook saved without them (before priors existed, by a fine-tune, or a trained
    quantizer's), on its fit set, into ``folder``."""
    if has_priors(folder) or codebook.n_codes > MAX_TABLE_CODES:  # too wide for a probability table: no prior to fit
        return
    folder.mkdir(parents=True, exist_ok=True)
    latents = run_latents(run.root, cb_meta["fit_on"], cb_meta["latents"], seed=cb_meta.get("latent_seed") or 0)
    codes = predict_codes(codebook, latents.tokens(), latents.token_labels())
    grid = codes_grid(codes, len(latents), latents.latent_shape)
    save_priors(folder, fit_priors(codebook, grid))


@dataclass
class RunCodec:
    """A run's model and one of its codebooks, with the codebook's priors (see the module docstring)."""

    run: Run
    name: str
    model: Any
    codebook: CodebookEstimator | TrainedCodebook
    cb_meta: dict[str, Any]
    model_sha256: str
    image_shape: tuple[int, int, int] | None  # None: a fully convolutional model takes any H, W multiple of ``downsampling``
    latent_shape: tuple[int, ...] | None  # None: the grid follows the image
    folder: Path  # where the priors are: the codebook's folder, or RUN/priors/trained for the model's own quantizer
    _priors: dict[str, Prior] = field(default_factory=dict, repr=False)  # loaded on first use

    @cached_property
    def codebook_sha256(self) -> str:
        return self.cb_meta["sha256"]

    @property
    def n_stages(self) -> int:
        # a quantizer's own count where it has one: an FSQ with more than MAX_CODE_VECTORS codes cannot list them as vectors
        return int(getattr(self.codebook, "n_stages", 0)) or len(stage_codebooks(self.codebook))

    @property
    def downsampling(self) -> int | None:
        return downsampling_of(self.model)

    @property
    def grid(self) -> tuple[int, int, int]:
        """(h, w, M) of every image (a model with a fixed image size only)."""
        if self.latent_shape is None:
            raise ValueError("a fully convolutional model has no fixed grid: use shapes_of(codes)")
        h, w = (tuple(self.latent_shape[1:]) + (1, 1))[:2]
        return h, w, self.n_stages

    def shapes_of(self, codes: np.ndarray) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
        """(image shape (C, H, W), grid (h, w, M)) of codes (N, h, w, M)."""
        if self.image_shape is not None:
            return self.image_shape, self.grid
        h, w, m = (int(v) for v in codes.shape[1:])
        return (3, h * self.downsampling, w * self.downsampling), (h, w, m)

    def latent_shape_of(self, codes: np.ndarray) -> tuple[int, ...]:
        return self.latent_shape if self.latent_shape is not None else (int(self.codebook.dim), int(codes.shape[1]), int(codes.shape[2]))

    def prior(self, kind: str) -> Prior:
        if kind not in self._priors:
            self._priors[kind] = load_prior(self.folder, kind)
        return self._priors[kind]

    def priors(self) -> dict[str, Prior]:
        """Every prior stored with the codebook, by kind."""
        return {k: self.prior(k) for k in PRIOR_KINDS if (self.folder / PRIOR_FILE.format(kind=k)).is_file()}

    # ------------------------------------------------------------------ images <-> codes
    def check_images(self, x: torch.Tensor) -> torch.Tensor:
        if self.image_shape is None:
            f = self.downsampling
            if x.ndim != 4 or x.shape[1] != 3 or x.shape[2] % f or x.shape[3] % f or min(x.shape[2:]) < f:
                raise ImageShapeError(f"images of shape {tuple(x.shape[1:]) if x.ndim == 4 else tuple(x.shape)} do not fit this model, which takes RGB images "
                                      f"whose sides are multiples of {f} pixels (crop them: posthoc_vq.data.photos.crop_to_multiple)")
            return x
        if x.ndim != 4 or tuple(x.shape[1:]) != self.image_shape:
            c, h, w = self.image_shape
            raise ImageShapeError(f"images of shape {tuple(x.shape[1:]) if x.ndim == 4 else tuple(x.shape)} do not fit this model, which takes {c} channel(s) of {h}x{w} pixels")
        return x

    def codes(self, x: torch.Tensor, labels: np.ndarray | None = None) -> np.ndarray:
        """Codes (N, h, w, M) of images (N, C, H, W) in [0, 1]: the codebook's codes of their posterior means."""
        return self.codes_of_latents(encode_split(self.model, self.check_images(x), "mu"), labels)  # as run_latents encodes a split

    def codes_of_latents(self, z: torch.Tensor | np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
        """Codes (N, h, w, M) of posterior means (N, *latent_shape) already encoded."""
        tokens = to_tokens(z.numpy() if isinstance(z, torch.Tensor) else np.asarray(z, dtype=np.float32))
        token_labels = None if labels is None else np.repeat(np.asarray(labels), len(tokens) // max(len(z), 1))
        return codes_grid(predict_codes(self.codebook, tokens, token_labels), len(z), tuple(z.shape[1:]))

    def latents(self, codes: np.ndarray) -> np.ndarray:
        """Latents (N, *latent_shape) of codes (N, h, w, M): ``inverse_transform`` of the codes in ``predict``'s layout."""
        flat = codes.reshape(-1, codes.shape[-1])
        flat = flat if hasattr(self.codebook, "codebooks_") else flat[:, 0]
        return np.ascontiguousarray(from_tokens(self.codebook.inverse_transform(flat), self.latent_shape_of(codes)))

    def images(self, codes: np.ndarray) -> torch.Tensor:
        """Decoded images (N, C, H, W) of codes (N, h, w, M), as ``evaluate --codebook`` decodes them."""
        z = torch.from_numpy(self.latents(codes))
        if isinstance(self.codebook, TrainedCodebook):  # the decoder alone: decode() would quantize the latents again
            with torch.no_grad():
                return decode(FunctionAutoencoder(self.model.encode, self.model.decode_unquantized, name=self.name), z, DECODE_BATCH)
        return decode(self.model, z, DECODE_BATCH)

    # ------------------------------------------------------------------ codes <-> files
    def header(self, prior: Prior, codes: np.ndarray, n_images: int = 1, container: bool = False) -> Header:
        image_shape, grid = self.shapes_of(codes)
        return Header(self.model_sha256, self.codebook_sha256, prior.kind, prior.sha256[:16], image_shape, grid, n_images, container)

    def write(self, codes: np.ndarray, prior: str = "empirical", container: bool = False) -> list[bytes]:
        """One file per image of codes (N, h, w, M), or one container file (a list of one)."""
        p = self.prior(prior)
        if container:
            return [bitstream.write(self.header(p, codes, len(codes), True), codes, p)]
        files = []
        for i in range(len(codes)):
            files.append(bitstream.write(self.header(p, codes), codes[i : i + 1], p))
            if i % 256 == 255 or i == len(codes) - 1:
                report("writing bitstreams", i + 1, len(codes))
        return files

    def compress(self, x: torch.Tensor, prior: str = "empirical", container: bool = False) -> list[bytes]:
        """Files of images (N, C, H, W) in [0, 1]: one per image, or one container."""
        return self.write(self.codes(x), prior, container)

    def read(self, data: bytes, what: str = "bitstream") -> tuple[Header, np.ndarray]:
        """(header, codes (N, h, w, M)) of a file made with this model and codebook; others are refused by sha256."""
        header, _ = bitstream.read_header(data, what)
        if header.model_sha256 != self.model_sha256:
            raise BitstreamError(f"{what}: made for another model (sha256 {header.model_sha256[:12]}..., this run's is {self.model_sha256[:12]}...)")
        if header.codebook_sha256 != self.codebook_sha256:
            raise BitstreamError(f"{what}: made with another codebook (sha256 {header.codebook_sha256[:12]}..., '{self.name}' is {self.codebook_sha256[:12]}...)")
        if self.image_shape is None:
            f, (h, w, m) = self.downsampling, header.grid
            if header.image_shape != (3, h * f, w * f) or m != self.n_stages:
                raise BitstreamError(f"{what}: image {header.image_shape} / grid {header.grid} in the header, but this model makes (3, {f}h, {f}w) / (h, w, {self.n_stages})")
        elif header.image_shape != self.image_shape or header.grid != self.grid:
            raise BitstreamError(f"{what}: image {header.image_shape} / grid {header.grid} in the header, but this model makes {self.image_shape} / {self.grid}")
        try:
            prior = self.prior(header.prior_kind)
        except NotFoundError as err:
            raise BitstreamError(f"{what}: made with the {header.prior_kind} prior, which this codebook does not have ({err})") from None
        return bitstream.read(data, prior, what)

    def decompress(self, data: bytes, what: str = "bitstream") -> tuple[Header, np.ndarray, torch.Tensor]:
        header, codes = self.read(data, what)
        return header, codes, self.images(codes)


def open_codec(run_dir: str | Path | Run, name: str, *, model: Any = None) -> RunCodec:
    """The codec of a run's codebook ``name`` (its priors fitted now if the codebook was saved without them).

    ``name`` :data:`~posthoc_vq.quantize.trained.TRAINED` is the model's own trained quantizer (VQ, RVQ, FSQ), its
    priors fitted on the train split's codes and kept in ``RUN/priors/trained``. ``model``: the run's model, if the caller
    has already loaded it (else it is loaded here).
    """
    run = Run.open(run_dir)
    meta = run.model_record()
    model = run.load_model()[0] if model is None else model
    model_sha = run.verified_model_sha256()
    if name == TRAINED:
        if model.quantizer is None:
            raise NotFoundError(f"{run.root}: the model has no trained quantizer, so there is no '{TRAINED}' codebook; name a post-hoc codebook")
        codebook, folder = TrainedCodebook(model.quantizer), run.root / "priors" / TRAINED
        cb_meta = {"sha256": model_sha, "fit_on": "train", "latents": "mu", "latent_seed": None, "method": model.quantizer.kind}
    else:
        codebook, cb_meta = open_codebook(run, name)
        folder = run.codebook_files(name)[1].parent
    ensure_priors(run, folder, codebook, cb_meta)
    cfg = meta["model"]
    if downsampling_of(model) is not None:  # the grid follows the image
        latent_shape, image_shape = None, None
    else:
        latent_shape = tuple(model.latent_shape)
        image_shape = (int(cfg["in_channels"]), int(cfg["image_size"]), int(cfg["image_size"]))
    return RunCodec(run, name, model, codebook, cb_meta, model_sha, image_shape, latent_shape, folder)


def find_codec(run_dir: str | Path | Run, data: bytes, what: str) -> RunCodec:
    """The codec of the run's codebook whose sha256 a file's header names."""
    header, _ = bitstream.read_header(data, what)
    run = Run.open(run_dir)
    if header.codebook_sha256 == header.model_sha256:  # the model's own quantizer: its codebook is inside the model
        return open_codec(run, TRAINED)
    for name in run.codebook_names():  # the records' checksums: no codebook is loaded but the one named
        if read_json(run.codebook_files(name)[1], what="codebook record").get("sha256") == header.codebook_sha256:
            return open_codec(run, name)
    raise BitstreamError(f"{what}: made with a codebook (sha256 {header.codebook_sha256[:12]}...) that {run.root} does not have")


# ---------------------------------------------------------------------- rates
def rate_fields(codec_parts: tuple[str, str, tuple[int, int, int], tuple[int, int, int]], priors: dict[str, Prior], codes: np.ndarray,
                n_codes: int) -> dict[str, Any]:
    """The ``rate`` block of an evaluation: nominal, ideal and real bits per pixel, per image with 95% CIs.

    ``codec_parts``: (model sha256, codebook sha256, image shape (C, H, W), grid (h, w, M)) for the headers.
    """
    model_sha, cb_sha, image_shape, grid = codec_parts
    n = len(codes)
    pixels = image_shape[1] * image_shape[2]
    nominal = codes[0].size * np.log2(n_codes) if n else 0.0
    out: dict[str, Any] = {
        "pixels_per_image": pixels, "nominal_bits_per_image": float(nominal), "nominal_bpp": float(nominal / pixels), "n_images": n, "priors": {},
    }
    if n_codes > MAX_TABLE_CODES:
        out["not_coded"] = f"{n_codes} codes are too many for a probability table (at most 2^24): no bitstream, the rate is nominal only"
    for kind, prior in priors.items():
        ideal = prior.ideal_bits(codes)
        files = [bitstream.write(Header(model_sha, cb_sha, kind, prior.sha256[:16], image_shape, grid), codes[i : i + 1], prior) for i in range(n)]
        sizes = np.array([len(f) for f in files], dtype=np.float64)
        overhead = np.array([len(f) - len(bitstream.read_header(f)[1]) for f in files], dtype=np.float64)
        container = len(bitstream.write(Header(model_sha, cb_sha, kind, prior.sha256[:16], image_shape, grid, n, True), codes, prior)) if n else 0
        out["priors"][kind] = {
            "ideal_bpp": mean_ci(ideal / pixels).to_dict(),
            "real_bpp": mean_ci(sizes * 8 / pixels).to_dict(),
            "real_bytes_mean": float(sizes.mean()) if n else None,
            "header_bytes_mean": float(overhead.mean()) if n else None,  # header and CRC of a one-image file
            "container_bytes": container,
            "container_bpp": container * 8 / (n * pixels) if n else None,
            "per_image_bits": {"ideal": ideal.tolist(), "real": (sizes * 8).tolist()},
        }
    return out


def codec_rate(codec: RunCodec, codes: np.ndarray) -> dict[str, Any]:
    """:func:`rate_fields` of a run's codec."""
    return rate_fields((codec.model_sha256, codec.codebook_sha256, *codec.shapes_of(codes)), codec.priors(), codes, codec.codebook.n_codes)


def compress_images(run_dir: str | Path | Run, name: str, x: torch.Tensor, *, prior: str = "empirical", container: bool = False) -> list[bytes]:
    """Library face: files of images (N, C, H, W) in [0, 1] with a run's codebook ``name``."""
    return open_codec(run_dir, name).compress(x, prior, container)


def decompress_files(run_dir: str | Path | Run, files: Sequence[bytes | str | Path]) -> list[tuple[Header, np.ndarray, torch.Tensor]]:
    """Library face: (header, codes (N, h, w, M), images (N, C, H, W)) of each file, with the run's codebook its header names.

    Every file is read and checked first; the codes of all files made with one codebook are then decoded together in
    batches of :data:`DECODE_BATCH`, as ``evaluate --codebook`` decodes a split, so the images equal the evaluation's.
    """
    datas = []
    for f in files:
        if isinstance(f, (bytes, bytearray, memoryview)):
            datas.append((bytes(f), "bitstream"))
            continue
        try:
            datas.append((Path(f).read_bytes(), str(f)))
        except (FileNotFoundError, IsADirectoryError):
            raise NotFoundError(f"{f}: no such file") from None
    codecs: dict[str, RunCodec] = {}
    parts = []
    for data, what in datas:
        header, _ = bitstream.read_header(data, what)
        if header.codebook_sha256 not in codecs:
            codecs[header.codebook_sha256] = find_codec(run_dir, data, what)
        parts.append(codecs[header.codebook_sha256].read(data, what))
    images: list[torch.Tensor | None] = [None] * len(parts)
    groups = {(h.codebook_sha256, h.grid) for h, _ in parts}  # one grid per group: a fully convolutional model's files differ in size
    for sha, grid in sorted(groups):
        codec = codecs[sha]
        mine = [i for i, (header, _) in enumerate(parts) if (header.codebook_sha256, header.grid) == (sha, grid)]
        decoded = codec.images(np.concatenate([parts[i][1] for i in mine]))
        for i, chunk in zip(mine, torch.split(decoded, [len(parts[i][1]) for i in mine])):
            images[i] = chunk
    return [(header, codes, img) for (header, codes), img in zip(parts, images)]


# ---------------------------------------------------------------------- folders (the CLI's compress / decompress)
def read_photo_files(paths: Sequence[str | Path], multiple: int) -> list[torch.Tensor]:
    """Images (1, 3, H, W) in [0, 1], one per file, for a fully convolutional model: RGB (grayscale replicated; an opaque
    RGBA image loses its alpha, a transparent one is an error: :func:`~posthoc_vq.data.photos.to_rgb`), then cropped to
    multiples of ``multiple`` pixels by the datasets' rule (:func:`~posthoc_vq.data.photos.crop_to_multiple`: the
    top-left part is kept). Every file is read and checked before any work."""
    from PIL import Image, UnidentifiedImageError

    from posthoc_vq.data.photos import crop_to_multiple, to_rgb
    from posthoc_vq.errors import DatasetError

    out = []
    for path in paths:
        try:
            with Image.open(path) as im:
                a = to_rgb(np.asarray(im), str(path))
            a = crop_to_multiple(a, multiple)
        except FileNotFoundError:
            raise NotFoundError(f"{path}: no such image file") from None
        except (UnidentifiedImageError, OSError) as err:
            raise ImageShapeError(f"{path}: not a readable image ({err})") from None
        except DatasetError as err:
            raise ImageShapeError(str(err)) from None
        out.append(torch.from_numpy(np.moveaxis(a, -1, 0)[None].astype(np.float32) / 255.0))
    return out


def read_image_files(paths: Sequence[str | Path], image_shape: tuple[int, int, int]) -> torch.Tensor:
    """Images (N, C, H, W) in [0, 1] from PNG/JPEG/... files; every file is checked against ``image_shape`` before any work."""
    from PIL import Image, UnidentifiedImageError

    c, h, w = image_shape
    arrays = []
    for path in paths:
        try:
            with Image.open(path) as im:
                if im.mode not in ("L", "RGB"):
                    raise ImageShapeError(f"{path}: image mode {im.mode}; this model takes {'grayscale (L)' if c == 1 else 'RGB'} images")
                a = np.asarray(im)
        except FileNotFoundError:
            raise NotFoundError(f"{path}: no such image file") from None
        except (UnidentifiedImageError, OSError) as err:
            raise ImageShapeError(f"{path}: not a readable image ({err})") from None
        a = a[None] if a.ndim == 2 else np.moveaxis(a, -1, 0)
        if a.shape != (c, h, w):
            raise ImageShapeError(f"{path}: {a.shape[0]} channel(s) of {a.shape[1]}x{a.shape[2]} pixels, but this model takes {c} channel(s) of {h}x{w}")
        arrays.append(a)
    return torch.from_numpy(np.stack(arrays).astype(np.float32) / 255.0) if arrays else torch.empty(0, c, h, w)


def write_png(path: Path, image: torch.Tensor) -> None:
    """An image (C, H, W) in [0, 1] as an 8-bit PNG (clipped, rounded), written to a temp file and renamed."""
    from PIL import Image

    a = np.rint(image.clamp(0, 1).numpy() * 255).astype(np.uint8)
    im = Image.fromarray(a[0] if a.shape[0] == 1 else np.moveaxis(a, 0, -1))
    tmp = path.with_name(f".{path.name}.tmp")
    im.save(tmp, format="PNG")
    tmp.replace(path)


def _write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def compress_to_folder(run_dir: str | Path | Run, name: str, out: str | Path, *, split: str | None = None, images: Sequence[str | Path] = (),
                       prior: str = "empirical", per_image: bool = False, data_dir: str | None = None,
                       progress: ProgressCallback | None = None) -> dict[str, Any]:
    """Write the bitstream files of a split (one container, or one file per image) or of image files (one each) to ``out``.

    Returns a record: the files written, their bytes, bits per pixel (bytes x 8 / pixels, header included).
    """
    from posthoc_vq.evaluation.reconstruction import split_images
    from posthoc_vq.latents import load_run_splits

    codec = open_codec(run_dir, name)
    codec.prior(prior)  # an unknown or missing prior fails before any work
    if (split is None) == (not images):
        raise ConfigError("compress: give either --split or image files, not both (nor neither)")
    if split is not None:
        batches, stems = [split_images(load_run_splits(codec.run.root, data_dir), split)], None
    elif codec.image_shape is None:  # any size: one image at a time, each cropped to the model's multiple
        batches, stems = read_photo_files(images, codec.downsampling), [Path(p).stem for p in images]
    else:
        batches, stems = [read_image_files(images, codec.image_shape)], [Path(p).stem for p in images]
    with reporting(progress):
        files = [f for x in batches for f in codec.compress(x, prior, container=split is not None and not per_image)]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if stems is None:
        stems = [split] if len(files) == 1 and not per_image else [f"{split}-{i:05d}" for i in range(len(files))]
    paths = [out / f"{stem}{bitstream.SUFFIX}" for stem in stems]
    for path, data in zip(paths, files):
        _write_bytes(path, data)
    total = sum(len(f) for f in files)
    pixels = sum(x.shape[0] * x.shape[2] * x.shape[3] for x in batches)
    n = sum(len(x) for x in batches)
    return {"run": str(codec.run.root), "codebook": name, "prior": prior, "n_images": n, "files": [str(p) for p in paths],
            "bytes": total, "bpp": total * 8 / pixels if pixels else None, "container": len(files) == 1 and split is not None and not per_image}


def decompress_to_folder(run_dir: str | Path | Run, files: Sequence[str | Path], out: str | Path, *,
                         progress: ProgressCallback | None = None) -> dict[str, Any]:
    """Decode bitstream files to PNG images in ``out``: ``<stem>.png``, or ``<stem>-<i>.png`` for a container's images."""
    with reporting(progress):
        decoded = decompress_files(run_dir, files)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for f, (header, _, images) in zip(files, decoded):
        stem = Path(f).stem
        for j, image in enumerate(images):
            path = out / (f"{stem}-{j:05d}.png" if header.container else f"{stem}.png")
            write_png(path, image)
            written.append(str(path))
    return {"files": [str(f) for f in files], "images": written, "n_images": len(written)}
