"""Seeding: every random stream is derived from (seed, purpose, epoch).

Reseeding each epoch from the run seed, instead of carrying one generator
through the run, is what makes a resumed run reproduce an uninterrupted one
exactly: the state to restore is only the epoch number.
"""

from __future__ import annotations

import random
import zlib

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch's global generators (model initialisation uses torch's)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def derived_seed(seed: int, purpose: str, epoch: int = 0) -> int:
    """A 63-bit seed that depends on the run seed, a purpose string and the epoch."""
    return (seed * 1_000_003 + zlib.crc32(purpose.encode()) * 7919 + epoch) % (2**63 - 1)


def generator(seed: int, purpose: str, epoch: int = 0) -> torch.Generator:
    """CPU torch generator for one purpose ('shuffle', 'noise', 'val', ...) in one epoch."""
    return torch.Generator().manual_seed(derived_seed(seed, purpose, epoch))
