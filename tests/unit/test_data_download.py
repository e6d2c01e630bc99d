"""Tests of :func:`posthoc_vq.data.download` against a local HTTP server."""

from __future__ import annotations

import functools
import gzip
import hashlib
import socket
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from posthoc_vq.data import download
from posthoc_vq.data.checksums import MNIST_FILES
from posthoc_vq.errors import DatasetError


def idx_gz(array: np.ndarray) -> bytes:
    """``array`` (uint8) as the bytes of a gzip idx file."""
    header = ((0x08 << 8) | array.ndim).to_bytes(4, "big")
    header += b"".join(d.to_bytes(4, "big") for d in array.shape)
    return gzip.compress(header + array.tobytes())


@pytest.fixture
def remote(tmp_path):
    """Serve small mnist files over HTTP; yield (base_url, {name: bytes}, request paths)."""
    served = tmp_path / "remote"
    served.mkdir()
    rng = np.random.default_rng(0)
    files = {
        name: idx_gz(rng.integers(0, 256, (3, 28, 28) if "images" in name else 3, dtype=np.uint8))
        for name in MNIST_FILES
    }
    for name, raw in files.items():
        (served / name).write_bytes(raw)
    (served / "short").mkdir()
    requests: list[str] = []

    class Handler(SimpleHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            if self.path.startswith("/short/"):  # announce more bytes than are sent
                self.send_response(200)
                self.send_header("Content-Length", "100000")
                self.end_headers()
                self.wfile.write(b"x" * 1000)
                return
            super().do_GET()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=served))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", files, requests
    server.shutdown()
    server.server_close()
    thread.join()


def md5s_of(files: dict[str, bytes]) -> dict[str, str]:
    return {name: hashlib.md5(raw).hexdigest() for name, raw in files.items()}


def test_download_writes_verified_files(remote, tmp_path):
    base_url, files, requests = remote
    paths = download(
        "mnist", tmp_path / "data", base_url=base_url, md5s=md5s_of(files), progress=False
    )
    folder = tmp_path / "data" / "mnist"
    assert paths == [folder / name for name in MNIST_FILES]
    for name, raw in files.items():
        assert (folder / name).read_bytes() == raw
    assert sorted(requests) == sorted(f"/{name}" for name in MNIST_FILES)
    assert not list(folder.glob("*.part"))


def test_second_download_is_skipped(remote, tmp_path):
    base_url, files, requests = remote
    download("mnist", tmp_path, base_url=base_url, md5s=md5s_of(files), progress=False)
    first = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "mnist").iterdir()}
    requests.clear()
    download("mnist", tmp_path, base_url=base_url, md5s=md5s_of(files), progress=True)
    assert requests == []
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "mnist").iterdir()} == first


def test_corrupt_existing_file_is_downloaded_again(remote, tmp_path):
    base_url, files, requests = remote
    (tmp_path / "mnist").mkdir()
    stale = tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz"
    stale.write_bytes(b"stale")
    download("mnist", tmp_path, base_url=base_url, md5s=md5s_of(files), progress=False)
    assert stale.read_bytes() == files["t10k-labels-idx1-ubyte.gz"]
    assert "/t10k-labels-idx1-ubyte.gz" in requests


def test_md5_mismatch_leaves_no_file(remote, tmp_path):
    base_url, files, _ = remote
    md5s = md5s_of(files)
    md5s["train-images-idx3-ubyte.gz"] = "0" * 32
    actual = hashlib.md5(files["train-images-idx3-ubyte.gz"]).hexdigest()
    with pytest.raises(DatasetError) as e:
        download("mnist", tmp_path, base_url=base_url, md5s=md5s, progress=False)
    message = str(e.value)
    assert f"{base_url}train-images-idx3-ubyte.gz is corrupt" in message
    assert f"md5 {actual}, expected {'0' * 32}" in message
    assert not (tmp_path / "mnist" / "train-images-idx3-ubyte.gz").exists()
    assert not list((tmp_path / "mnist").glob("*.part"))


def test_official_md5_is_required_without_override(remote, tmp_path):
    base_url, _, _ = remote
    with pytest.raises(DatasetError, match=r"expected f68b3c2dcbeaaa9fbdd348bbdeb94873"):
        download("mnist", tmp_path, base_url=base_url, progress=False)
    assert not list((tmp_path / "mnist").iterdir())


def test_refused_connection_says_offline(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed when the block ends: connections are refused
    with pytest.raises(DatasetError) as e:
        download(
            "fashion-mnist",
            tmp_path,
            base_url=f"http://127.0.0.1:{port}",
            progress=False,
            timeout=5,
        )
    message = str(e.value)
    assert f"could not download http://127.0.0.1:{port}/train-images-idx3-ubyte.gz" in message
    assert "offline" in message and str(tmp_path / "fashion-mnist") in message
    assert not list((tmp_path / "fashion-mnist").iterdir())


def test_http_error_is_reported(remote, tmp_path):
    base_url, _, _ = remote
    with pytest.raises(
        DatasetError,
        match=r"could not download \S+/missing/train-images"
        r"-idx3-ubyte\.gz \(HTTP 404 File not found\); this machine may be offline",
    ):
        download("mnist", tmp_path, base_url=base_url + "missing/", progress=False)


def test_truncated_transfer_leaves_no_file(remote, tmp_path):
    base_url, _, _ = remote
    with pytest.raises(DatasetError, match=r"could not download \S+/short/train-images"):
        download("mnist", tmp_path, base_url=base_url + "short", progress=False, timeout=5)
    assert not list((tmp_path / "mnist").iterdir())


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("celeba", r"CelebA cannot be downloaded automatically \(it is hosted on Google Drive\)"),
        ("digits", r"'digits' ships with scikit-learn and needs no download"),
        ("image-folder", r"'image-folder' is your own folder of images"),
        ("cifar-10-jpeg", r"'cifar-10-jpeg' is a JPEG re-encoding of CIFAR-10 with no official download URL; put cifar-10-jpeg.tar.gz"),
        ("svhn", r"cannot download unknown dataset 'svhn'; choose one of: mnist, fashion-mnist"),
    ],
)
def test_datasets_without_download(tmp_path, name, expected):
    with pytest.raises(DatasetError, match=expected):
        download(name, tmp_path)
    assert not list(tmp_path.iterdir())
