"""``cifar-10-jpeg``: the 60,000 CIFAR-10 images as JPEG files (quality 75) in one tar.gz.

This is a JPEG re-encoding of CIFAR-10, NOT the official python batches (see
:mod:`posthoc_vq.data.cifar`): its pixels differ, so its numbers are
``cifar-10-jpeg`` numbers, never CIFAR-10 numbers. Expected file::

    <data_dir>/cifar-10-jpeg/cifar-10-jpeg.tar.gz
        train/<class>/NNNN.jpg   5,000 per class
        test/<class>/NNNN.jpg    1,000 per class

The archive is read in place (never unpacked) after its sha256 is checked. Its
members are decoded once with PIL, in sorted member-name order per split, and
labelled by the class's position in :data:`CIFAR_JPEG_CLASSES`. The decoded
arrays are cached as safetensors in a writable cache folder (the data folder may
be read-only): ``$POSTHOC_VQ_CACHE`` else ``~/.cache/posthoc_vq/decoded``, in
``cifar-10-jpeg-<archive sha256>.safetensors`` beside a JSON record of the
cache file's own sha256, which is checked on every load; a damaged or stale
cache is decoded again (with a warning naming it).
"""

from __future__ import annotations

import io
import os
import tarfile
import warnings
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from posthoc_vq.data.progress import make_progress
from posthoc_vq.data.splits import ImageSet
from posthoc_vq.errors import CheckpointError, DatasetError
from posthoc_vq.io import load_tensors, read_json, save_tensors, sha256_file, write_json

NAME = "cifar-10-jpeg"
ARCHIVE_NAME = "cifar-10-jpeg.tar.gz"
#: sha256 of the published archive (also in ``../shared/datasets/SHA256SUMS``).
ARCHIVE_SHA256 = "d877bdec11f54282b92da36e9f045bd305d663b1223e3822baff39ca9ff6690a"
CIFAR_JPEG_CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
CIFAR_JPEG_SIDE = 32
SPLITS: tuple[str, ...] = ("train", "test")
CACHE_ENV_VAR = "POSTHOC_VQ_CACHE"
DEFAULT_CACHE_DIR = Path("~/.cache/posthoc_vq/decoded")
_CACHE_FORMAT = 1
_REDOWNLOAD = "delete it and fetch the published cifar-10-jpeg.tar.gz again"


def cache_dir() -> Path:
    """The folder of decoded-array caches: ``$POSTHOC_VQ_CACHE`` if set and non-empty, else ``~/.cache/posthoc_vq/decoded``."""
    return Path(os.environ.get(CACHE_ENV_VAR) or DEFAULT_CACHE_DIR).expanduser()


def decode_jpeg(raw: bytes, source: str) -> np.ndarray:
    """Decode one 32x32 JPEG to ``(32, 32, 3)`` uint8 RGB; a bad image raises DatasetError naming ``source``."""
    try:
        with Image.open(io.BytesIO(raw)) as im:
            im.load()
            pixels = np.asarray(im.convert("RGB"))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DatasetError(f"{source} is not a readable JPEG ({exc}); the archive is damaged: {_REDOWNLOAD}") from exc
    if pixels.shape != (CIFAR_JPEG_SIDE, CIFAR_JPEG_SIDE, 3):
        raise DatasetError(f"{source} is {pixels.shape[1]}x{pixels.shape[0]}, expected 32x32; the archive is not cifar-10-jpeg: {_REDOWNLOAD}")
    return pixels


def _read_members(archive: Path) -> dict[str, list[tuple[str, bytes, int]]]:
    """``split -> [(member name, jpeg bytes, label)]`` sorted by member name; one pass over the gzip stream."""
    found: dict[str, list[tuple[str, bytes, int]]] = {split: [] for split in SPLITS}
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                parts = member.name.removeprefix("./").split("/")
                if len(parts) != 3 or parts[0] not in found or not parts[2].lower().endswith((".jpg", ".jpeg")):
                    raise DatasetError(f"{archive}:{member.name} does not fit the layout <train|test>/<class>/<name>.jpg; {_REDOWNLOAD}")
                if parts[1] not in CIFAR_JPEG_CLASSES:
                    raise DatasetError(f"{archive}:{member.name} is in unknown class {parts[1]!r} (expected one of {', '.join(CIFAR_JPEG_CLASSES)}); {_REDOWNLOAD}")
                raw = tar.extractfile(member).read()
                found[parts[0]].append((member.name, raw, CIFAR_JPEG_CLASSES.index(parts[1])))
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise DatasetError(f"{archive} is corrupt or truncated ({type(exc).__name__}: {exc}); {_REDOWNLOAD}") from exc
    for split, entries in found.items():
        if not entries:
            raise DatasetError(f"{archive} holds no {split}/<class>/*.jpg images; {_REDOWNLOAD}")
        entries.sort(key=lambda e: e[0])
    return found


