"""A model's trained quantizer (VQ, RVQ, FSQ) seen as a fitted codebook, so that trained runs are coded
to bitstreams by the same code as post-hoc codebooks (:mod:`posthoc_vq.evaluation.bitstreams`).

``predict`` gives the codes the model's own lookup gives (nearest code per token; per stage for rvq; FSQ's
mixed-radix index), ``inverse_transform`` the vectors back (:meth:`TrainedQuantizer.dequantize`,
bit-identical to the lookup's), and ``codebooks_`` (M, K, D) the vectors every code stands for (FSQ: each
of its prod(levels) grid points, projected out), from which the context prior groups codes.
"""

from __future__ import annotations

import numpy as np
import torch

from posthoc_vq.models.quantizers import TrainedQuantizer

TRAINED = "trained"  # the codebook name of a run's own quantizer (`posthoc-vq compress RUN --codebook trained`)
MAX_CODE_VECTORS = 2**16  # codes listed as vectors (FSQ with more codes gets no context prior)


class TrainedCodebook:
    """Numpy face of a :class:`TrainedQuantizer`: ``predict`` (N, C) -> (N,) / (N, M), ``inverse_transform`` back."""

    needs_labels = False

    def __init__(self, quantizer: TrainedQuantizer):
        self.quantizer = quantizer.eval()
        self.method = quantizer.kind

    @property
    def n_codes(self) -> int:
        return int(self.quantizer.n_codes)

    @property
    def n_stages(self) -> int:
        return int(self.quantizer.n_stages)

    @property
    def bits_per_vector(self) -> float:
        return float(self.quantizer.bits_per_vector)

    @torch.no_grad()
    def predict(self, Z, y=None) -> np.ndarray:
        tokens = torch.as_tensor(np.ascontiguousarray(Z, dtype=np.float32))[None]  # (1, N, C)
        codes = self.quantizer._lookup(tokens)[1][0]
        return codes.numpy() if self.n_stages > 1 else codes.reshape(-1).numpy()

    @torch.no_grad()
    def inverse_transform(self, codes) -> np.ndarray:
        c = torch.as_tensor(np.asarray(codes, dtype=np.int64))
        c = c[:, None] if self.n_stages > 1 and c.ndim == 1 else c
        return self.quantizer.dequantize(c[None])[0].numpy()

    @property
    def codebooks_(self) -> np.ndarray:
        """(M, K, D) the vectors of every code of every stage."""
        if self.n_codes > MAX_CODE_VECTORS:
            raise ValueError(f"{self.method} has {self.n_codes} codes, too many to list as vectors")
        codes = torch.arange(self.n_codes)
        if self.n_stages == 1:
            return self.inverse_transform(codes.numpy())[None]
        q = self.quantizer
        return torch.stack([book.detach() for book in q.codebooks]).numpy()
