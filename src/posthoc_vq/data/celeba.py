"""CelebA (aligned and cropped faces) with its official train/val/test partition.

Expected layout (CelebA is on Google Drive and must be fetched by hand)::

    <data_dir>/celeba/img_align_celeba/000001.jpg ...
    <data_dir>/celeba/list_eval_partition.txt       # lines "000001.jpg 0"

Partition values are 0 (train), 1 (val) and 2 (test). Images are centre-cropped
and resized as in :mod:`posthoc_vq.data.imageops`. Decoding ~200k JPEGs is slow,
so the decoded arrays are cached in ``<data_dir>/celeba/cache_<size>.npz``
(uncompressed). The cache records the partition file's size and mtime and is
rebuilt when either changes or when it cannot be read.
"""

from __future__ import annotations

import os
import tempfile
import warnings
import zipfile
from pathlib import Path

import numpy as np

from posthoc_vq.data.imageops import load_square_images
from posthoc_vq.data.splits import SPLIT_NAMES, DatasetSplits, ImageSet
from posthoc_vq.errors import DatasetError

IMAGE_DIR = "img_align_celeba"
PARTITION_FILE = "list_eval_partition.txt"
DEFAULT_CELEBA_SIZE = 64
MANUAL_DOWNLOAD = (
    "CelebA cannot be downloaded automatically (it is hosted on Google Drive): download "
    "img_align_celeba.zip and list_eval_partition.txt from "
    "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html by hand and unzip them so that "
    "{root}/img_align_celeba/000001.jpg and {root}/list_eval_partition.txt exist, or point "
    "--data-dir / $POSTHOC_VQ_DATA at a folder that contains celeba/"
)


def read_partition(path: Path) -> list[tuple[str, int]]:
    """Parse ``list_eval_partition.txt``.

    Parameters
    ----------
    path : Path
        Partition file with lines ``<file name> <0|1|2>``.

    Returns
    -------
    list of (str, int)
        File names and split indices (0 train, 1 val, 2 test), in file order.

    Raises
    ------
    DatasetError
        Naming the file and line, if a line is malformed.
    """
    entries = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
            raise DatasetError(
                f"{path} line {number} is {line!r}, expected '<image>.jpg <0|1|2>'; "
                f"restore the official {PARTITION_FILE}"
            )
        entries.append((fields[0], int(fields[1])))
    if not entries:
        raise DatasetError(f"{path} lists no images; restore the official {PARTITION_FILE}")
    return entries


def _stamp(partition: Path) -> np.ndarray:
    st = partition.stat()
    return np.array([st.st_size, st.st_mtime_ns], dtype=np.int64)


def _read_cache(cache: Path, stamp: np.ndarray, size: int) -> dict[str, np.ndarray] | None:
    try:
        with np.load(cache, allow_pickle=False) as npz:
            if not np.array_equal(npz["partition_stamp"], stamp):
                return None
            arrays = {name: npz[name] for name in SPLIT_NAMES}
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
        return None
    if any(a.dtype != np.uint8 or a.shape[1:] != (size, size, 3) for a in arrays.values()):
        return None
    return arrays


def _write_cache(cache: Path, arrays: dict[str, np.ndarray], stamp: np.ndarray) -> None:
    tmp_name = None
    try:
        with tempfile.NamedTemporaryFile(
            dir=cache.parent, prefix=f".{cache.name}.", suffix=".tmp", delete=False
        ) as f:
            tmp_name = f.name
            np.savez(f, partition_stamp=stamp, **arrays)
        os.replace(tmp_name, cache)
    except OSError as exc:
        if tmp_name is not None and os.path.exists(tmp_name):
            os.unlink(tmp_name)
        warnings.warn(
            f"could not write the CelebA cache {cache} ({exc}); the images will be decoded "
            f"again next time. Make {cache.parent} writable to enable the cache",
            stacklevel=3,
        )


def load_celeba(data_dir: Path, image_size: int | None = None) -> DatasetSplits:
    """Load CelebA with its official splits, through the decoded-array cache.

    Parameters
    ----------
    data_dir : Path
        Root data folder; files are read from ``data_dir / 'celeba'``.
    image_size : int or None
        Output side length (default 64).

    Returns
    -------
    DatasetSplits
        Images ``(N, image_size, image_size, 3)`` uint8; labels all 0,
        ``num_classes == 1``. The val split is the official one.

    Raises
    ------
    DatasetError
        If the folder, the partition file or an image is missing or corrupt.
    """
    size = DEFAULT_CELEBA_SIZE if image_size is None else image_size
    root = data_dir / "celeba"
    image_dir, partition = root / IMAGE_DIR, root / PARTITION_FILE
    missing = [p for p in (image_dir, partition) if not p.exists()]
    if missing:
        raise DatasetError(
            f"dataset 'celeba' not found: missing {', '.join(map(str, missing))}. "
            + MANUAL_DOWNLOAD.format(root=root)
        )
    stamp = _stamp(partition)
    cache = root / f"cache_{size}.npz"
    arrays = _read_cache(cache, stamp, size)
    if arrays is None:
        entries = read_partition(partition)
        which = np.array([split for _, split in entries])
        order = np.argsort(which, kind="stable")  # group by split, keep file order
        images = load_square_images(
            [image_dir / entries[i][0] for i in order], size, f"decoding CelebA at {size}px"
        )
        bounds = np.cumsum([0] + [int(np.sum(which == i)) for i in range(len(SPLIT_NAMES))])
        arrays = {name: images[bounds[i] : bounds[i + 1]] for i, name in enumerate(SPLIT_NAMES)}
        _write_cache(cache, arrays, stamp)
    sets = {
        name: ImageSet(images, np.zeros(len(images), dtype=np.int64))
        for name, images in arrays.items()
    }
    return DatasetSplits("celeba", sets["train"], sets["val"], sets["test"], num_classes=1)
