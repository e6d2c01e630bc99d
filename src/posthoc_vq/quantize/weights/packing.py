"""Integer codes to bytes and back: 8-bit codes one per byte, 4-bit codes two per byte.

4-bit packing: codes are taken in row-major order; element ``2i`` goes in the low
nibble of byte ``i``, element ``2i+1`` in the high nibble. An odd count is padded
with one zero nibble. Signed codes are stored in two's complement (``q & 0xF``)
and sign-extended on unpacking.
"""

from __future__ import annotations

import torch

from posthoc_vq.errors import CheckpointError


def packed_size(numel: int, bits: int) -> int:
    """Bytes that ``numel`` codes of ``bits`` bits take when packed."""
    if bits == 8:
        return numel
    if bits == 4:
        return (numel + 1) // 2
    raise CheckpointError(f"unsupported bit width {bits}: packed weights are 4 or 8 bits")


def pack(codes: torch.Tensor, bits: int, signed: bool) -> torch.Tensor:
    """Integer codes (any shape) -> 1-D uint8 bytes.

    Parameters
    ----------
    codes : integer tensor; values in [-2**(bits-1), 2**(bits-1) - 1] when ``signed``, else [0, 2**bits - 1].
    bits : 4 or 8.
    signed : whether the codes are two's-complement signed.
    """
    flat = codes.reshape(-1).to(torch.int16)
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    if flat.numel() and (int(flat.min()) < lo or int(flat.max()) > hi):
        raise ValueError(f"codes outside the {'signed' if signed else 'unsigned'} {bits}-bit range [{lo}, {hi}]")
    packed_size(flat.numel(), bits)  # validates bits
    if bits == 8:
        return (flat & 0xFF).to(torch.uint8)
    nibbles = flat & 0xF
    if nibbles.numel() % 2:
        nibbles = torch.cat([nibbles, nibbles.new_zeros(1)])
    pairs = nibbles.view(-1, 2)
    return (pairs[:, 0] | (pairs[:, 1] << 4)).to(torch.uint8)


def unpack(data: torch.Tensor, numel: int, bits: int, signed: bool) -> torch.Tensor:
    """1-D uint8 bytes -> ``numel`` int16 codes; inverse of :func:`pack`.

    Raises CheckpointError when the byte count does not match ``numel`` codes of ``bits`` bits.
    """
    expected = packed_size(numel, bits)
    if data.dtype != torch.uint8 or data.dim() != 1 or data.numel() != expected:
        raise CheckpointError(
            f"packed data has {data.numel()} {str(data.dtype).replace('torch.', '')} values of shape {tuple(data.shape)}, "
            f"but {numel} codes of {bits} bits need {expected} uint8 bytes"
        )
    raw = data.to(torch.int16)
    if bits == 8:
        codes = raw
    else:
        codes = torch.stack([raw & 0xF, raw >> 4], dim=1).reshape(-1)[:numel]
    if signed:
        half = 1 << (bits - 1)
        codes = torch.where(codes >= half, codes - (1 << bits), codes)
    return codes
