"""Tests of the CelebA and image-folder loaders on tiny images written in tmp_path."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from posthoc_vq.data import load_dataset
from posthoc_vq.errors import DatasetError

RED, BLUE = (255, 0, 0), (0, 0, 255)
# Split of each of the 10 CelebA test images: 6 train, 2 val, 2 test, interleaved.
PARTITION = [0, 0, 1, 0, 2, 0, 0, 1, 2, 0]


def banded_image(width: int, height: int, centre, outside) -> Image.Image:
    """Make an image whose centred square has colour ``centre`` and the rest ``outside``."""
    pixels = np.empty((height, width, 3), dtype=np.uint8)
    pixels[:] = outside
    side = min(width, height)
    top, left = (height - side) // 2, (width - side) // 2
    pixels[top : top + side, left : left + side] = centre
    return Image.fromarray(pixels)


def make_celeba(root: Path, partition=PARTITION) -> Path:
    """Write tiny 32x64 JPEG faces; image ``i`` has green value ``20 * i``."""
    images = root / "celeba" / "img_align_celeba"
    images.mkdir(parents=True)
    lines = []
    for i, split in enumerate(partition, start=1):
        centre = (0, 20 * i, 255)
        image = banded_image(32, 64, centre, RED)
        image.save(images / f"{i:06d}.jpg", quality=95, subsampling=0)
        lines.append(f"{i:06d}.jpg {split}")
    partition_file = root / "celeba" / "list_eval_partition.txt"
    partition_file.write_text("\n".join(lines) + "\n")
    return partition_file


def green_ids(images: np.ndarray) -> list[int]:
    """Recover each image's number from its mean green value."""
    return [round(g / 20) for g in images[..., 1].mean(axis=(1, 2))]


def test_celeba_official_splits_crop_and_size(tmp_path):
    make_celeba(tmp_path)
    s = load_dataset("celeba", tmp_path, val_fraction=0.5)  # val_fraction is ignored
    assert (len(s.train), len(s.val), len(s.test)) == (6, 2, 2)
    assert s.train.images.shape == (6, 64, 64, 3) and s.train.images.dtype == np.uint8
    assert (s.image_size, s.channels, s.num_classes) == (64, 3, 1)
    assert all((part.labels == 0).all() for part in (s.train, s.val, s.test))
    assert green_ids(s.train.images) == [1, 2, 4, 6, 7, 10]
    assert green_ids(s.val.images) == [3, 8]
    assert green_ids(s.test.images) == [5, 9]
    # the red bands above and below the centred square are cropped away
    assert s.train.images[..., 0].max() < 60 and s.train.images[..., 2].min() > 200


