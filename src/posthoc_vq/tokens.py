"""The token layout: a latent (B, D) is one token per image; a grid (B, C, h, w) is h * w tokens of C values, in
row-major grid order. One helper pair for numpy arrays and torch tensors alike; every codebook (post-hoc or trained)
and every bitstream sees tokens in this order.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def to_tokens(z: Any) -> Any:
    """(B, T, C) tokens of latents (B, D) (T = 1) or (B, C, *grid) (T = prod(grid)); numpy in, contiguous numpy out; torch in, a torch view."""
    if z.ndim == 2:
        return z[:, None, :]
    flat = z.reshape(z.shape[0], z.shape[1], -1)
    return flat.transpose(1, 2) if isinstance(z, torch.Tensor) else np.ascontiguousarray(np.swapaxes(flat, 1, 2))


def from_tokens(tokens: Any, latent_shape: tuple[int, ...]) -> Any:
    """Latents (B, *latent_shape) from tokens (B, T, C); the inverse of :func:`to_tokens`."""
    if len(latent_shape) == 1:
        return tokens[:, 0, :]
    shape = (tokens.shape[0], *latent_shape)
    return tokens.transpose(1, 2).reshape(shape) if isinstance(tokens, torch.Tensor) else np.ascontiguousarray(np.swapaxes(tokens, 1, 2).reshape(shape))
