"""A quantized weight tensor and the 2-D view every quantizer works on.

A layer's weight is viewed as a matrix ``(rows, cols)``: one row per output channel,
``cols`` = fan-in (input channels x kernel). The output-channel axis is 0 for
Conv2d and Linear, and 1 for ConvTranspose2d (whose weight is ``(in, out, kh, kw)``).
Per-tensor quantization views the whole tensor as one row.

Scales (and zero points) are per ``(row, group)``: ``n_groups`` groups of
``group_size`` consecutive columns (the last may be shorter).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class QTensor:
    """Integer codes with their scales; ``dequantize`` gives ``(q - zero_point) * scale``.

    Attributes
    ----------
    q : (rows, cols) int16 codes, in [-qmax, qmax] (symmetric) or [0, 2**bits - 1].
    scale : (rows, n_groups) float16, every entry > 0.
    zero_point : (rows, n_groups) int16, or None when symmetric.
    bits : 4 or 8.
    shape : the original weight shape.
    axis : the output-channel axis of the original weight (moved to 0 for the matrix view).
    group_size : columns per group (== cols for per-channel and per-tensor).
    granularity : 'tensor', 'channel' or 'group'.
    """

    q: torch.Tensor
    scale: torch.Tensor
    zero_point: torch.Tensor | None
    bits: int
    shape: tuple[int, ...]
    axis: int
    group_size: int
    granularity: str

    @property
    def symmetric(self) -> bool:
        return self.zero_point is None

    @property
    def rows(self) -> int:
        return self.q.shape[0]

    @property
    def cols(self) -> int:
        return self.q.shape[1]

    @property
    def n_groups(self) -> int:
        return self.scale.shape[1]

    def expand(self, per_group: torch.Tensor) -> torch.Tensor:
        """(rows, n_groups) -> (rows, cols): each group's value repeated over its columns."""
        return expand_groups(per_group, self.group_size, self.cols)


def expand_groups(per_group: torch.Tensor, group_size: int, cols: int) -> torch.Tensor:
    """(rows, n_groups) -> (rows, cols): each group's value repeated over its ``group_size`` columns."""
    return per_group.repeat_interleave(group_size, dim=1)[:, :cols]


def matrix_view(weight: torch.Tensor, axis: int, per_tensor: bool = False) -> torch.Tensor:
    """(rows, cols) view of a weight with the output-channel ``axis`` first; one row when ``per_tensor``."""
    if per_tensor:
        return weight.reshape(1, -1)
    moved = weight.movedim(axis, 0)
    return moved.reshape(moved.shape[0], -1)


def from_matrix(matrix: torch.Tensor, shape: tuple[int, ...], axis: int) -> torch.Tensor:
    """Inverse of :func:`matrix_view`: back to ``shape`` with the output channels on ``axis``."""
    moved_shape = (shape[axis],) + tuple(s for i, s in enumerate(shape) if i != axis)
    return matrix.reshape(moved_shape).movedim(0, axis).contiguous()
