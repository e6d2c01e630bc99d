"""The dataset names and :func:`load_dataset`, which dispatches to the loaders."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

from posthoc_vq.data.celeba import load_celeba
from posthoc_vq.data.cifar import CIFAR_CLASSES, CIFAR_SIDE, load_cifar10
from posthoc_vq.data.cifar_jpeg import CIFAR_JPEG_CLASSES, CIFAR_JPEG_SIDE, load_cifar10_jpeg
from posthoc_vq.data.digits import DIGITS_CLASSES, load_sklearn_digits
from posthoc_vq.data.folder import load_image_folder
from posthoc_vq.data.idx import MNIST_CLASSES, MNIST_SIDE, load_mnist_family
from posthoc_vq.data.paths import resolve_data_dir
from posthoc_vq.data.photos import BSDS500_SHAPE, KODAK_SHAPE, PHOTO_DATASETS, load_photo_dataset
from posthoc_vq.data.splits import DatasetSplits, ImageSet, split_official, split_unofficial
from posthoc_vq.errors import DatasetError

if TYPE_CHECKING:
    from posthoc_vq.config import DataConfig

DATASETS: tuple[str, ...] = (
    "digits",
    "mnist",
    "fashion-mnist",
    "cifar-10",
    "cifar-10-jpeg",
    "celeba",
    "image-folder",
    *PHOTO_DATASETS,
)

_NATIVE_SIZE = {
    "digits": 8,
    "mnist": MNIST_SIDE,
    "fashion-mnist": MNIST_SIDE,
    "cifar-10": CIFAR_SIDE,
    "cifar-10-jpeg": CIFAR_JPEG_SIDE,
}


def _check_native_size(name: str, image_size: int | None) -> None:
    native = _NATIVE_SIZE[name]
    if image_size is not None and image_size != native:
        raise DatasetError(
            f"dataset {name!r} has fixed {native}x{native} images but image_size={image_size} "
            f"was requested; set image_size to {native} or leave it unset"
        )


def _check_no_resize(name: str, image_size: int | None) -> None:
    if image_size is not None:
        raise DatasetError(
            f"dataset {name!r} keeps its photographs at native resolution (bsds500 {BSDS500_SHAPE[0]}x{BSDS500_SHAPE[1]}, "
            f"kodak {KODAK_SHAPE[0]}x{KODAK_SHAPE[1]}, H x W after the /8 crop) and is never resized, but "
            f"image_size={image_size} was requested; leave image_size unset"
        )


def load_dataset(
    name: str,
    data_dir: str | os.PathLike | None = None,
    *,
    val_fraction: float = 0.1,
    split_seed: int = 0,
    image_size: int | None = None,
) -> DatasetSplits:
    """Load a dataset split into train, val and test.

    Parameters
    ----------
    name : str
        One of ``DATASETS``.
    data_dir : str or os.PathLike or None
        Root data folder holding ``<name>/`` (resolved by
        :func:`resolve_data_dir`); ignored by ``'digits'``. For
        ``'image-folder'`` it is the image folder itself and is required.
    val_fraction : float
        Fraction of the (official or remaining) train images used for val, in
        ``[0, 1)``; ignored by ``'celeba'``, which has an official val split, and
        by the photo datasets, whose splits are fixed.
    split_seed : int
        Seed of the val carve (the test carve of datasets without an official
        test split uses ``split_seed + 1``).
    image_size : int or None
        Output side length for ``'celeba'`` and ``'image-folder'`` (default
        64). The photo datasets are never resized and need None; the other
        datasets have a fixed size and accept only that size.

    Returns
    -------
    DatasetSplits
        Images ``(N, H, H, C)`` uint8 and labels ``(N,)`` int64 per split:
        digits 8x8x1, mnist and fashion-mnist 28x28x1, cifar-10 and cifar-10-jpeg 32x32x3,
        celeba and image-folder ``image_size`` x ``image_size`` x 3. The photo
        datasets (:mod:`posthoc_vq.data.photos`) are not square, ``(N, H, W, 3)``,
        labels all 0, ``num_classes`` 1: bsds500 train 450 / val 50 / test 0 at
        320x480, kodak train 0 / val 0 / test 24 at 512x768, bsds500-kodak the
        bsds500 train/val with the kodak test split.

    Raises
    ------
    DatasetError
        For an unknown name, missing or corrupt files, or an invalid option.
    """
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    if name == "image-folder":
        if data_dir is None:
            raise DatasetError(
                "dataset 'image-folder' needs a folder: pass --data-dir (data_dir) pointing at a "
                "folder with one sub-folder of images per class"
            )
        full, num_classes = load_image_folder(resolve_data_dir(data_dir), image_size)
        return split_unofficial(name, full, num_classes, val_fraction, split_seed)
    if name == "celeba":
        return load_celeba(resolve_data_dir(data_dir), image_size)
    if name in PHOTO_DATASETS:
        _check_no_resize(name, image_size)
        return load_photo_dataset(name, resolve_data_dir(data_dir))
    _check_native_size(name, image_size)
    if name == "digits":
        return split_unofficial(
            name, load_sklearn_digits(), DIGITS_CLASSES, val_fraction, split_seed
        )
    if name == "cifar-10":
        train, test = load_cifar10(resolve_data_dir(data_dir))
        return split_official(name, train, test, CIFAR_CLASSES, val_fraction, split_seed)
    if name == "cifar-10-jpeg":
        train, test = load_cifar10_jpeg(resolve_data_dir(data_dir))
        return split_official(name, train, test, len(CIFAR_JPEG_CLASSES), val_fraction, split_seed)
    train, test = load_mnist_family(name, resolve_data_dir(data_dir))
    return split_official(name, train, test, MNIST_CLASSES, val_fraction, split_seed)


def load_config_dataset(data: "DataConfig", data_dir: str | os.PathLike | None = None) -> DatasetSplits:
    """The splits a :class:`~posthoc_vq.config.DataConfig` describes (``data_dir`` overrides its folder).

    ``max_train_images`` keeps a seeded (``split_seed``) subset of the train split, in its
    original order; ``max_val_images`` / ``max_test_images`` keep the first images of val / test
    (a quick look, e.g. tests; results record the split sizes). ``crop`` [H, W] centre-crops every
    image (photo datasets; offset ``(side - crop) // 2``), never resizes.
    """
    splits = load_dataset(data.name, data_dir or data.data_dir, val_fraction=data.val_fraction, split_seed=data.split_seed, image_size=data.image_size)
    train, val, test = splits.train, splits.val, splits.test
    n = data.max_train_images
    if n is not None and n < len(train):
        keep = np.sort(np.random.default_rng(data.split_seed).choice(len(train), n, replace=False))
        train = ImageSet(train.images[keep], train.labels[keep])
    if data.max_val_images is not None:
        val = ImageSet(val.images[: data.max_val_images], val.labels[: data.max_val_images])
    if data.max_test_images is not None:
        test = ImageSet(test.images[: data.max_test_images], test.labels[: data.max_test_images])
    if data.crop is not None:
        train, val, test = (_centre_crop(s, data.crop, data.name, name) for s, name in ((train, "train"), (val, "val"), (test, "test")))
    return DatasetSplits(splits.name, train, val, test, splits.num_classes)


def _centre_crop(images: ImageSet, crop: list[int], dataset: str, split: str) -> ImageSet:
    h, w = crop
    H, W = images.images.shape[1:3]
    if h > H or w > W:
        raise DatasetError(f"data.crop {crop} is larger than the {dataset} {split} images ({H}x{W}); choose a crop of at most {H}x{W}")
    top, left = (H - h) // 2, (W - w) // 2
    return ImageSet(np.ascontiguousarray(images.images[:, top : top + h, left : left + w]), images.labels)
