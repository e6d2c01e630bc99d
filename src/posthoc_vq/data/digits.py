"""scikit-learn's bundled 8x8 handwritten digits: the offline default dataset.

The 1797 images ship with scikit-learn, so no download or data folder is
needed. Their values 0..16 are mapped to 0..255 by ``round(x * 255 / 16)``.
"""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits

from posthoc_vq.data.splits import ImageSet

DIGITS_MAX = 16
DIGITS_CLASSES = 10


def load_sklearn_digits() -> ImageSet:
    """Load all scikit-learn digits as one set.

    Returns
    -------
    ImageSet
        Images ``(1797, 8, 8, 1)`` uint8 in 0..255 and labels ``(1797,)`` int64 in 0..9.
    """
    bunch = load_digits()
    scaled = np.rint(bunch.images * (255.0 / DIGITS_MAX))
    images = np.clip(scaled, 0, 255).astype(np.uint8)[..., None]
    return ImageSet(images, bunch.target.astype(np.int64))
