"""An independent implementation of the TAEF2 forward pass, for tests.

Written from ``shared/models/taef2/SOURCE.md`` only, as plain functions over the upstream state dict
(``torch.nn.functional`` calls keyed by the dict's names), sharing no code with
:mod:`posthoc_vq.autoencoders.taef2` (no nn.Module, no Sequential, no loader). Agreement between the
two is evidence that both read the description the same way; the SOURCE.md check says such a module
matches the upstream implementation bit for bit.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F


def load_state(folder: Path, part: str) -> dict[str, torch.Tensor]:
    state = torch.load(Path(folder) / f"taef2_{part}.pth", map_location="cpu", weights_only=True)
    return {k: v.float() for k, v in state.items()}


def _conv(sd, key, x, stride=1):
    return F.conv2d(x, sd[f"{key}.weight"], sd.get(f"{key}.bias"), stride=stride, padding=1)


def _block(sd, i, x):
    if f"{i}.pool.0.weight" in sd:  # B+GN: x + 1x1 -> GroupNorm(4) -> ReLU -> 1x1
        h = F.conv2d(x, sd[f"{i}.pool.0.weight"])
        h = F.relu(F.group_norm(h, 4, sd[f"{i}.pool.1.weight"], sd[f"{i}.pool.1.bias"], eps=1e-5))
        x = x + F.conv2d(h, sd[f"{i}.pool.3.weight"])
    h = F.relu(_conv(sd, f"{i}.conv.0", x))
    h = F.relu(_conv(sd, f"{i}.conv.2", h))
    h = _conv(sd, f"{i}.conv.4", h)
    return F.relu(h + x)


def encode(sd, x):
    """(B, 3, H, W) in [0, 1] -> (B, 32, H/8, W/8)."""
    x = _conv(sd, "0", x)
    for i in range(1, 14):
        x = _conv(sd, str(i), x, stride=2) if i in (2, 6, 10) else _block(sd, i, x)
    return _conv(sd, "14", x)


def decode(sd, z):
    """(B, 32, h, w) -> raw (B, 3, 8h, 8w), no output activation."""
    x = F.relu(_conv(sd, "1", 3 * torch.tanh(z / 3)))
    for i in range(3, 19):
        if i in (6, 11, 16):
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        elif i in (7, 12, 17):
            x = _conv(sd, str(i), x)
        else:
            x = _block(sd, i, x)
    return _conv(sd, "19", x)
