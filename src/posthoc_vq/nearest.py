"""The nearest-code kernel: every codebook lookup in the package (post-hoc ``predict``, a codebook's ``nn.Module``,
the trained VQ / RVQ quantizers, a residual codebook's stages) goes through :func:`nearest_code`.

argmin_k ||c_k||^2 - 2 x.c_k (||x||^2 does not change the argmin), in blocks of about :data:`DISTANCE_BLOCK`
distances: a (12,544 x 1,024) Fashion-MNIST grid batch took 57 ms as one expression, 18 ms this way (faiss: 19 ms;
the product's inner dimension is only D). Ties go to the lowest index. :func:`squared_distances` gives the distances
themselves (``transform``), :func:`nearest` the numpy face with the squared distance of each row's code.
(The k-means fit has its own pruned assignment inside its Lloyd iterations, :mod:`posthoc_vq.quantize.latent.kmeans`.)
"""

from __future__ import annotations

import numpy as np
import torch

from posthoc_vq.progress import report

DISTANCE_BLOCK = 2**21  # distances per block (8 MB of fp32)
GROUP = 32  # columns per group of the two-step argmin
#: rows per distance product at least: above DISTANCE_BLOCK / MIN_BLOCK_ROWS codes (4,096) the codes are tiled too. With
#: K = 65,536 a block would otherwise be 32 rows, each product re-reading the whole codebook: 1.08 M taef2 tokens took
#: 100 s against 65,536 codes, about 4x the matmul bound
MIN_BLOCK_ROWS = 512
#: True while torch.export traces (the ONNX export). torch.compiler.is_exporting is missing from torch 2.6 (the floor); there,
#: is_compiling is the flag, true under torch.export (and torch.compile, where one block is right too)
_is_exporting = getattr(torch.compiler, "is_exporting", torch.compiler.is_compiling)


def argmin_rows(d: torch.Tensor) -> torch.Tensor:
    """(m,) the first column of each row's minimum of ``d`` (m, K), as ``d.argmin(1)``: for K a multiple of :data:`GROUP`
    (at least 4 groups), in two steps, the minimum of each group of columns (a vectorised ``amin``) and then the argmin
    within the winning group, which is faster than torch's ``argmin`` over wide rows (0.47 s against 0.81 s for
    640,000 x 1,024 distances on 2 cores). The first group holding the minimum wins, so ties go to the lowest column."""
    m, k = d.shape
    if k % GROUP or k < 4 * GROUP or _is_exporting():
        return d.argmin(1)
    d3 = d.view(m, k // GROUP, GROUP)
    w = d3.amin(2).argmin(1)
    return w * GROUP + d3[torch.arange(m, device=d.device), w].argmin(1)


@torch.no_grad()
def nearest_code(x: torch.Tensor, codebook: torch.Tensor, c_sq: torch.Tensor | None = None) -> torch.Tensor:
    """(N,) int64 index of the nearest row of ``codebook`` (K, D) for each row of ``x`` (N, D), squared Euclidean."""
    c2 = codebook.pow(2).sum(1) if c_sq is None else c_sq
    ct = codebook.t()  # (D, K)
    rows = max(1, DISTANCE_BLOCK // max(codebook.shape[0], 1))
    if _is_exporting() or x.shape[0] <= rows:  # an exported graph has a symbolic batch: one block
        return argmin_rows((x @ ct).mul_(-2).add_(c2))
    if rows < MIN_BLOCK_ROWS:  # a wide codebook: tiles of codes too, so that each product still has many rows
        return torch.cat([_nearest_tiled(x[i : i + MIN_BLOCK_ROWS], ct, c2) for i in range(0, x.shape[0], MIN_BLOCK_ROWS)])
    return torch.cat([argmin_rows((x[i : i + rows] @ ct).mul_(-2).add_(c2)) for i in range(0, x.shape[0], rows)])


def _nearest_tiled(x: torch.Tensor, ct: torch.Tensor, c2: torch.Tensor) -> torch.Tensor:
    """:func:`nearest_code` of a block of rows over the codes in tiles of ``DISTANCE_BLOCK // MIN_BLOCK_ROWS`` columns, keeping the
    running minimum; a later tile wins only with a strictly smaller distance, so ties still go to the lowest index."""
    cols = DISTANCE_BLOCK // MIN_BLOCK_ROWS
    best_d = best_i = None
    for j in range(0, ct.shape[1], cols):
        d = (x @ ct[:, j : j + cols]).mul_(-2).add_(c2[j : j + cols])
        i = argmin_rows(d)
        v = d.gather(1, i[:, None])[:, 0]
        if best_d is None:
            best_d, best_i = v, i
        else:
            better = v < best_d
            best_d, best_i = torch.where(better, v, best_d), torch.where(better, i + j, best_i)
    return best_i


def squared_distances(Z: torch.Tensor, C: torch.Tensor, c_sq: torch.Tensor | None = None) -> torch.Tensor:
    """(N, K) squared Euclidean distances by ||z||^2 - 2 z.c + ||c||^2, clamped at 0."""
    c_sq = (C * C).sum(1) if c_sq is None else c_sq
    d = torch.addmm(c_sq.unsqueeze(0), Z, C.T, alpha=-2.0)  # (N, K)
    d += (Z * Z).sum(1, keepdim=True)
    return d.clamp_(min=0.0)


def nearest(Z: np.ndarray, C: np.ndarray, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Index (N,) int64 (:func:`nearest_code`) and squared distance (N,) float32 of each row's nearest codebook row, tiled over N."""
    Zt, Ct = torch.from_numpy(np.ascontiguousarray(Z, dtype=np.float32)), torch.from_numpy(np.ascontiguousarray(C, dtype=np.float32))
    c_sq = (Ct * Ct).sum(1)
    idx = torch.empty(len(Zt), dtype=torch.int64)
    dist = torch.empty(len(Zt), dtype=torch.float32)
    for i in range(0, len(Zt), chunk):
        z = Zt[i : i + chunk]
        k = nearest_code(z, Ct, c_sq)
        idx[i : i + chunk] = k
        dist[i : i + chunk] = ((z - Ct[k]) ** 2).sum(1)
        report("nearest-code assignment", min(i + chunk, len(Zt)), len(Zt))
    return idx.numpy(), dist.numpy()
