"""Where datasets live on disk, and the error raised when they are not there."""

from __future__ import annotations

import os
from pathlib import Path

from posthoc_vq.errors import DatasetError

DATA_ENV_VAR = "POSTHOC_VQ_DATA"
DEFAULT_DATA_DIR = Path("~/.cache/posthoc_vq")


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """Return the root folder that holds one sub-folder per dataset.

    Parameters
    ----------
    data_dir : str or os.PathLike or None
        Explicit folder. When None, ``$POSTHOC_VQ_DATA`` is used if set and
        non-empty, else ``~/.cache/posthoc_vq``.

    Returns
    -------
    Path
        The folder with ``~`` expanded. It is not created and may not exist.
    """
    if data_dir is None:
        data_dir = os.environ.get(DATA_ENV_VAR) or DEFAULT_DATA_DIR
    return Path(data_dir).expanduser()


def missing_data_error(name: str, data_dir: Path, missing: list[Path]) -> DatasetError:
    """Build the error for dataset files that are not on disk.

    Parameters
    ----------
    name : str
        Dataset name (the sub-folder of ``data_dir``).
    data_dir : Path
        Root data folder that was searched.
    missing : list of Path
        The paths that do not exist.

    Returns
    -------
    DatasetError
        Names the missing paths and says how to download or locate the data.
    """
    listed = ", ".join(str(p) for p in missing)
    return DatasetError(
        f"dataset {name!r} not found: missing {listed}. "
        f"Run `posthoc-vq data download {name} --data-dir {data_dir}`, or point --data-dir "
        f"/ ${DATA_ENV_VAR} at a folder that contains {name}/"
    )
