"""MNIST-family datasets (MNIST, Fashion-MNIST) stored as gzip-compressed idx files.

The idx format is a 4-byte magic number ``00 00 <dtype> <ndim>``, then ``ndim``
big-endian uint32 dimensions, then the row-major data. Only dtype ``0x08``
(unsigned byte), the one the official files use, is accepted.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from posthoc_vq.data.checksums import MNIST_FILES, OFFICIAL_MD5, verify_md5
from posthoc_vq.data.paths import missing_data_error
from posthoc_vq.data.splits import ImageSet
from posthoc_vq.errors import DatasetError

IDX_UBYTE = 0x08
MNIST_SIDE = 28
MNIST_CLASSES = 10


def _corrupt(path: Path, what: str) -> DatasetError:
    return DatasetError(f"{path} is not a valid idx file: {what}; delete it and download it again")


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """Read a gzip-compressed idx file of unsigned bytes.

    Parameters
    ----------
    path : Path
        A ``*-idx?-ubyte.gz`` file.
    ndim : int
        Expected number of dimensions (1 for labels, 3 for images).

    Returns
    -------
    np.ndarray
        ``uint8`` array with the shape declared in the header.

    Raises
    ------
    DatasetError
        If the gzip stream is corrupt or truncated, or the header is invalid or
        does not match the amount of data.
    """
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise DatasetError(
            f"{path} is corrupt or truncated ({exc}); delete it and download it again"
        ) from exc
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise _corrupt(path, f"{len(raw)} bytes is too short for a {ndim}-d idx header")
    magic = int.from_bytes(raw[:4], "big")
    expected_magic = (IDX_UBYTE << 8) | ndim
    if magic != expected_magic:
        raise _corrupt(path, f"magic number 0x{magic:08x}, expected 0x{expected_magic:08x}")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected_size = header_size + int(np.prod(dims, dtype=np.int64))
    if len(raw) != expected_size:
        raise _corrupt(
            path,
            f"header declares shape {dims} ({expected_size} bytes with header) "
            f"but the file holds {len(raw)} bytes",
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header_size).reshape(dims)


def _read_pair(images_path: Path, labels_path: Path) -> ImageSet:
    images = read_idx(images_path, 3)
    labels = read_idx(labels_path, 1)
    if images.shape[1:] != (MNIST_SIDE, MNIST_SIDE):
        raise _corrupt(images_path, f"images are {images.shape[1:]}, expected 28x28")
    if len(labels) != len(images):
        raise _corrupt(
            labels_path, f"{len(labels)} labels for {len(images)} images in {images_path.name}"
        )
    if labels.size and labels.max() >= MNIST_CLASSES:
        raise _corrupt(labels_path, f"label {labels.max()} is not in 0..9")
    return ImageSet(images[..., None].copy(), labels.astype(np.int64))


def load_mnist_family(name: str, data_dir: Path) -> tuple[ImageSet, ImageSet]:
    """Load the official train and test splits of MNIST or Fashion-MNIST.

    Parameters
    ----------
    name : str
        ``'mnist'`` or ``'fashion-mnist'``.
    data_dir : Path
        Root data folder; files are read from ``data_dir / name``.

    Returns
    -------
    train, test : ImageSet
        Images ``(60000, 28, 28, 1)`` and ``(10000, 28, 28, 1)`` uint8, labels 0..9.

    Raises
    ------
    DatasetError
        If a file is missing, fails its official MD5 check, or is corrupt.
    """
    folder = data_dir / name
    paths = {f: folder / f for f in MNIST_FILES}
    missing = [p for p in paths.values() if not p.is_file()]
    if missing:
        raise missing_data_error(name, data_dir, [folder] if not folder.is_dir() else missing)
    for file_name, path in paths.items():
        verify_md5(path, OFFICIAL_MD5[name][file_name])
    train = _read_pair(paths["train-images-idx3-ubyte.gz"], paths["train-labels-idx1-ubyte.gz"])
    test = _read_pair(paths["t10k-images-idx3-ubyte.gz"], paths["t10k-labels-idx1-ubyte.gz"])
    return train, test