def test_celeba_cache_reused_then_rebuilt(tmp_path):
    partition = make_celeba(tmp_path)
    first = load_dataset("celeba", tmp_path, image_size=16)
    assert first.train.images.shape == (6, 16, 16, 3)
    assert (tmp_path / "celeba" / "cache_16.npz").is_file()
    assert not list((tmp_path / "celeba").glob("*.tmp"))
    (tmp_path / "celeba" / "img_align_celeba" / "000001.jpg").unlink()
    cached = load_dataset("celeba", tmp_path, image_size=16)  # decoding would fail now
    np.testing.assert_array_equal(cached.train.images, first.train.images)
    partition.write_text(partition.read_text().replace("000001.jpg 0", "000001.jpg 2"))
    stat = partition.stat()
    os.utime(partition, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    with pytest.raises(DatasetError, match=r"image \S+/img_align_celeba/000001\.jpg is missing"):
        load_dataset("celeba", tmp_path, image_size=16)


def test_celeba_cache_follows_partition_change(tmp_path):
    partition = make_celeba(tmp_path)
    load_dataset("celeba", tmp_path, image_size=8)
    partition.write_text(partition.read_text().replace("000002.jpg 0", "000002.jpg 1"))
    stat = partition.stat()
    os.utime(partition, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    s = load_dataset("celeba", tmp_path, image_size=8)
    assert (len(s.train), len(s.val), len(s.test)) == (5, 3, 2)


def test_celeba_corrupt_cache_is_rebuilt(tmp_path):
    make_celeba(tmp_path)
    (tmp_path / "celeba" / "cache_64.npz").write_bytes(b"garbage")
    s = load_dataset("celeba", tmp_path)
    assert len(s.train) == 6
    with np.load(tmp_path / "celeba" / "cache_64.npz") as npz:
        assert npz["train"].shape == (6, 64, 64, 3)


def test_celeba_missing_explains_manual_download(tmp_path):
    with pytest.raises(DatasetError) as e:
        load_dataset("celeba", tmp_path)
    message = str(e.value)
    assert str(tmp_path / "celeba" / "img_align_celeba") in message
    assert "Google Drive" in message and "by hand" in message and "--data-dir" in message


def test_celeba_bad_partition_line(tmp_path):
    partition = make_celeba(tmp_path)
    partition.write_text("000001.jpg 0\n000002.jpg train\n")
    with pytest.raises(
        DatasetError, match=r"list_eval_partition\.txt line 2 is '000002\.jpg train'"
    ):
        load_dataset("celeba", tmp_path)


def test_celeba_undecodable_image(tmp_path):
    make_celeba(tmp_path)
    (tmp_path / "celeba" / "img_align_celeba" / "000004.jpg").write_text("not a jpeg")
    with pytest.raises(DatasetError, match=r"image \S+000004\.jpg cannot be decoded"):
        load_dataset("celeba", tmp_path)


# --- image-folder -----------------------------------------------------------

COLOURS = {"b_cat": (0, 255, 0), "a_dog": (255, 0, 0), "c_fox": (0, 0, 255)}


def make_folder(root: Path, per_class: int = 5) -> Path:
    """Three classes of solid-colour images in mixed formats, modes and sizes."""
    formats = [("png", "RGB"), ("jpg", "RGB"), ("bmp", "RGB"), ("png", "RGBA"), ("webp", "RGB")]
    for name, colour in COLOURS.items():
        (root / name).mkdir(parents=True)
        (root / name / "notes.txt").write_text("ignored")
        for i in range(per_class):
            ext, mode = formats[i % len(formats)]
            image = Image.new(mode, (12 + i, 9), colour)
            image.save(root / name / f"{i}.{ext.upper() if i == 2 else ext}")
    return root


def test_image_folder_labels_split_and_size(tmp_path):
    folder = make_folder(tmp_path / "pets")
    s = load_dataset("image-folder", folder, image_size=10)
    assert (len(s.train), len(s.val), len(s.test)) == (11, 1, 3)
    assert s.train.images.shape == (11, 10, 10, 3) and s.num_classes == 3
    for part in (s.train, s.val, s.test):
        # labels follow sorted folder names: a_dog red (0), b_cat green (1), c_fox blue (2)
        dominant = part.images.reshape(len(part), -1, 3).mean(axis=1).argmax(axis=1)
        np.testing.assert_array_equal(dominant, part.labels)
    all_labels = np.concatenate([s.train.labels, s.val.labels, s.test.labels])
    assert np.bincount(all_labels).tolist() == [5, 5, 5]


def test_image_folder_default_size_is_64(tmp_path):
    s = load_dataset("image-folder", make_folder(tmp_path / "f", per_class=2))
    assert s.image_size == 64 and s.channels == 3


def test_image_folder_empty(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"image folder \S+/empty has no class sub-folders"):
        load_dataset("image-folder", tmp_path / "empty")


def test_image_folder_missing(tmp_path):
    with pytest.raises(DatasetError, match=r"image folder \S+/absent does not exist"):
        load_dataset("image-folder", tmp_path / "absent")


def test_image_folder_class_without_images(tmp_path):
    folder = make_folder(tmp_path / "f", per_class=2)
    (folder / "d_empty").mkdir()
    (folder / "d_empty" / "readme.md").write_text("no images")
    with pytest.raises(DatasetError, match=r"class folder \S+/d_empty holds no images"):
        load_dataset("image-folder", folder)


def test_image_folder_needs_explicit_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("POSTHOC_VQ_DATA", str(tmp_path))
    with pytest.raises(DatasetError, match="'image-folder' needs a folder: pass --data-dir"):
        load_dataset("image-folder")
