"""A fitted codebook as a torch ``nn.Module``: nearest-code quantization that drops into any model.

    quantizer = fitted.as_module()            # or CodebookModule.from_estimator(estimator)
    out = quantizer(z)                        # z (N, D) or a token grid (N, C, h, w); out.latents, out.indices
    z_q, indices = out                        # a NamedTuple: it unpacks as well
    quantizer.dequantize(indices)             # the way back: the latents of the indices (== out.latents)

The output has the names every quantizer's output has (``latents``, ``indices``; a trained quantizer's
:class:`~posthoc_vq.models.quantizers.QuantizerOutput` too), and bitstreams of either kind are written by the same
code (:mod:`posthoc_vq.evaluation.bitstreams`).

The codebook is a buffer, so ``.to(device)`` / ``.to(dtype)`` move it and ``state_dict`` holds
it. Only codebooks whose assignment is Euclidean-nearest are offered (``kmeans``,
``random-prior``, ``residual``); for them the indices equal ``estimator.predict`` on the same
vectors. ``geodesic`` and ``hybrid`` assign along a k-nearest-neighbour graph of the fit set and
``class-conditional`` needs each vector's class label, so a stand-alone module cannot reproduce
their ``predict``: :func:`CodebookModule.from_estimator` refuses them with a message naming the
method instead of silently quantizing differently.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from posthoc_vq.errors import ConfigError
from posthoc_vq.nearest import nearest_code
from posthoc_vq.quantize.latent.base import CodebookEstimator

#: methods whose ``predict`` is the Euclidean-nearest code (per stage for residual)
EUCLIDEAN_METHODS = ("kmeans", "random-prior", "residual")


class CodebookOutput(NamedTuple):
    """``latents`` shaped like the input; ``indices`` int64 (N,) / (N, h, w), or (N, M) / (N, h, w, M) for M > 1 stages."""

    latents: torch.Tensor
    indices: torch.Tensor


class NotEuclideanCodebookError(ConfigError, ValueError):
    """A codebook whose assignment is not Euclidean-nearest cannot become a :class:`CodebookModule`."""


class CodebookModule(nn.Module):
    """Nearest-code quantization with a fixed codebook.

    Parameters
    ----------
    codebooks : (M, K, D) stage codebooks (M = 1 for a single codebook; (K, D) is accepted).
        A vector is coded stage by stage on the running residual and decoded as the sum of its
        M stage vectors (residual quantization; M = 1 is plain nearest-code quantization).
    straight_through : if True, ``z_q`` carries the straight-through gradient
        ``z + (z_q - z).detach()`` (the codebook gets none); otherwise ``z_q`` is detached.
    method : name of the method the codebook came from (recorded, shown in ``repr``).

    Forward
    -------
    z : (N, D) vectors, or a token grid (N, D, h, w) quantized per position.
    returns :class:`CodebookOutput` ``(latents, indices)``: ``latents`` shaped like ``z``; ``indices`` int64 (N,) / (N, h, w)
    for one stage, (N, M) / (N, h, w, M) for M > 1 stages (as ``ResidualKMeans.predict``).
    :meth:`dequantize` takes such indices back to latents.

    Examples
    --------
    >>> import torch
    >>> from posthoc_vq.quantize.latent.module import CodebookModule
    >>> q = CodebookModule(torch.eye(3))
    >>> z_q, idx = q(torch.tensor([[0.9, 0.1, 0.0]]))
    >>> idx.tolist(), z_q.tolist()
    ([0], [[1.0, 0.0, 0.0]])
    """

    def __init__(self, codebooks: torch.Tensor | np.ndarray, *, straight_through: bool = False, method: str = ""):
        super().__init__()
        books = torch.as_tensor(np.asarray(codebooks) if isinstance(codebooks, np.ndarray) else codebooks).float()
        if books.ndim == 2:
            books = books.unsqueeze(0)
        if books.ndim != 3 or books.shape[1] == 0 or books.shape[2] == 0:
            raise ValueError(f"codebooks must be (K, D) or (M, K, D) with K, D >= 1, got shape {tuple(books.shape)}")
        self.register_buffer("codebooks", books.contiguous())
        self.straight_through = straight_through
        self.method = method

    @classmethod
    def from_estimator(cls, estimator: CodebookEstimator, *, straight_through: bool = False) -> "CodebookModule":
        """The module of a fitted estimator; refuses methods whose ``predict`` is not Euclidean-nearest."""
        estimator._check_fitted()
        method = estimator.method
        if method not in EUCLIDEAN_METHODS:
            why = (
                "it needs each vector's class label (its codes are per-class codebooks)"
                if estimator.needs_labels
                else "it assigns each vector along a k-nearest-neighbour graph of its fit set, not to the Euclidean-nearest code"
            )
            raise NotEuclideanCodebookError(
                f"a '{method}' codebook cannot be used as a nearest-code nn.Module: {why}, so the module's codes would differ from "
                f"its predict(); use estimator.predict / .quantize on (N, D) vectors, or fit a {' / '.join(EUCLIDEAN_METHODS)} codebook"
            )
        books = getattr(estimator, "codebooks_", None)
        books = estimator.codebook_[None] if books is None else books
        return cls(torch.from_numpy(np.ascontiguousarray(books, dtype=np.float32)), straight_through=straight_through, method=method)

    @property
    def n_stages(self) -> int:
        return int(self.codebooks.shape[0])

    @property
    def n_codes(self) -> int:
        return int(self.codebooks.shape[1])

    @property
    def dim(self) -> int:
        return int(self.codebooks.shape[2])

    def extra_repr(self) -> str:
        return f"method={self.method!r}, n_stages={self.n_stages}, n_codes={self.n_codes}, dim={self.dim}, straight_through={self.straight_through}"

    def quantize_vectors(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, D) -> ((N, D) quantized, (N, M) int64 codes), on the module's device and dtype."""
        books = self.codebooks
        residual = z.detach().to(books.dtype)
        z_q = torch.zeros_like(residual)
        codes = torch.empty((len(residual), len(books)), dtype=torch.int64, device=residual.device)
        for m, book in enumerate(books):
            idx = nearest_code(residual, book) if len(residual) else codes[:, m]
            codes[:, m] = idx
            chosen = book[idx]
            z_q = z_q + chosen
            residual = residual - chosen
        return z_q, codes

    def dequantize(self, indices: torch.Tensor) -> torch.Tensor:
        """Latents of indices as :meth:`forward` gives them: (N,) / (N, M) -> (N, D); (N, h, w) / (N, h, w, M) -> (N, D, h, w).
        Summed stage by stage in the order of :meth:`quantize_vectors`, so they equal the forward's latents."""
        idx = torch.as_tensor(indices, dtype=torch.int64, device=self.codebooks.device)
        idx = idx[..., None] if self.n_stages == 1 else idx
        if idx.shape[-1] != self.n_stages or idx.ndim not in (2, 4):
            raise ValueError(f"indices must be (N[, h, w]) for one stage or (N[, h, w], {self.n_stages}) stage indices, got shape {tuple(indices.shape)}")
        if idx.numel() and (idx.min() < 0 or idx.max() >= self.n_codes):
            raise ValueError(f"indices must lie in [0, {self.n_codes}), got [{int(idx.min())}, {int(idx.max())}]")
        flat = idx.reshape(-1, self.n_stages)
        z = torch.zeros(len(flat), self.dim, dtype=self.codebooks.dtype, device=self.codebooks.device)
        for m, book in enumerate(self.codebooks):
            z = z + book[flat[:, m]]
        return z if idx.ndim == 2 else z.reshape(*idx.shape[:3], self.dim).permute(0, 3, 1, 2)

    def forward(self, z: torch.Tensor) -> CodebookOutput:
        if z.ndim == 2:
            flat, grid = z, None
        elif z.ndim == 4:
            n, c, h, w = z.shape
            flat, grid = z.permute(0, 2, 3, 1).reshape(-1, c), (n, h, w)
        else:
            raise ValueError(f"z must be (N, D) vectors or a (N, D, h, w) token grid, got shape {tuple(z.shape)}")
        if flat.shape[1] != self.dim:
            raise ValueError(f"z has dimension {flat.shape[1]} but the codebook's vectors have dimension {self.dim}")
        q, codes = self.quantize_vectors(flat)
        if grid is not None:
            n, h, w = grid
            q = q.reshape(n, h, w, -1).permute(0, 3, 1, 2)
            codes = codes.reshape(n, h, w, -1)
        q = q.to(z.dtype)
        q = z + (q - z).detach() if self.straight_through else q.detach()
        return CodebookOutput(q, codes[..., 0] if self.n_stages == 1 else codes)
