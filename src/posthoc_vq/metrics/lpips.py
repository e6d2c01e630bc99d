"""LPIPS (Zhang et al., 2018), only as an option and only from local weights: nothing is downloaded.

The ``lpips`` package ships its linear heads in its wheel but fetches its backbone
(AlexNet/VGG ImageNet weights) through torchvision at run time. Here the backbone comes
from a local file (torchvision's state dict, e.g. ``alexnet-owt-7be5be79.pth``, read with
``torch.load(weights_only=True)``); the package is built with ``pnet_rand=True`` so it
never asks torchvision for weights.

The package is optional and not a dependency of posthoc-vq: it imports torchvision, and
``pip install lpips`` would replace the pinned CPU torch with another build (checked with
``pip install --dry-run lpips``: it pulls torch 2.15 and CUDA wheels). Without it, or
without a weights file, :func:`lpips_distance` raises :class:`LPIPSUnavailableError`.

Images smaller than :data:`MIN_SIDE` are upsampled bilinearly (AlexNet's stride-4 stem and
pooling leave no spatial extent at 28x28); grey images are repeated to 3 channels.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import torch
from torch.nn import functional as F

from posthoc_vq.errors import PosthocVQError

MIN_SIDE = 64
#: torchvision ``features`` index ranges of the lpips AlexNet slices (relu1 ... relu5).
ALEX_SLICES = ((0, 2), (2, 5), (5, 8), (8, 10), (10, 12))


class LPIPSUnavailableError(PosthocVQError):
    """LPIPS was requested but cannot run offline here (no local backbone weights, or no ``lpips`` package)."""


def require_lpips(weights: str | Path | None):
    """The imported ``lpips`` module and the checked weights path; LPIPSUnavailableError if either is missing."""
    if weights is None:
        raise LPIPSUnavailableError(
            "LPIPS is unavailable: it needs a local backbone weights file (--lpips-weights PATH, torchvision's AlexNet "
            "state dict such as alexnet-owt-7be5be79.pth); posthoc-vq never downloads weights. Use fd/kid/pr instead."
        )
    weights = Path(weights).expanduser()
    if not weights.is_file():
        raise LPIPSUnavailableError(f"LPIPS backbone weights not found: {weights}; pass the path of a local AlexNet state dict")
    try:
        lpips = importlib.import_module("lpips")
    except ImportError as err:
        raise LPIPSUnavailableError(
            f"LPIPS is unavailable: the optional `lpips` package cannot be imported ({err}). It needs torchvision, and "
            "`pip install lpips` would replace the pinned CPU torch 2.13.0; install lpips with a torchvision built for "
            "this torch yourself to enable it."
        ) from None
    return lpips, weights


def alexnet_backbone_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map torchvision AlexNet keys ``features.<i>.<param>`` to lpips' ``slice<k>.<i>.<param>``."""
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] != "features":
            continue  # the classifier head is not part of LPIPS
        i = int(parts[1])
        k = next(n for n, (a, b) in enumerate(ALEX_SLICES, start=1) if a <= i < b)
        out[f"slice{k}.{i}.{'.'.join(parts[2:])}"] = value
    return out


def lpips_distance(reference: torch.Tensor, output: torch.Tensor, weights: str | Path | None, batch_size: int = 256) -> torch.Tensor:
    """Per-image LPIPS (AlexNet) between image batches (N, C, H, W) in [0, 1].

    Parameters
    ----------
    weights : local torchvision AlexNet state dict; required.

    Returns
    -------
    (N,) float32 distances (0 for identical images).

    Raises
    ------
    LPIPSUnavailableError : no weights path, a missing file, or no importable ``lpips`` package.
    """
    lpips, path = require_lpips(weights)
    model = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False)
    state = torch.load(path, map_location="cpu", weights_only=True)
    try:
        model.net.load_state_dict(alexnet_backbone_state(state), strict=True)
    except RuntimeError as err:
        raise LPIPSUnavailableError(f"{path} is not a torchvision AlexNet state dict ({err})") from None
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(reference), batch_size):
            a, b = (_prepare(t[i : i + batch_size]) for t in (reference, output))
            out.append(model(a, b, normalize=True).flatten())
    return torch.cat(out)


def _prepare(x: torch.Tensor) -> torch.Tensor:
    x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
    if min(x.shape[-2:]) < MIN_SIDE:
        x = F.interpolate(x, size=(MIN_SIDE, MIN_SIDE), mode="bilinear", align_corners=False)
    return x
