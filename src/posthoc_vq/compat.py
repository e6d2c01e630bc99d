"""The torch versions posthoc-vq supports, checked when the package is imported (without importing torch).

Tested window: torch 2.6 to 2.15 (``.ci/torch_window.sh`` runs the core tests on 2.6.0 with numpy 1.26 and on
2.15.0 with numpy 2; ``make test`` the whole suite on 2.13.0). The floor is 2.6: vector-quantize-pytorch 1.32 needs
torch-einops-utils>=0.1.42, which needs torch>=2.5 (so pip refuses 2.4), and on 2.5 diffusers (the 'adapters' extra) fails
at import (it calls ``torch.accelerator``, new in 2.6). An older torch fails at import with an ImportError naming the
window; a newer one gives one :class:`UntestedTorchWarning` line and goes on. No torch installed (the torch-free decoder runtime,
:mod:`posthoc_vq.codec`) is not checked.
"""

from __future__ import annotations

import re
import warnings

__all__ = ["TORCH_FLOOR", "TORCH_NEWEST_TESTED", "TESTED_WINDOW", "UntestedTorchWarning", "check_torch", "torch_version"]

TORCH_FLOOR = (2, 6)
TORCH_NEWEST_TESTED = (2, 15)
TESTED_WINDOW = f"torch {TORCH_FLOOR[0]}.{TORCH_FLOOR[1]} to {TORCH_NEWEST_TESTED[0]}.{TORCH_NEWEST_TESTED[1]}"


class UntestedTorchWarning(UserWarning):
    """torch is newer than the newest version posthoc-vq is tested with."""


def _major_minor(version: str) -> tuple[int, int] | None:
    m = re.match(r"(\d+)\.(\d+)", version)
    return (int(m[1]), int(m[2])) if m else None


def torch_version() -> str | None:
    """The installed torch's version string (from its metadata, without importing torch), or None when there is none."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("torch")
    except PackageNotFoundError:
        return None


def check_torch(version: str | None = None) -> None:
    """ImportError for a torch older than :data:`TORCH_FLOOR`; one :class:`UntestedTorchWarning` for one newer than
    :data:`TORCH_NEWEST_TESTED`. ``version``: the installed torch's (default); none installed, or unparseable: nothing."""
    version = torch_version() if version is None else version
    mm = _major_minor(version) if version else None
    if mm is None:
        return
    if mm < TORCH_FLOOR:
        raise ImportError(f"posthoc-vq needs {TESTED_WINDOW} (the tested window); this environment has torch {version}. "
                          f"Install one in the window, e.g. pip install 'torch>={TORCH_FLOOR[0]}.{TORCH_FLOOR[1]},<2.16'")
    if mm > TORCH_NEWEST_TESTED:
        warnings.warn(f"torch {version} is newer than posthoc-vq's tested window ({TESTED_WINDOW}): its results are unchecked; "
                      "compare a run with a torch in the window before trusting the numbers", UntestedTorchWarning, stacklevel=3)
