"""CIFAR-10 from the official "python version" batches.

Two layouts under ``<data_dir>/cifar-10/`` are accepted, the extracted folder
first:

* ``cifar-10-batches-py/{data_batch_1..5, test_batch}``;
* the archive ``cifar-10-python.tar.gz``, whose members are read directly
  without extracting it.

The archive's official MD5 is checked only when the archive has the official
size (170498071 bytes): smaller archives (for example the ones the tests build)
are accepted unchecked; their contents are still validated batch by batch.

The batches are Python pickles. They are loaded with :class:`SafeUnpickler`,
which can build only plain containers and numpy arrays, so a tampered file
cannot run code.
"""

from __future__ import annotations

import codecs
import io
import pickle
import tarfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from posthoc_vq.data.checksums import CIFAR10_ARCHIVE_SIZE, OFFICIAL_MD5, verify_md5
from posthoc_vq.data.paths import missing_data_error
from posthoc_vq.data.splits import ImageSet
from posthoc_vq.errors import DatasetError

ARCHIVE_NAME = "cifar-10-python.tar.gz"
BATCH_DIR = "cifar-10-batches-py"
TRAIN_BATCHES: tuple[str, ...] = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
CIFAR_SIDE = 32
CIFAR_CLASSES = 10

_NDARRAY_REDUCE = np.ndarray(0).__reduce_ex__(2)[0]  # numpy's _reconstruct helper
_FROMBUFFER_REDUCE = np.arange(1).__reduce_ex__(5)[0]  # numpy's _frombuffer helper
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    # Python 3 writes bytes as _codecs.encode(str, "latin1") under protocol 2
    ("_codecs", "encode"): codecs.encode,
    ("numpy.core.multiarray", "_reconstruct"): _NDARRAY_REDUCE,
    ("numpy._core.multiarray", "_reconstruct"): _NDARRAY_REDUCE,
    ("numpy.core.numeric", "_frombuffer"): _FROMBUFFER_REDUCE,
    ("numpy._core.numeric", "_frombuffer"): _FROMBUFFER_REDUCE,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class SafeUnpickler(pickle.Unpickler):
    """Unpickler that resolves only numpy's array-rebuilding helpers.

    Dicts, lists, bytes, strings and numbers need no global lookup (except
    ``_codecs.encode`` for bytes pickled by Python 3 with protocol 2); any other
    global (``os.system``, ``builtins.eval``...) raises :class:`DatasetError`.

    Parameters
    ----------
    file : binary file object
        The pickle stream.
    source : str
        Name of the file at fault, used in error messages.
    """

    def __init__(self, file: io.BufferedIOBase, source: str) -> None:
        super().__init__(file, encoding="bytes")
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        """Return an allowed global or refuse the pickle."""
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise DatasetError(
                f"{self.source} is not an official CIFAR-10 batch: it references "
                f"{module}.{name}, which is refused for safety; delete it and download "
                f"CIFAR-10 again"
            ) from None


