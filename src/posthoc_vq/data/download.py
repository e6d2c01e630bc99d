"""Downloading the datasets that have an official, scriptable source.

Files are streamed to ``<final name>.part`` next to their destination, their
MD5 is checked, and only then are they renamed to the final name, so a final
name never holds a partial or corrupt file. A file already present with the
right MD5 is not downloaded again. Only :mod:`urllib` is used.
"""

from __future__ import annotations

import http.client
import os
import ssl
import urllib.error
import urllib.request
from pathlib import Path

from posthoc_vq.data.photos import PHOTO_NO_DOWNLOAD
from posthoc_vq.data.celeba import MANUAL_DOWNLOAD
from posthoc_vq.data.checksums import MNIST_FILES, OFFICIAL_MD5, md5_file
from posthoc_vq.data.paths import resolve_data_dir
from posthoc_vq.data.progress import make_progress
from posthoc_vq.errors import DatasetError

_BASE_URLS = {
    "mnist": "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "fashion-mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
}

#: dataset name -> [(url, file name relative to ``<data_dir>/<name>/``, official md5)].
OFFICIAL_URLS: dict[str, list[tuple[str, str, str]]] = {
    **{
        name: [(base + f, f, OFFICIAL_MD5[name][f]) for f in MNIST_FILES]
        for name, base in _BASE_URLS.items()
    },
    "cifar-10": [
        (
            "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
            "cifar-10-python.tar.gz",
            OFFICIAL_MD5["cifar-10"]["cifar-10-python.tar.gz"],
        )
    ],
}

_NO_DOWNLOAD = {
    "digits": "dataset 'digits' ships with scikit-learn and needs no download",
    "image-folder": (
        "dataset 'image-folder' is your own folder of images and cannot be downloaded; "
        "pass --data-dir pointing at a folder with one sub-folder of images per class"
    ),
    "cifar-10-jpeg": (
        "dataset 'cifar-10-jpeg' is a JPEG re-encoding of CIFAR-10 with no official download URL; "
        "put cifar-10-jpeg.tar.gz (train/<class>/*.jpg, test/<class>/*.jpg) in DATA_DIR/cifar-10-jpeg/ and pass --data-dir DATA_DIR"
    ),
    **PHOTO_NO_DOWNLOAD,
}

_CHUNK = 1 << 16
_NETWORK_ERRORS = (
    urllib.error.URLError,
    http.client.HTTPException,
    TimeoutError,
    ConnectionError,
    ssl.SSLError,
)


def _fetch(url: str, part: Path, timeout: float, progress: bool) -> None:
    """Stream ``url`` into ``part``; network errors propagate."""
    with urllib.request.urlopen(url, timeout=timeout) as response, open(part, "wb") as out:
        length = response.headers.get("Content-Length")
        total = int(length) if length is not None else None
        received = 0
        with make_progress(enabled=progress, transfer=True) as bar:
            task = bar.add_task(Path(url).name, total=total)
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                received += len(chunk)
                bar.advance(task, len(chunk))
    if total is not None and received != total:
        raise http.client.IncompleteRead(b"", total - received)


def download(
    name: str,
    data_dir: str | os.PathLike | None = None,
    *,
    base_url: str | None = None,
    timeout: float = 30.0,
    progress: bool = True,
    md5s: dict[str, str] | None = None,
) -> list[Path]:
    """Download the files of a dataset into ``<data_dir>/<name>/``.

    Parameters
    ----------
    name : str
        ``'mnist'``, ``'fashion-mnist'`` or ``'cifar-10'``.
    data_dir : str or os.PathLike or None
        Root data folder, resolved by :func:`resolve_data_dir`.
    base_url : str or None
        Replaces the directory part of each official URL (the file name is
        kept), for mirrors and tests.
    timeout : float
        Socket timeout in seconds.
    progress : bool
        Show a progress bar per file.
    md5s : dict of str to str or None
        MD5 overrides keyed by file name (``OFFICIAL_URLS`` second field); files
        not in it must match their official MD5.

    Returns
    -------
    list of Path
        Paths of the dataset's files, all present with the expected MD5.

    Raises
    ------
    DatasetError
        For a dataset without a download, a network failure (the machine may
        be offline) or an MD5 mismatch.
    """
    if name == "celeba":
        root = resolve_data_dir(data_dir) / "celeba"
        raise DatasetError(MANUAL_DOWNLOAD.format(root=root))
    if name in _NO_DOWNLOAD:
        raise DatasetError(_NO_DOWNLOAD[name])
    if name not in OFFICIAL_URLS:
        raise DatasetError(
            f"cannot download unknown dataset {name!r}; choose one of: {', '.join(OFFICIAL_URLS)}"
        )
    data_dir = resolve_data_dir(data_dir)
    folder = data_dir / name
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatasetError(
            f"cannot create {folder} ({exc}); pass --data-dir to a writable folder"
        ) from exc
    paths = []
    for official_url, file_name, official_md5 in OFFICIAL_URLS[name]:
        url = official_url if base_url is None else f"{base_url.rstrip('/')}/{file_name}"
        expected = (md5s or {}).get(file_name, official_md5)
        target = folder / file_name
        if not (target.is_file() and md5_file(target) == expected):
            _download_file(url, target, expected, timeout, progress, data_dir, name)
        paths.append(target)
    return paths


def _download_file(
    url: str, target: Path, expected: str, timeout: float, progress: bool, data_dir: Path, name: str
) -> None:
    """Download ``url`` to ``target`` through ``target.part``, checking its MD5."""
    part = target.with_name(target.name + ".part")
    try:
        try:
            _fetch(url, part, timeout, progress)
        except _NETWORK_ERRORS as exc:
            if isinstance(exc, urllib.error.HTTPError):
                reason = f"HTTP {exc.code} {exc.reason}"
            else:
                reason = getattr(exc, "reason", None) or exc
            raise DatasetError(
                f"could not download {url} ({reason}); this machine may be offline: fetch the "
                f"files by hand into {data_dir / name}/ or pass --data-dir to a folder that "
                f"has them"
            ) from exc
        except OSError as exc:
            raise DatasetError(
                f"cannot write {part} ({exc}); free some disk space or pass --data-dir to a "
                f"writable folder"
            ) from exc
        actual = md5_file(part)
        if actual != expected:
            raise DatasetError(
                f"download of {url} is corrupt: md5 {actual}, expected {expected}; the partial "
                f"file was deleted, try again later or fetch {target.name} by hand into "
                f"{target.parent}/"
            )
        os.replace(part, target)
    finally:
        part.unlink(missing_ok=True)
