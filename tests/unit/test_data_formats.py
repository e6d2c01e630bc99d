"""Tests of the idx (MNIST family) and CIFAR-10 readers on small files in the official formats."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest

from posthoc_vq.data import load_dataset
from posthoc_vq.data.checksums import CIFAR10_ARCHIVE_SIZE, MNIST_FILES, OFFICIAL_MD5
from posthoc_vq.data.cifar import parse_batch
from posthoc_vq.data.idx import read_idx
from posthoc_vq.errors import DatasetError


def write_idx(path: Path, array: np.ndarray, magic: int | None = None) -> Path:
    """Write ``array`` (uint8) as a gzip idx file; ``magic`` overrides the header's."""
    magic = (0x08 << 8) | array.ndim if magic is None else magic
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))
    return path


def make_small_mnist(root: Path, n_train: int, n_test: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Write the four mnist files with random content; return their arrays by file name."""
    rng = np.random.default_rng(seed)
    arrays = {
        MNIST_FILES[0]: rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        MNIST_FILES[1]: rng.integers(0, 10, n_train, dtype=np.uint8),
        MNIST_FILES[2]: rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        MNIST_FILES[3]: rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    (root / "mnist").mkdir(parents=True)
    for name, array in arrays.items():
        write_idx(root / "mnist" / name, array)
    return arrays


def trust_files(monkeypatch, folder: Path) -> None:
    """Make the files in ``folder`` pass the official md5 check."""
    for path in folder.iterdir():
        md5 = hashlib.md5(path.read_bytes()).hexdigest()
        monkeypatch.setitem(OFFICIAL_MD5["mnist"], path.name, md5)


def test_read_idx_round_trip(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    out = read_idx(write_idx(tmp_path / "a-idx3-ubyte.gz", array), 3)
    np.testing.assert_array_equal(out, array)


def test_read_idx_truncated_gzip(tmp_path):
    good = write_idx(tmp_path / "good.gz", np.ones((50, 28, 28), dtype=np.uint8))
    bad = tmp_path / "train-images-idx3-ubyte.gz"
    bad.write_bytes(good.read_bytes()[:-20])
    with pytest.raises(DatasetError, match=r"train-images-idx3-ubyte\.gz is corrupt or truncated"):
        read_idx(bad, 3)


def test_read_idx_not_gzip(tmp_path):
    bad = tmp_path / "t10k-labels-idx1-ubyte.gz"
    bad.write_bytes(b"<html>not found</html>")
    with pytest.raises(DatasetError, match=r"t10k-labels-idx1-ubyte\.gz is corrupt or truncated"):
        read_idx(bad, 1)


def test_read_idx_wrong_magic(tmp_path):
    path = write_idx(tmp_path / "x-idx3-ubyte.gz", np.zeros((2, 2, 2), np.uint8), magic=0x0801)
    with pytest.raises(
        DatasetError,
        match=r"x-idx3-ubyte\.gz is not a valid idx file: magic number 0x00000801, "
        r"expected 0x00000803; delete it and download it again",
    ):
        read_idx(path, 3)


def test_read_idx_header_disagrees_with_size(tmp_path):
    header = (0x0803).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in (5, 28, 28))
    path = tmp_path / "y-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(header + bytes(4 * 28 * 28)))
    with pytest.raises(
        DatasetError,
        match=r"y-idx3-ubyte\.gz is not a valid idx file: header declares shape "
        r"\(5, 28, 28\) \(3936 bytes with header\) but the file holds 3152 bytes",
    ):
        read_idx(path, 3)


def test_small_mnist_through_load_dataset(monkeypatch, tmp_path):
    arrays = make_small_mnist(tmp_path, n_train=25, n_test=7)
    trust_files(monkeypatch, tmp_path / "mnist")
    s = load_dataset("mnist", tmp_path, val_fraction=0.2, split_seed=3)
    assert (len(s.train), len(s.val), len(s.test)) == (20, 5, 7)
    val_idx = np.sort(np.random.default_rng(3).permutation(25)[:5])
    np.testing.assert_array_equal(s.val.images[..., 0], arrays[MNIST_FILES[0]][val_idx])
    np.testing.assert_array_equal(s.test.labels, arrays[MNIST_FILES[3]].astype(np.int64))


def test_mnist_label_count_mismatch(monkeypatch, tmp_path):
    make_small_mnist(tmp_path, n_train=6, n_test=4)
    write_idx(tmp_path / "mnist" / MNIST_FILES[3], np.zeros(3, dtype=np.uint8))
    trust_files(monkeypatch, tmp_path / "mnist")
    with pytest.raises(DatasetError, match=r"t10k-labels-idx1-ubyte\.gz .*3 labels for 4 images"):
        load_dataset("mnist", tmp_path)


def test_mnist_label_out_of_range(monkeypatch, tmp_path):
    make_small_mnist(tmp_path, n_train=6, n_test=4)
    write_idx(tmp_path / "mnist" / MNIST_FILES[1], np.full(6, 12, dtype=np.uint8))
    trust_files(monkeypatch, tmp_path / "mnist")
    with pytest.raises(
        DatasetError, match=r"train-labels-idx1-ubyte\.gz .*label 12 is not in 0\.\.9"
    ):
        load_dataset("mnist", tmp_path)


# --- CIFAR-10 ---------------------------------------------------------------

BATCHES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def batch_bytes(images: np.ndarray, labels: np.ndarray, protocol: int = 2) -> bytes:
    """Pickle (N, 32, 32, 3) images the way the official python batches store them."""
    data = images.transpose(0, 3, 1, 2).reshape(len(images), 3072)
    batch = {
        b"batch_label": b"testing batch 1 of 1",
        b"labels": [int(x) for x in labels],
        b"data": data,
        b"filenames": [b"img_%d.png" % i for i in range(len(images))],
    }
    return pickle.dumps(batch, protocol=protocol)


def make_cifar(
    rng: np.random.Generator, per_batch: int
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {
        name: (
            rng.integers(0, 256, (per_batch, 32, 32, 3), dtype=np.uint8),
            rng.integers(0, 10, per_batch),
        )
        for name in BATCHES
    }


def write_cifar_folder(root: Path, batches) -> None:
    folder = root / "cifar-10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name, (images, labels) in batches.items():
        (folder / name).write_bytes(batch_bytes(images, labels))


def write_cifar_archive(root: Path, members: dict[str, bytes]) -> Path:
    (root / "cifar-10").mkdir(parents=True)
    archive = root / "cifar-10" / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, raw in members.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return archive


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar_pixel_layout(protocol):
    image = np.zeros((1, 32, 32, 3), dtype=np.uint8)
    image[..., 0], image[..., 1], image[..., 2] = 1, 2, 3
    image[0, 0, 5, 0] = 200  # row 0, column 5, red
    image[0, 7, 3, 2] = 250  # row 7, column 3, blue
    raw = batch_bytes(image, np.array([4]), protocol)
    data = pickle.loads(raw, encoding="bytes")[b"data"][0]
    assert data[5] == 200 and data[2048 + 7 * 32 + 3] == 250  # channel-major on disk
    out = parse_batch(raw, "batch")
    assert out.images.shape == (1, 32, 32, 3) and out.labels.tolist() == [4]
    assert out.images[0, 0, 5].tolist() == [200, 2, 3]
    assert out.images[0, 5, 0].tolist() == [1, 2, 3]
    assert out.images[0, 7, 3].tolist() == [1, 2, 250]


def test_cifar_folder_and_archive_agree(tmp_path):
    batches = make_cifar(np.random.default_rng(0), per_batch=8)
    write_cifar_folder(tmp_path / "a", batches)
    write_cifar_archive(tmp_path / "b", {n: batch_bytes(*batches[n]) for n in reversed(BATCHES)})
    a = load_dataset("cifar-10", tmp_path / "a", val_fraction=0.25)
    b = load_dataset("cifar-10", tmp_path / "b", val_fraction=0.25)
    assert (len(a.train), len(a.val), len(a.test)) == (30, 10, 8)
    assert (a.image_size, a.channels, a.num_classes) == (32, 3, 10)
    official_train = np.concatenate([batches[n][0] for n in BATCHES[:5]])
    train_idx = np.sort(np.random.default_rng(0).permutation(40)[10:])
    np.testing.assert_array_equal(a.train.images, official_train[train_idx])
    np.testing.assert_array_equal(a.test.images, batches["test_batch"][0])
    for part in ("train", "val", "test"):
        np.testing.assert_array_equal(a.split(part).images, b.split(part).images)
        np.testing.assert_array_equal(a.split(part).labels, b.split(part).labels)


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_cifar_malicious_pickle_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    batches = make_cifar(np.random.default_rng(1), per_batch=2)
    write_cifar_folder(tmp_path, batches)
    evil = tmp_path / "cifar-10" / "cifar-10-batches-py" / "data_batch_3"
    evil.write_bytes(pickle.dumps({b"data": _Exploit(), b"labels": [0]}, protocol=2))
    with pytest.raises(
        DatasetError,
        match=r"data_batch_3 is not an official CIFAR-10 batch: "
        r"it references posix\.system, which is refused",
    ):
        load_dataset("cifar-10", tmp_path)
    assert not (tmp_path / "pwned").exists()


def test_cifar_malformed_batch(tmp_path):
    raw = pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, protocol=2)
    with pytest.raises(
        DatasetError,
        match=r"test_batch is not a valid CIFAR-10 batch: data is "
        r"\(2, 100\) uint8, expected \(N, 3072\) uint8",
    ):
        parse_batch(raw, "test_batch")


def test_cifar_archive_missing_member(tmp_path):
    batches = make_cifar(np.random.default_rng(2), per_batch=1)
    archive = write_cifar_archive(
        tmp_path, {n: batch_bytes(*batches[n]) for n in BATCHES if n != "data_batch_4"}
    )
    with pytest.raises(
        DatasetError,
        match=r"cifar-10-python\.tar\.gz lacks "
        r"cifar-10-batches-py/data_batch_4",
    ):
        load_dataset("cifar-10", tmp_path)
    assert archive.is_file()


def test_cifar_truncated_archive(tmp_path):
    batches = make_cifar(np.random.default_rng(3), per_batch=20)
    archive = write_cifar_archive(tmp_path, {n: batch_bytes(*batches[n]) for n in BATCHES})
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(DatasetError, match=r"cifar-10-python\.tar\.gz is corrupt or truncated"):
        load_dataset("cifar-10", tmp_path)


def test_cifar_official_size_archive_gets_md5_check(tmp_path):
    (tmp_path / "cifar-10").mkdir()
    archive = tmp_path / "cifar-10" / "cifar-10-python.tar.gz"
    with open(archive, "wb") as f:
        f.truncate(CIFAR10_ARCHIVE_SIZE)  # sparse file of the official size
    with pytest.raises(
        DatasetError,
        match=r"cifar-10-python\.tar\.gz is corrupt: its md5 is "
        r"[0-9a-f]{32} but the official file has c58f30108f718f92721af3b95e74349a",
    ):
        load_dataset("cifar-10", tmp_path)


def test_cifar_missing_names_both_layouts(tmp_path):
    with pytest.raises(DatasetError) as e:
        load_dataset("cifar-10", tmp_path)
    message = str(e.value)
    assert "cifar-10-batches-py" in message and "cifar-10-python.tar.gz" in message
    assert "posthoc-vq data download cifar-10" in message and "--data-dir" in message
