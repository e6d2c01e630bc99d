"""Image containers and the deterministic train/val/test split rules.

Every loader produces :class:`ImageSet` objects; :func:`split_official` and
:func:`split_unofficial` turn them into a :class:`DatasetSplits`.

Split rules
-----------
* Datasets with an official test split (MNIST, Fashion-MNIST, CIFAR-10): the
  official test split is the test split, and the val split is carved out of the
  official train split.
* Datasets without one (digits, image-folder): the test split (20 %) is carved
  first with seed ``split_seed + 1``, then the val split from the rest.
* A carve of ``k`` out of ``n`` images takes the first ``k`` entries of
  ``np.random.default_rng(seed).permutation(n)``, with
  ``k = round(fraction * n)`` (Python's ``round``, ties to even). Selected
  indices are sorted, so each split keeps the original order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from posthoc_vq.errors import DatasetError

SPLIT_NAMES: tuple[str, ...] = ("train", "val", "test")
TEST_FRACTION = 0.2


@dataclass(frozen=True)
class ImageSet:
    """A set of images with integer labels.

    Attributes
    ----------
    images : np.ndarray
        Shape ``(N, H, W, C)``, dtype ``uint8``, values 0..255.
    labels : np.ndarray
        Shape ``(N,)``, dtype ``int64``.
    """

    images: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        """Check shapes and dtypes (a mismatch is a bug, hence ValueError)."""
        if self.images.ndim != 4 or self.images.dtype != np.uint8:
            raise ValueError(
                f"images must be (N, H, W, C) uint8, got {self.images.shape} {self.images.dtype}"
            )
        if self.labels.shape != (self.images.shape[0],) or self.labels.dtype != np.int64:
            raise ValueError(
                f"labels must be ({self.images.shape[0]},) int64, "
                f"got {self.labels.shape} {self.labels.dtype}"
            )

    def __len__(self) -> int:
        """Return the number of images ``N``."""
        return int(self.images.shape[0])

    def to_tensor(self) -> torch.Tensor:
        """Return the images as a float tensor.

        Returns
        -------
        torch.Tensor
            Shape ``(N, C, H, W)``, dtype ``float32``, values ``x / 255`` in [0, 1].
        """
        x = torch.from_numpy(np.ascontiguousarray(self.images))
        return x.permute(0, 3, 1, 2).to(torch.float32).div_(255.0).contiguous()


@dataclass(frozen=True)
class DatasetSplits:
    """The train, val and test splits of one dataset.

    Attributes
    ----------
    name : str
        Dataset name, one of ``DATASETS``.
    train, val, test : ImageSet
        The three splits; all share the same ``(H, W, C)`` with ``H == W``.
    num_classes : int
        Number of label values; labels lie in ``0..num_classes-1``.
    """

    name: str
    train: ImageSet
    val: ImageSet
    test: ImageSet
    num_classes: int

    @property
    def image_size(self) -> int:
        """Side length ``H`` (= ``W``) of the square images."""
        return int(self.train.images.shape[1])

    @property
    def channels(self) -> int:
        """Number of channels ``C`` (1 for grey, 3 for RGB)."""
        return int(self.train.images.shape[3])

    def split(self, name: str) -> ImageSet:
        """Return the split called ``name``.

        Parameters
        ----------
        name : str
            ``'train'``, ``'val'`` or ``'test'``.

        Returns
        -------
        ImageSet
            The requested split.

        Raises
        ------
        DatasetError
            If ``name`` is not a split name.
        """
        if name not in SPLIT_NAMES:
            raise DatasetError(
                f"unknown split {name!r} of dataset {self.name!r}; "
                f"use one of: {', '.join(SPLIT_NAMES)}"
            )
        return getattr(self, name)


def carve(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split ``range(n)`` into a kept part and a carved-out part.

    Parameters
    ----------
    n : int
        Number of items.
    fraction : float
        Fraction to carve out, in ``[0, 1)``; ``round(fraction * n)`` items.
    seed : int
        Seed of ``np.random.default_rng`` whose permutation picks the items.

    Returns
    -------
    kept, carved : np.ndarray
        Sorted ``int64`` index arrays of shapes ``(n - k,)`` and ``(k,)``.
    """
    if not 0.0 <= fraction < 1.0:
        raise DatasetError(f"split fraction must be in [0, 1), got {fraction}; fix val_fraction")
    k = round(fraction * n)
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[k:]), np.sort(perm[:k])


def take(images: ImageSet, idx: np.ndarray) -> ImageSet:
    """Return the images at indices ``idx`` (shape ``(k,)``) as a new ``ImageSet``."""
    return ImageSet(images.images[idx], images.labels[idx])


def split_official(
    name: str, train: ImageSet, test: ImageSet, num_classes: int, val_fraction: float, seed: int
) -> DatasetSplits:
    """Carve val from the official train split; the official test split stays test.

    Parameters
    ----------
    name : str
        Dataset name.
    train, test : ImageSet
        Official train and test splits.
    num_classes : int
        Number of classes.
    val_fraction : float
        Fraction of the official train split that becomes val.
    seed : int
        Seed of the val carve.

    Returns
    -------
    DatasetSplits
    """
    kept, carved = carve(len(train), val_fraction, seed)
    return DatasetSplits(name, take(train, kept), take(train, carved), test, num_classes)


def split_unofficial(
    name: str, full: ImageSet, num_classes: int, val_fraction: float, seed: int
) -> DatasetSplits:
    """Carve test (20 %, seed ``seed + 1``), then val from the rest (seed ``seed``).

    Parameters
    ----------
    name : str
        Dataset name.
    full : ImageSet
        All images of a dataset that has no official split.
    num_classes : int
        Number of classes.
    val_fraction : float
        Fraction of the non-test images that becomes val.
    seed : int
        ``split_seed``; the test carve uses ``seed + 1``.

    Returns
    -------
    DatasetSplits
    """
    rest_idx, test_idx = carve(len(full), TEST_FRACTION, seed + 1)
    rest = take(full, rest_idx)
    return split_official(name, rest, take(full, test_idx), num_classes, val_fraction, seed)
