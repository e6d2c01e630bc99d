"""Decoding image files into square RGB arrays (used by CelebA and image-folder).

Each image is converted to RGB, centre-cropped to a square whose side is the
shorter side of the image, then resized to ``size x size`` with Pillow's
``BICUBIC`` filter (Pillow widens the filter support when shrinking, so this
is antialiased).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from posthoc_vq.data.progress import make_progress
from posthoc_vq.errors import DatasetError

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def center_crop_resize(image: Image.Image, size: int) -> np.ndarray:
    """Centre-crop an image to a square and resize it.

    Parameters
    ----------
    image : PIL.Image.Image
        Any mode; it is converted to RGB.
    size : int
        Output side length.

    Returns
    -------
    np.ndarray
        Shape ``(size, size, 3)``, dtype ``uint8``.
    """
    image = image.convert("RGB")
    w, h = image.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    square = image.crop((left, top, left + side, top + side))
    return np.asarray(square.resize((size, size), Image.Resampling.BICUBIC), dtype=np.uint8)


def load_square_image(path: Path, size: int) -> np.ndarray:
    """Read one image file with :func:`center_crop_resize`.

    Parameters
    ----------
    path : Path
        Image file.
    size : int
        Output side length.

    Returns
    -------
    np.ndarray
        Shape ``(size, size, 3)``, dtype ``uint8``.

    Raises
    ------
    DatasetError
        Naming the file, if it is missing or cannot be decoded.
    """
    try:
        with Image.open(path) as image:
            return center_crop_resize(image, size)
    except FileNotFoundError as exc:
        raise DatasetError(
            f"image {path} is missing; restore it or remove it from the dataset"
        ) from exc
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as exc:
        raise DatasetError(
            f"image {path} cannot be decoded ({exc}); replace it with a valid image or delete it"
        ) from exc


def load_square_images(paths: Sequence[Path], size: int, description: str) -> np.ndarray:
    """Decode many image files, showing a progress bar.

    Parameters
    ----------
    paths : sequence of Path
        ``N`` image files.
    size : int
        Output side length.
    description : str
        Label of the progress bar.

    Returns
    -------
    np.ndarray
        Shape ``(N, size, size, 3)``, dtype ``uint8``, in the order of ``paths``.
    """
    if size < 1:
        raise DatasetError(f"image_size must be a positive integer, got {size}; fix image_size")
    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    with make_progress() as progress:
        task = progress.add_task(description, total=len(paths))
        for i, path in enumerate(paths):
            out[i] = load_square_image(path, size)
            progress.advance(task)
    return out