def parse_batch(raw: bytes, source: str) -> ImageSet:
    """Decode one pickled CIFAR-10 batch.

    Parameters
    ----------
    raw : bytes
        Content of a batch file: a pickled dict with ``b'data'`` (``(N, 3072)``
        uint8, channel-major: 1024 red, 1024 green, 1024 blue values, each a
        row-major 32x32 plane) and ``b'labels'`` (N ints in 0..9).
    source : str
        Name of the file, for error messages.

    Returns
    -------
    ImageSet
        Images ``(N, 32, 32, 3)`` uint8 and labels ``(N,)`` int64.

    Raises
    ------
    DatasetError
        If the pickle is refused or unreadable, or its content is malformed.
    """

    def bad(what: str) -> DatasetError:
        return DatasetError(
            f"{source} is not a valid CIFAR-10 batch: {what}; delete it and download CIFAR-10 again"
        )

    try:
        batch = SafeUnpickler(io.BytesIO(raw), source).load()
    except DatasetError:
        raise
    except Exception as exc:  # a damaged pickle can raise almost anything
        raise bad(f"cannot unpickle it ({type(exc).__name__}: {exc})") from exc
    if not isinstance(batch, dict):
        raise bad(f"expected a dict, found {type(batch).__name__}")
    batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in batch or "labels" not in batch:
        raise bad(f"keys 'data' and 'labels' are required, found {sorted(map(str, batch))}")
    data = np.asarray(batch["data"])
    labels = np.asarray(batch["labels"])
    n_values = 3 * CIFAR_SIDE * CIFAR_SIDE
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != n_values:
        raise bad(f"data is {data.shape} {data.dtype}, expected (N, {n_values}) uint8")
    if labels.shape != (len(data),) or not np.issubdtype(labels.dtype, np.integer):
        raise bad(f"labels have shape {labels.shape}, expected ({len(data)},) integers")
    if labels.size and (labels.min() < 0 or labels.max() >= CIFAR_CLASSES):
        raise bad(f"labels outside 0..9 (min {labels.min()}, max {labels.max()})")
    images = data.reshape(-1, 3, CIFAR_SIDE, CIFAR_SIDE).transpose(0, 2, 3, 1)
    return ImageSet(np.ascontiguousarray(images), labels.astype(np.int64))


def _read_folder(folder: Path) -> dict[str, tuple[bytes, str]]:
    raws = {}
    for name in (*TRAIN_BATCHES, TEST_BATCH):
        path = folder / name
        if not path.is_file():
            raise DatasetError(
                f"{path} is missing from the extracted CIFAR-10 folder {folder}; extract "
                f"{ARCHIVE_NAME} again, or delete {folder} to read the archive next to it"
            )
        raws[name] = (path.read_bytes(), str(path))
    return raws


def _read_archive(archive: Path) -> dict[str, tuple[bytes, str]]:
    if archive.stat().st_size == CIFAR10_ARCHIVE_SIZE:
        verify_md5(archive, OFFICIAL_MD5["cifar-10"][ARCHIVE_NAME])
    wanted = {f"{BATCH_DIR}/{name}": name for name in (*TRAIN_BATCHES, TEST_BATCH)}
    raws = {}
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:  # one sequential pass over the gzip stream
                if member.name in wanted and member.isfile():
                    source = f"{archive}:{member.name}"
                    raws[wanted[member.name]] = (tar.extractfile(member).read(), source)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise DatasetError(
            f"{archive} is corrupt or truncated ({exc}); delete it and download it again"
        ) from exc
    missing = sorted(m for m, name in wanted.items() if name not in raws)
    if missing:
        raise DatasetError(
            f"{archive} lacks {', '.join(missing)}; it is not the official CIFAR-10 python "
            f"archive: delete it and download it again"
        )
    return raws


def load_cifar10(data_dir: Path) -> tuple[ImageSet, ImageSet]:
    """Load the official train and test splits of CIFAR-10.

    Parameters
    ----------
    data_dir : Path
        Root data folder; files are read from ``data_dir / 'cifar-10'``.

    Returns
    -------
    train, test : ImageSet
        Images ``(50000, 32, 32, 3)`` and ``(10000, 32, 32, 3)`` uint8 for the
        official files, labels 0..9.

    Raises
    ------
    DatasetError
        If neither layout exists, or a file is corrupt or refused.
    """
    root = data_dir / "cifar-10"
    folder, archive = root / BATCH_DIR, root / ARCHIVE_NAME
    if folder.is_dir():
        raws = _read_folder(folder)
    elif archive.is_file():
        raws = _read_archive(archive)
    else:
        raise missing_data_error("cifar-10", data_dir, [folder, archive])
    train_sets = [parse_batch(*raws[name]) for name in TRAIN_BATCHES]
    train = ImageSet(
        np.concatenate([s.images for s in train_sets]),
        np.concatenate([s.labels for s in train_sets]),
    )
    return train, parse_batch(*raws[TEST_BATCH])
