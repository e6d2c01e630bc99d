"""Image figures: a labelled grid of decoded images (reconstruction grid, interpolation strip).

Each row is one model or quantizer, each column one image (or one step along a path). The
images are tiled into one mosaic array (thin white gaps) drawn by a single ``imshow``
with nearest-neighbour scaling at ``INCHES_PER_IMAGE`` per image (about 3x the pixels of a
28x28 image at the report's DPI), so what is shown is what the decoder produced: no
smoothing hides blocky or blurred outputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from posthoc_vq.report.figures import pyplot, save_png

INCHES_PER_IMAGE = 0.8
LABEL_INCHES = 2.6
GAP_FRACTION = 14  # a white gap of one pixel per 14 image pixels (at least 1) between tiles


@dataclass
class ImageRow:
    """One row of a grid: its label (with a number, e.g. the row's test PSNR) and images (N, C, H, W) in [0, 1]."""

    label: str
    images: torch.Tensor


def mosaic(rows: Sequence[torch.Tensor]) -> np.ndarray:
    """(R*(H+g)-g, N*(W+g)-g, 3) float array in [0, 1] tiling rows of images (N, C, H, W); the g-pixel gaps are white."""
    n, c, h, w = rows[0].shape
    g = max(1, h // GAP_FRACTION)
    out = np.ones((len(rows) * (h + g) - g, n * (w + g) - g, 3), dtype=np.float32)
    for r, images in enumerate(rows):
        x = images.detach().float().clamp(0, 1).cpu().numpy()
        x = np.repeat(x, 3, axis=1) if x.shape[1] == 1 else x[:, :3]  # (N, 3, H, W)
        for i in range(n):
            out[r * (h + g): r * (h + g) + h, i * (w + g): i * (w + g) + w] = np.moveaxis(x[i], 0, -1)
    return out


def image_grid(rows: Sequence[ImageRow], path: Path, title: str, column_titles: Sequence[str] | None = None) -> Path:
    """Write a grid: ``len(rows)`` rows x N columns of images, row labels on the left.

    Parameters
    ----------
    rows : every row holds the same number N of images of the same size (N, C, H, W).
    column_titles : N short titles above the first row (e.g. class labels or t values), optional.
    """
    if not rows:
        raise ValueError("image_grid needs at least one row")
    shape = tuple(rows[0].images.shape)
    if any(tuple(r.images.shape) != shape for r in rows):
        raise ValueError(f"every row of an image grid must hold images of one shape, {shape}")
    n = shape[0]
    plt = pyplot()
    head = 0.4 + (0.22 if column_titles else 0.0)  # inches above the mosaic: the title, then the column titles
    grid_w, grid_h = n * INCHES_PER_IMAGE, len(rows) * INCHES_PER_IMAGE
    width, height = LABEL_INCHES + grid_w + 0.05, head + grid_h + 0.05
    fig = plt.figure(figsize=(width, height))
    ax = fig.add_axes((LABEL_INCHES / width, 0.05 / height, grid_w / width, grid_h / height))
    ax.imshow(mosaic([r.images for r in rows]), interpolation="nearest", aspect="auto")
    ax.set_axis_off()
    for r, row in enumerate(rows):
        y = (0.05 + grid_h - (r + 0.5) * INCHES_PER_IMAGE) / height
        fig.text((LABEL_INCHES - 0.08) / width, y, row.label, ha="right", va="center", fontsize=8)
    for i, t in enumerate(column_titles or []):
        fig.text((LABEL_INCHES + (i + 0.5) * INCHES_PER_IMAGE) / width, (0.05 + grid_h + 0.04) / height, str(t), ha="center", va="bottom", fontsize=7)
    fig.text((LABEL_INCHES + grid_w / 2) / width, 1 - 0.08 / height, title, ha="center", va="top", fontsize=10)
    return save_png(fig, path)
