"""Datasets as uint8 image arrays with deterministic train/val/test splits.

>>> from posthoc_vq.data import load_dataset
>>> splits = load_dataset("digits")          # bundled with scikit-learn, offline
>>> splits.train.images.shape, splits.image_size, splits.channels
((1294, 8, 8, 1), 8, 1)

Other datasets live under a data folder (``data_dir`` argument, else
``$POSTHOC_VQ_DATA``, else ``~/.cache/posthoc_vq``) as ``<data_dir>/<name>/``;
:func:`download` fetches the ones with an official source.
"""

from posthoc_vq.data.download import OFFICIAL_URLS, download
from posthoc_vq.data.paths import resolve_data_dir
from posthoc_vq.data.registry import DATASETS, load_config_dataset, load_dataset
from posthoc_vq.data.splits import DatasetSplits, ImageSet

__all__ = [
    "DATASETS",
    "OFFICIAL_URLS",
    "DatasetSplits",
    "ImageSet",
    "download",
    "load_config_dataset",
    "load_dataset",
    "resolve_data_dir",
]
