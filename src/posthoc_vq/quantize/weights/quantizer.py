"""Integer weight quantizers: INT8 and INT4, symmetric or asymmetric, per tensor, channel or group.

The contract (after CompressAI's codec): ``quantize(weight, axis) -> QTensor``,
``dequantize(QTensor) -> weight``, ``pack(QTensor) -> (tensors, spec)`` and
``unpack(tensors, spec) -> QTensor``, where ``tensors`` are what goes into the
safetensors file (uint8 codes, fp16 scales) and ``spec`` the JSON-able description.

Scales are stored in fp16. Each scale is rounded *up* to the next fp16 value
before the codes are computed from it, so no weight is clipped and the rounding
error of every weight is at most half its group's stored scale:
``|w - dequantize(quantize(w))| <= scale / 2`` elementwise.

* symmetric: ``q = round(w / s)`` in [-qmax, qmax], qmax = 127 (8 bits) or 7 (4 bits),
  ``s = max|w| / qmax`` per group.
* asymmetric: ``q = round(w / s) + z`` in [0, 2**bits - 1], ``s = (max - min) / (2**bits - 1)``,
  ``z = round(-min / s)``; zero points are packed with the same bit width as the codes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from posthoc_vq.errors import CheckpointError
from posthoc_vq.quantize.weights.packing import pack, unpack
from posthoc_vq.quantize.weights.qtensor import QTensor, expand_groups, from_matrix, matrix_view

GRANULARITIES = ("tensor", "channel", "group")


def fp16_scale_up(scale: torch.Tensor) -> torch.Tensor:
    """Round positive fp32 scales up to the nearest fp16 value that is >= the input."""
    s32 = scale.detach().cpu().numpy().astype(np.float32)
    if not np.all(np.isfinite(s32)) or np.any(s32 <= 0):
        raise ValueError("scales must be finite and positive")
    s16 = s32.astype(np.float16)
    low = s16.astype(np.float32) < s32
    s16[low] = np.nextafter(s16[low], np.float16(np.inf))
    s16 = np.maximum(s16, np.float16(2**-24))  # smallest positive fp16
    if not np.all(np.isfinite(s16)):
        raise ValueError(f"a scale of {float(s32.max()):.3g} overflows fp16: weights this large cannot be stored with fp16 scales")
    return torch.from_numpy(s16)


@dataclass(frozen=True)
class IntQuantizer:
    """Uniform integer quantizer of one weight tensor.

    Parameters
    ----------
    bits : 4 or 8.
    symmetric : symmetric codes with no zero point, else asymmetric with a zero point per group.
    granularity : 'tensor' (one scale), 'channel' (one per output channel) or 'group'
        (one per ``group_size`` consecutive input weights of a channel; a channel with at most
        ``group_size`` inputs falls back to per-channel).
    group_size : weights per group along the input dimension.
    """

    bits: int = 8
    symmetric: bool = True
    granularity: str = "channel"
    group_size: int = 32

    def __post_init__(self) -> None:
        if self.bits not in (4, 8):
            raise ValueError(f"bits must be 4 or 8, got {self.bits}")
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {GRANULARITIES}, got {self.granularity!r}")
        if self.group_size < 1:
            raise ValueError("group_size must be >= 1")

    @property
    def qmax(self) -> int:
        return (1 << (self.bits - 1)) - 1 if self.symmetric else (1 << self.bits) - 1

    # ------------------------------------------------------------------ contract
    def quantize(self, weight: torch.Tensor, axis: int = 0) -> QTensor:
        """Quantize ``weight`` whose output channels lie on ``axis``."""
        w = matrix_view(weight.detach().float().cpu(), axis, per_tensor=self.granularity == "tensor")  # (rows, cols)
        rows, cols = w.shape
        g = self.group_size if self.granularity == "group" and cols > self.group_size else cols
        n_groups = -(-cols // g)
        pad = n_groups * g - cols
        padded = torch.cat([w, w[:, -1:].expand(rows, pad)], dim=1) if pad else w  # repeats a member: min/max unchanged
        groups = padded.view(rows, n_groups, g)
        if self.symmetric:
            span = groups.abs().amax(dim=2)
            scale = fp16_scale_up(torch.where(span > 0, span / self.qmax, torch.ones_like(span)))
            zero = None
        else:
            lo = groups.amin(dim=2).clamp(max=0.0)  # the grid always contains 0
            hi = groups.amax(dim=2).clamp(min=0.0)
            span = hi - lo
            scale = fp16_scale_up(torch.where(span > 0, span / self.qmax, torch.ones_like(span)))
            zero = torch.round(-lo / scale.float()).clamp(0, self.qmax).to(torch.int16)
        s = expand_groups(scale.float(), g, cols)
        if self.symmetric:
            q = torch.round(w / s).clamp(-self.qmax, self.qmax)
        else:
            q = (torch.round(w / s) + expand_groups(zero.float(), g, cols)).clamp(0, self.qmax)
        return QTensor(q.to(torch.int16), scale, zero, self.bits, tuple(weight.shape), axis, g, self.granularity)

    @staticmethod
    def dequantize(qt: QTensor) -> torch.Tensor:
        """Float32 weight of the original shape from a QTensor."""
        q = qt.q.float()
        if qt.zero_point is not None:
            q = q - qt.expand(qt.zero_point.float())
        w = q * qt.expand(qt.scale.float())
        if qt.granularity == "tensor":
            return w.reshape(qt.shape)
        return from_matrix(w, qt.shape, qt.axis)

    @staticmethod
    def pack(qt: QTensor) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Bytes for the file (``q`` uint8 codes, ``scale`` fp16, ``zero_point`` uint8) and the JSON spec."""
        tensors = {"q": pack(qt.q, qt.bits, signed=qt.symmetric), "scale": qt.scale.to(torch.float16).contiguous()}
        if qt.zero_point is not None:
            tensors["zero_point"] = pack(qt.zero_point, qt.bits, signed=False)
        spec = {
            "bits": qt.bits, "symmetric": qt.symmetric, "granularity": qt.granularity, "group_size": qt.group_size,
            "shape": list(qt.shape), "axis": qt.axis, "rows": qt.rows, "cols": qt.cols, "n_groups": qt.n_groups,
        }
        return tensors, spec

    @staticmethod
    def unpack(tensors: dict[str, torch.Tensor], spec: dict[str, Any]) -> QTensor:
        """Inverse of :meth:`pack`; any mismatch between bytes and spec raises CheckpointError."""
        try:
            bits, rows, cols, n_groups = int(spec["bits"]), int(spec["rows"]), int(spec["cols"]), int(spec["n_groups"])
            shape, symmetric = tuple(int(s) for s in spec["shape"]), bool(spec["symmetric"])
            axis, group_size, granularity = int(spec["axis"]), int(spec["group_size"]), str(spec["granularity"])
        except (KeyError, TypeError, ValueError) as err:
            raise CheckpointError(f"packed-weight spec is incomplete or malformed ({err!r})") from None
        if bits not in (4, 8):
            raise CheckpointError(f"unsupported bit width {bits}: packed weights are 4 or 8 bits")
        if rows * cols != int(np.prod(shape)) or n_groups != -(-cols // group_size) or granularity not in GRANULARITIES:
            raise CheckpointError(f"packed-weight spec is inconsistent: shape {list(shape)} is not {rows} x {cols} in {n_groups} groups of {group_size}")
        if "q" not in tensors or "scale" not in tensors:
            raise CheckpointError("packed weight lacks its codes ('q') or scales ('scale')")
        q = unpack(tensors["q"], rows * cols, bits, signed=symmetric).view(rows, cols)
        scale = tensors["scale"]
        if scale.dtype != torch.float16 or tuple(scale.shape) != (rows, n_groups):
            raise CheckpointError(f"scales have shape {tuple(scale.shape)} {scale.dtype}, expected ({rows}, {n_groups}) float16")
        if not bool(torch.all(torch.isfinite(scale) & (scale > 0))):
            raise CheckpointError("scales contain zero, negative or non-finite values")
        zero = None
        if not symmetric:
            if "zero_point" not in tensors:
                raise CheckpointError("asymmetric packed weight lacks its zero points")
            zero = unpack(tensors["zero_point"], rows * n_groups, bits, signed=False).view(rows, n_groups)
        return QTensor(q, scale, zero, bits, shape, axis, group_size, granularity)
