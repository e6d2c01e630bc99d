"""The ``cifar-10-jpeg`` loader: archives built here, checked against a PIL decode of the same files.

The real archive is read from ``$POSTHOC_VQ_SHARED_DATA`` or ``<repo>/../shared/datasets``; that
test fails (not skips) when it is absent.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from posthoc_vq import cli
from posthoc_vq.data import cifar_jpeg
from posthoc_vq.data.cifar_jpeg import ARCHIVE_NAME, CIFAR_JPEG_CLASSES, load_cifar10_jpeg
from posthoc_vq.errors import DatasetError
from posthoc_vq.io import sha256_file

PER_CLASS = {"train": 3, "test": 2}


def _jpeg(rng: np.random.Generator, quality: int = 75) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _build(root: Path, members: dict[str, bytes] | None = None, seed: int = 0) -> tuple[Path, dict[str, bytes]]:
    """Write ``root/cifar-10-jpeg/cifar-10-jpeg.tar.gz`` in the published layout (members in shuffled order)."""
    rng = np.random.default_rng(seed)
    if members is None:
        members = {
            f"{split}/{cls}/{i:04d}.jpg": _jpeg(rng)
            for split, n in PER_CLASS.items()
            for cls in CIFAR_JPEG_CLASSES
            for i in range(n)
        }
    archive = root / "cifar-10-jpeg" / ARCHIVE_NAME
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:gz") as tar:
        for name in rng.permutation(sorted(members)):  # the loader must sort, not trust archive order
            info = tarfile.TarInfo(str(name))
            info.size = len(members[name])
            tar.addfile(info, io.BytesIO(members[name]))
    return archive, members


def _pil(raw: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"))


@pytest.fixture
def built(tmp_path: Path) -> tuple[Path, Path, dict[str, bytes]]:
    archive, members = _build(tmp_path / "data")
    return tmp_path / "data", archive, members


def _load(data_dir: Path, archive: Path, cache: Path):
    return load_cifar10_jpeg(data_dir, sha256=sha256_file(archive), cache=cache, progress=False)


def test_loader_equals_pil_decode_of_the_same_files(built, tmp_path):
    data_dir, archive, members = built
    train, test = _load(data_dir, archive, tmp_path / "cache")
    for split, got in (("train", train), ("test", test)):
        names = sorted(n for n in members if n.startswith(f"{split}/"))
        assert len(got) == PER_CLASS[split] * 10
        np.testing.assert_array_equal(got.images, np.stack([_pil(members[n]) for n in names]))
        expected = [CIFAR_JPEG_CLASSES.index(n.split("/")[1]) for n in names]
        np.testing.assert_array_equal(got.labels, np.array(expected, dtype=np.int64))
        assert got.images.dtype == np.uint8 and got.labels.dtype == np.int64


def test_cache_is_written_once_and_reused_without_decoding(built, tmp_path, monkeypatch):
    data_dir, archive, _ = built
    first = _load(data_dir, archive, tmp_path / "cache")
    files = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert files == [f"cifar-10-jpeg-{sha256_file(archive)}.json", f"cifar-10-jpeg-{sha256_file(archive)}.safetensors"]

    def no_decode(*args, **kwargs):
        raise AssertionError("the cached load decoded the archive")

    monkeypatch.setattr(cifar_jpeg, "decode_archive", no_decode)
    second = _load(data_dir, archive, tmp_path / "cache")
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a.images, b.images)
        np.testing.assert_array_equal(a.labels, b.labels)


def test_damaged_cache_is_detected_and_decoded_again(built, tmp_path):
    data_dir, archive, _ = built
    cache = tmp_path / "cache"
    first = _load(data_dir, archive, cache)
    tensors = next(cache.glob("*.safetensors"))
    raw = bytearray(tensors.read_bytes())
    raw[-1] ^= 0xFF  # one pixel flipped: still a valid safetensors file, wrong checksum
    tensors.write_bytes(bytes(raw))
    with pytest.warns(UserWarning, match=str(tensors)):
        again = _load(data_dir, archive, cache)
    np.testing.assert_array_equal(again[0].images, first[0].images)
    np.testing.assert_array_equal(again[1].images, first[1].images)
    assert json.loads(next(cache.glob("*.json")).read_text())["sha256"] == sha256_file(tensors)


def test_wrong_checksum_is_refused_naming_the_file(built, tmp_path):
    data_dir, archive, _ = built
    with pytest.raises(DatasetError) as e:  # the default is the published archive's sha256
        load_cifar10_jpeg(data_dir, cache=tmp_path / "cache", progress=False)
    assert str(archive) in str(e.value) and cifar_jpeg.ARCHIVE_SHA256 in str(e.value)
    assert "fetch the published" in str(e.value)
    assert not (tmp_path / "cache").exists()


def test_missing_archive_names_the_path(tmp_path):
    with pytest.raises(DatasetError, match=str(tmp_path / "cifar-10-jpeg" / ARCHIVE_NAME)):
        load_cifar10_jpeg(tmp_path, cache=tmp_path / "cache", progress=False)


def test_truncated_archive_is_a_clear_error(built, tmp_path):
    data_dir, archive, _ = built
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(DatasetError, match="corrupt or truncated") as e:  # the checksum matches: the stream is at fault
        _load(data_dir, archive, tmp_path / "cache")
    assert str(archive) in str(e.value)


def test_corrupt_jpeg_member_is_named(tmp_path):
    rng = np.random.default_rng(1)
    members = {f"{s}/{c}/0000.jpg": _jpeg(rng) for s in ("train", "test") for c in CIFAR_JPEG_CLASSES}
    members["train/cat/0000.jpg"] = members["train/cat/0000.jpg"][:40]  # a truncated JPEG
    archive, _ = _build(tmp_path / "data", members)
    with pytest.raises(DatasetError, match="train/cat/0000.jpg") as e:
        _load(tmp_path / "data", archive, tmp_path / "cache")
    assert str(archive) in str(e.value)


@pytest.mark.parametrize(
    ("name", "what"),
    [("train/zebra/0000.jpg", "unknown class 'zebra'"), ("val/cat/0000.jpg", "does not fit the layout")],
)
def test_wrong_layout_is_named(tmp_path, name, what):
    rng = np.random.default_rng(2)
    members = {f"{s}/{c}/0000.jpg": _jpeg(rng) for s in ("train", "test") for c in CIFAR_JPEG_CLASSES}
    members[name] = _jpeg(rng)
    archive, _ = _build(tmp_path / "data", members)
    with pytest.raises(DatasetError, match=what) as e:
        _load(tmp_path / "data", archive, tmp_path / "cache")
    assert name in str(e.value)


@pytest.fixture(scope="module")
def shared_data(shared_datasets) -> Path:
    return shared_datasets(f"cifar-10-jpeg/{ARCHIVE_NAME}", what="cifar-10-jpeg")


def test_real_archive_acceptance_train_then_evaluate_all_test_images(shared_data, tmp_path, monkeypatch):
    monkeypatch.setenv(cifar_jpeg.CACHE_ENV_VAR, str(tmp_path / "cache"))  # one full decode, then cached
    run = tmp_path / "R"
    argv = ["train", "--preset", "cifar-10-jpeg", "--data-dir", str(shared_data), "--set", "data.max_train_images=512",
            "--set", "train.epochs=1", "--out", str(run), "--no-progress"]
    assert cli.main(argv) == 0
    assert json.loads((run / "config.json").read_text())["data"]["name"] == "cifar-10-jpeg"
    assert cli.main(["evaluate", str(run), "--data-dir", str(shared_data), "--metrics", "psnr"]) == 0
    result = json.loads((run / "eval" / "continuous-test.json").read_text())
    assert result["dataset"] == "cifar-10-jpeg" and result["split"] == "test"
    assert result["continuous"]["n_images"] == 10_000
