"""Tests of the split rules, the registry, digits, and real MNIST / Fashion-MNIST.

The real idx files are read from ``$POSTHOC_VQ_SHARED_DATA`` or
``<repo>/../shared/datasets``; the tests fail (not skip) when they are absent.
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from posthoc_vq.data import (
    DATASETS,
    OFFICIAL_URLS,
    DatasetSplits,
    ImageSet,
    load_dataset,
    resolve_data_dir,
)
from posthoc_vq.errors import DatasetError

MNIST_NAMES = ("mnist", "fashion-mnist")
# Mean pixel (0..255) of the 60000 official training images, from the literature
# (normalisation constants 0.1307 and 0.2860 x 255).
KNOWN_TRAIN_MEAN = {"mnist": 33.32, "fashion-mnist": 72.94}


@pytest.fixture(scope="module")
def shared_data(shared_datasets) -> Path:
    """Folder with the real mnist/ and fashion-mnist/ idx files."""
    return shared_datasets("mnist", "fashion-mnist", what="MNIST / Fashion-MNIST (the official *-ubyte.gz files)")


@pytest.fixture(scope="module")
def real_splits(shared_data: Path) -> dict[str, DatasetSplits]:
    return {name: load_dataset(name, shared_data) for name in MNIST_NAMES}


def _independent_parse(path: Path, offset: int) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=offset)


@pytest.mark.parametrize("name", MNIST_NAMES)
def test_real_mnist_family_shapes_and_labels(real_splits, name):
    s = real_splits[name]
    assert (len(s.train), len(s.val), len(s.test)) == (54000, 6000, 10000)
    assert s.train.images.shape == (54000, 28, 28, 1)
    assert s.test.images.shape == (10000, 28, 28, 1)
    assert (s.image_size, s.channels, s.num_classes) == (28, 1, 10)
    for part in (s.train, s.val, s.test):
        assert part.images.dtype == np.uint8 and part.labels.dtype == np.int64
        assert set(np.unique(part.labels)) == set(range(10))


@pytest.mark.parametrize("name", MNIST_NAMES)
def test_real_split_matches_independent_parse(real_splits, shared_data, name):
    s = real_splits[name]
    folder = shared_data / name
    train = _independent_parse(folder / "train-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28)
    labels = _independent_parse(folder / "train-labels-idx1-ubyte.gz", 8)
    test = _independent_parse(folder / "t10k-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28)
    assert abs(train.mean() - KNOWN_TRAIN_MEAN[name]) < 0.05
    val_idx = np.sort(np.random.default_rng(0).permutation(60000)[:6000])
    train_idx = np.setdiff1d(np.arange(60000), val_idx)
    np.testing.assert_array_equal(s.val.images[..., 0], train[val_idx])
    np.testing.assert_array_equal(s.val.labels, labels[val_idx])
    np.testing.assert_array_equal(s.train.images[..., 0], train[train_idx])
    np.testing.assert_array_equal(s.test.images[..., 0], test)
    loaded_mean = np.concatenate([s.train.images, s.val.images]).mean()
    assert loaded_mean == pytest.approx(train.mean(), abs=1e-9)


def test_real_split_is_deterministic_and_seeded(real_splits, shared_data):
    again = load_dataset("mnist", shared_data, split_seed=0)
    other = load_dataset("mnist", shared_data, split_seed=1, val_fraction=0.2)
    np.testing.assert_array_equal(again.val.images, real_splits["mnist"].val.images)
    assert (len(other.train), len(other.val)) == (48000, 12000)
    first = real_splits["mnist"].val.images[:100]
    assert not np.array_equal(other.val.images[:100], first)


def test_md5_mismatch_names_file(shared_data, tmp_path):
    src, dst = shared_data / "mnist", tmp_path / "mnist"
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).symlink_to(f)
    bad = dst / "t10k-labels-idx1-ubyte.gz"
    bad.unlink()
    shutil.copyfile(src / bad.name, bad)
    raw = bytearray(bad.read_bytes())
    raw[100] ^= 0xFF
    bad.write_bytes(bytes(raw))
    with pytest.raises(
        DatasetError, match=r"t10k-labels-idx1-ubyte\.gz is corrupt: its md5 is"
    ) as e:
        load_dataset("mnist", tmp_path)
    assert "ec29112dd5afa0611ce80d1b7f02629c" in str(e.value)
    assert "delete it and download it again" in str(e.value)


def test_official_md5s_match_shared_md5sums(shared_data):
    listed = dict(
        reversed(line.split()) for line in (shared_data / "MD5SUMS").read_text().splitlines()
    )
    for name in MNIST_NAMES:
        for url, file_name, md5 in OFFICIAL_URLS[name]:
            assert listed[f"{name}/{file_name}"] == md5
            assert url.endswith("/" + file_name)
    assert OFFICIAL_URLS["mnist"][0][0].startswith("https://ossci-datasets.s3.amazonaws.com/mnist/")


def test_missing_data_dir_says_how_to_download(tmp_path):
    with pytest.raises(DatasetError) as e:
        load_dataset("fashion-mnist", tmp_path / "nowhere")
    message = str(e.value)
    assert "posthoc-vq data download fashion-mnist" in message
    assert "--data-dir" in message and "$POSTHOC_VQ_DATA" in message
    assert str(tmp_path / "nowhere" / "fashion-mnist") in message


def test_missing_single_file_is_named(shared_data, tmp_path):
    (tmp_path / "mnist").mkdir()
    for f in (shared_data / "mnist").iterdir():
        if f.name != "train-labels-idx1-ubyte.gz":
            (tmp_path / "mnist" / f.name).symlink_to(f)
    with pytest.raises(DatasetError, match=r"missing \S+/mnist/train-labels-idx1-ubyte\.gz\. Run"):
        load_dataset("mnist", tmp_path)


def test_digits_sizes_values_and_split():
    s = load_dataset("digits")
    assert (len(s.train), len(s.val), len(s.test)) == (1294, 144, 359)
    assert (s.image_size, s.channels, s.num_classes) == (8, 1, 10)
    full = load_digits()
    expected = np.rint(full.images * 255 / 16).astype(np.uint8)
    test_idx = np.sort(np.random.default_rng(1).permutation(1797)[:359])
    rest = np.setdiff1d(np.arange(1797), test_idx)
    val_idx = rest[np.sort(np.random.default_rng(0).permutation(1438)[:144])]
    np.testing.assert_array_equal(s.test.images[..., 0], expected[test_idx])
    np.testing.assert_array_equal(s.val.images[..., 0], expected[val_idx])
    np.testing.assert_array_equal(s.val.labels, full.target[val_idx])
    everything = np.concatenate([s.train.images, s.val.images, s.test.images])
    assert everything.min() == 0 and everything.max() == 255
    assert set(np.unique(everything)) <= {round(k * 255 / 16) for k in range(17)}


def test_digits_other_seed_changes_split_not_sizes():
    a, b = load_dataset("digits", split_seed=0), load_dataset("digits", split_seed=5)
    assert (len(a.train), len(a.test)) == (len(b.train), len(b.test))
    assert not np.array_equal(a.test.labels, b.test.labels)


def test_to_tensor_layout_and_scale():
    images = np.zeros((2, 3, 3, 2), dtype=np.uint8)
    images[1, 0, 2, 1] = 255
    images[0, 2, 1, 0] = 51
    t = ImageSet(images, np.array([0, 1], dtype=np.int64)).to_tensor()
    assert t.shape == (2, 2, 3, 3) and t.dtype == torch.float32
    assert t[1, 1, 0, 2].item() == 1.0
    assert t[0, 0, 2, 1].item() == pytest.approx(0.2)
    assert t.sum().item() == pytest.approx(1.2)


def test_imageset_rejects_bad_arrays():
    with pytest.raises(ValueError, match="uint8"):
        ImageSet(np.zeros((2, 3, 3, 1), dtype=np.float32), np.zeros(2, dtype=np.int64))
    with pytest.raises(ValueError, match="int64"):
        ImageSet(np.zeros((2, 3, 3, 1), dtype=np.uint8), np.zeros(3, dtype=np.int64))


def test_split_lookup_and_unknown_split():
    s = load_dataset("digits")
    assert s.split("val") is s.val and s.split("test") is s.test
    with pytest.raises(DatasetError, match=r"unknown split 'dev'.*train, val, test"):
        s.split("dev")


def test_unknown_dataset_lists_names():
    with pytest.raises(DatasetError, match="unknown dataset 'svhn'") as e:
        load_dataset("svhn")
    assert all(name in str(e.value) for name in DATASETS)


def test_fixed_size_dataset_refuses_other_image_size():
    with pytest.raises(DatasetError, match="fixed 8x8 images but image_size=16"):
        load_dataset("digits", image_size=16)
    assert load_dataset("digits", image_size=8).image_size == 8


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5])
def test_invalid_val_fraction(fraction):
    with pytest.raises(DatasetError, match="val_fraction"):
        load_dataset("digits", val_fraction=fraction)


def test_resolve_data_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("POSTHOC_VQ_DATA", raising=False)
    assert resolve_data_dir() == tmp_path / "home" / ".cache" / "posthoc_vq"
    monkeypatch.setenv("POSTHOC_VQ_DATA", str(tmp_path / "env"))
    assert resolve_data_dir() == tmp_path / "env"
    assert resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_data_dir("~/x") == tmp_path / "home" / "x"


def test_max_train_images_keeps_a_seeded_subset_and_leaves_val_and_test():
    from posthoc_vq.config import DataConfig
    from posthoc_vq.data import load_config_dataset

    full = load_config_dataset(DataConfig(name="digits"))
    sub = load_config_dataset(DataConfig(name="digits", max_train_images=300))
    again = load_config_dataset(DataConfig(name="digits", max_train_images=300))
    other = load_config_dataset(DataConfig(name="digits", max_train_images=300, split_seed=1))
    assert len(sub.train) == 300 and np.array_equal(sub.train.images, again.train.images)
    assert not np.array_equal(sub.train.labels, other.train.labels) or not np.array_equal(sub.train.images, other.train.images)
    assert np.array_equal(sub.test.images, full.test.images) and np.array_equal(sub.val.images, full.val.images)
    rows = {r.tobytes() for r in full.train.images}
    assert all(r.tobytes() in rows for r in sub.train.images)  # a subset of the train split, never val or test
