"""A user-supplied folder of images, one sub-folder per class.

Layout::

    <folder>/<class_a>/img001.png
    <folder>/<class_b>/photo.jpg ...

Class sub-folders are sorted by name and numbered 0..C-1. Files whose suffix is
one of ``IMAGE_EXTENSIONS`` (any case) directly inside a class folder are
images; other files and hidden folders are ignored. Images are converted to RGB,
centre-cropped and resized as in :mod:`posthoc_vq.data.imageops`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from posthoc_vq.data.imageops import IMAGE_EXTENSIONS, load_square_images
from posthoc_vq.data.splits import ImageSet
from posthoc_vq.errors import DatasetError

DEFAULT_FOLDER_SIZE = 64


def list_image_folder(folder: Path) -> tuple[list[Path], np.ndarray, list[str]]:
    """List the images and class labels of an image folder.

    Parameters
    ----------
    folder : Path
        Folder containing one sub-folder per class.

    Returns
    -------
    paths : list of Path
        ``N`` image files, grouped by class, sorted by name within a class.
    labels : np.ndarray
        Shape ``(N,)`` int64, the index of each image's class.
    classes : list of str
        Sorted class folder names.

    Raises
    ------
    DatasetError
        If the folder does not exist, has no class sub-folders, or a class
        sub-folder holds no images.
    """
    hint = (
        "pass --data-dir pointing at a folder with one sub-folder of images "
        f"({'/'.join(IMAGE_EXTENSIONS)}) per class"
    )
    if not folder.is_dir():
        raise DatasetError(f"image folder {folder} does not exist; {hint}")
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DatasetError(f"image folder {folder} has no class sub-folders; {hint}")
    paths: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        files = sorted(
            p
            for p in (folder / name).iterdir()
            if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
        )
        if not files:
            raise DatasetError(
                f"class folder {folder / name} holds no images; add images to it or remove it"
            )
        paths.extend(files)
        labels.extend([label] * len(files))
    return paths, np.array(labels, dtype=np.int64), classes


def load_image_folder(folder: Path, image_size: int | None = None) -> tuple[ImageSet, int]:
    """Load all images of an image folder.

    Parameters
    ----------
    folder : Path
        Folder containing one sub-folder per class.
    image_size : int or None
        Output side length (default 64).

    Returns
    -------
    images : ImageSet
        Images ``(N, image_size, image_size, 3)`` uint8 and labels ``(N,)`` int64.
    num_classes : int
        Number of class sub-folders.
    """
    size = DEFAULT_FOLDER_SIZE if image_size is None else image_size
    paths, labels, classes = list_image_folder(folder)
    images = load_square_images(paths, size, f"decoding {folder.name} at {size}px")
    return ImageSet(images, labels), len(classes)