def decode_archive(archive: Path, *, progress: bool = True) -> tuple[ImageSet, ImageSet]:
    """Decode every JPEG of the archive (no checksum, no cache).

    Parameters
    ----------
    archive : Path
        A tar.gz in the ``train|test/<class>/*.jpg`` layout.
    progress : bool
        Draw a progress bar on stderr while decoding.

    Returns
    -------
    train, test : ImageSet
        Images ``(N, 32, 32, 3)`` uint8 in sorted member-name order, labels ``(N,)``
        int64 (index in :data:`CIFAR_JPEG_CLASSES`).

    Raises
    ------
    DatasetError
        Naming the archive (corrupt or truncated stream, wrong layout) or the member
        (an unreadable or wrongly sized JPEG).
    """
    members = _read_members(archive)
    total = sum(len(entries) for entries in members.values())
    out = {}
    with make_progress(enabled=progress) as bar:
        task = bar.add_task(f"decoding {NAME}", total=total)
        for split, entries in members.items():
            images = np.empty((len(entries), CIFAR_JPEG_SIDE, CIFAR_JPEG_SIDE, 3), dtype=np.uint8)
            for i, (name, raw, _) in enumerate(entries):
                images[i] = decode_jpeg(raw, f"{archive}:{name}")
                if i % 1000 == 999:
                    bar.advance(task, 1000)
            bar.advance(task, len(entries) % 1000)
            out[split] = ImageSet(images, np.array([label for _, _, label in entries], dtype=np.int64))
    return out["train"], out["test"]


def _cache_paths(folder: Path, archive_sha256: str) -> tuple[Path, Path]:
    stem = folder / f"{NAME}-{archive_sha256}"
    return stem.with_suffix(".safetensors"), stem.with_suffix(".json")


def _read_cache(tensors: Path, record: Path, archive_sha256: str) -> tuple[ImageSet, ImageSet] | None:
    if not tensors.exists() or not record.exists():
        return None
    try:
        meta = read_json(record, "decoded-image cache record")
        if not isinstance(meta, dict) or meta.get("format") != _CACHE_FORMAT or meta.get("archive_sha256") != archive_sha256:
            raise CheckpointError(f"{record} does not describe this archive's cache")
        arrays = {k: v.numpy() for k, v in load_tensors(tensors, sha256=str(meta.get("sha256"))).items()}
        sets = tuple(ImageSet(arrays[f"{s}_images"], arrays[f"{s}_labels"]) for s in SPLITS)
    except (CheckpointError, KeyError, ValueError) as exc:
        warnings.warn(f"the {NAME} cache {tensors} is damaged or stale ({exc}); decoding the archive again", stacklevel=4)
        return None
    if any(s.images.shape[1:] != (CIFAR_JPEG_SIDE, CIFAR_JPEG_SIDE, 3) for s in sets):
        warnings.warn(f"the {NAME} cache {tensors} holds wrongly shaped images; decoding the archive again", stacklevel=4)
        return None
    return sets[0], sets[1]


def _write_cache(tensors: Path, record: Path, archive_sha256: str, train: ImageSet, test: ImageSet) -> None:
    arrays = {"train_images": train.images, "train_labels": train.labels, "test_images": test.images, "test_labels": test.labels}
    try:
        digest = save_tensors(tensors, {k: torch.from_numpy(v) for k, v in arrays.items()})
        write_json(record, {"format": _CACHE_FORMAT, "dataset": NAME, "archive_sha256": archive_sha256, "sha256": digest})
    except OSError as exc:
        warnings.warn(
            f"could not write the {NAME} cache {tensors} ({exc}); the archive will be decoded again next "
            f"time. Set ${CACHE_ENV_VAR} to a writable folder to enable the cache",
            stacklevel=3,
        )


def load_cifar10_jpeg(
    data_dir: Path,
    *,
    sha256: str = ARCHIVE_SHA256,
    cache: Path | None = None,
    progress: bool = True,
) -> tuple[ImageSet, ImageSet]:
    """Load the train and test splits of ``cifar-10-jpeg`` through the decoded-array cache.

    Parameters
    ----------
    data_dir : Path
        Root data folder; the archive is ``data_dir / 'cifar-10-jpeg' / 'cifar-10-jpeg.tar.gz'``.
    sha256 : str
        Expected sha256 of the archive (default: the published archive's); the archive is
        refused when it differs. Tests pass the digest of the archives they build.
    cache : Path or None
        Folder of the decoded-array cache (default :func:`cache_dir`). The cache file is
        named by ``sha256``.
    progress : bool
        Draw a progress bar on stderr while decoding.

    Returns
    -------
    train, test : ImageSet
        Images ``(50000, 32, 32, 3)`` and ``(10000, 32, 32, 3)`` uint8 for the published
        archive, labels 0..9 in the order of :data:`CIFAR_JPEG_CLASSES`.

    Raises
    ------
    DatasetError
        If the archive is missing, has another sha256, is corrupt or truncated, or holds an
        unreadable member (named).
    """
    archive = data_dir / NAME / ARCHIVE_NAME
    if not archive.is_file():
        raise DatasetError(
            f"dataset {NAME!r} not found: missing {archive}. Put the published {ARCHIVE_NAME} "
            f"(sha256 {sha256}) there, or point --data-dir / $POSTHOC_VQ_DATA at a folder that contains {NAME}/"
        )
    actual = sha256_file(archive)
    if actual != sha256:
        raise DatasetError(f"{archive} has sha256 {actual} but {sha256} was expected: it is damaged or another file; {_REDOWNLOAD}")
    tensors, record = _cache_paths(cache or cache_dir(), sha256)
    cached = _read_cache(tensors, record, sha256)
    if cached is not None:
        return cached
    train, test = decode_archive(archive, progress=progress)
    _write_cache(tensors, record, sha256, train, test)
    return train, test
