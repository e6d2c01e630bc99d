"""Official MD5 checksums of the downloadable dataset files, and MD5 checks."""

from __future__ import annotations

import hashlib
from pathlib import Path

from posthoc_vq.errors import DatasetError

MNIST_FILES: tuple[str, ...] = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)

#: dataset name -> file name (relative to ``<data_dir>/<name>/``) -> official MD5.
OFFICIAL_MD5: dict[str, dict[str, str]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
    "cifar-10": {
        "cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a",
    },
}

#: Size in bytes of the official CIFAR-10 archive (its MD5 is only checked at this size).
CIFAR10_ARCHIVE_SIZE = 170_498_071


def md5_file(path: Path, chunk_size: int = 1 << 20) -> str:
    """Return the hexadecimal MD5 digest of the file at ``path``."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def verify_md5(path: Path, expected: str) -> None:
    """Check that the file at ``path`` has MD5 ``expected``.

    Raises
    ------
    DatasetError
        Naming the file, the expected and the actual MD5, if they differ.
    """
    actual = md5_file(path)
    if actual != expected:
        raise DatasetError(
            f"{path} is corrupt: its md5 is {actual} but the official file has {expected}; "
            f"delete it and download it again (posthoc-vq data download)"
        )
