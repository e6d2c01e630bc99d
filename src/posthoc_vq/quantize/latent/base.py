"""The codebook-estimator contract (scikit-learn style) shared by every latent quantizer.

``__init__`` only stores hyperparameters; ``fit(Z)`` learns state in attributes
ending in ``_`` and returns ``self``. After fitting:

* ``codebook_``: (K, D) float32, the vectors a code index stands for;
* ``predict(Z)``: (N,) int64 code indices (residual quantizers: (N, M), one per stage);
* ``transform(Z)``: (N, K) float32 distances to the codebook entries (residual: (N, M, K),
  each stage's residual against that stage's codebook); ``transform(Z).argmin(-1) == predict(Z)``;
* ``inverse_transform(codes)``: (N, D) float32 latent vectors;
* ``bits_per_vector``: bits needed to send one latent vector's codes.

Latents go in as (N, D) float32 arrays (NumPy or torch); results come out as NumPy.
Each estimator is deterministic for a given ``random_state``.

Persistence: ``state_tensors()``/``from_state()`` give the learned state as plain
tensors, so a fitted estimator is saved as safetensors plus JSON (see ``store.py``).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError


def as_latents(Z: Any, dim: int | None = None, name: str = "Z") -> np.ndarray:
    """(N, D) float32 C-contiguous NumPy view of ``Z``; checks rank, finiteness and, if given, D."""
    if isinstance(Z, torch.Tensor):
        Z = Z.detach().cpu().numpy()
    Z = np.ascontiguousarray(Z, dtype=np.float32)
    if Z.ndim != 2:
        raise ValueError(f"{name} must be (N, D) latent vectors, got shape {Z.shape}")
    if dim is not None and Z.shape[1] != dim:
        raise ValueError(f"{name} has dimension {Z.shape[1]} but the codebook was fitted on dimension {dim}")
    if not np.isfinite(Z).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return Z


def squared_distances(Z: torch.Tensor, C: torch.Tensor, c_sq: torch.Tensor | None = None) -> torch.Tensor:
    """(N, K) squared Euclidean distances by ||z||^2 - 2 z.c + ||c||^2, clamped at 0."""
    c_sq = (C * C).sum(1) if c_sq is None else c_sq
    d = torch.addmm(c_sq.unsqueeze(0), Z, C.T, alpha=-2.0)  # (N, K)
    d += (Z * Z).sum(1, keepdim=True)
    return d.clamp_(min=0.0)


def nearest(Z: np.ndarray, C: np.ndarray, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Index (N,) int64 and squared distance (N,) float32 of each row's nearest codebook row, tiled over N."""
    Zt, Ct = torch.from_numpy(Z), torch.from_numpy(np.ascontiguousarray(C, dtype=np.float32))
    c_sq = (Ct * Ct).sum(1)
    idx = torch.empty(len(Zt), dtype=torch.int64)
    dist = torch.empty(len(Zt), dtype=torch.float32)
    for i in range(0, len(Zt), chunk):
        d = squared_distances(Zt[i : i + chunk], Ct, c_sq)
        dist[i : i + chunk], idx[i : i + chunk] = d.min(1)
    return idx.numpy(), dist.numpy()


class CodebookEstimator(BaseEstimator):
    """Base class: nearest-codebook-vector quantization in Euclidean space.

    Subclasses implement ``fit`` (setting ``codebook_``) and may override
    ``predict``/``transform`` (the geodesic quantizer assigns along a graph).
    """

    method: ClassVar[str] = ""

    # ------------------------------------------------------------------ contract
    def fit(self, Z, y=None) -> "CodebookEstimator":  # pragma: no cover - abstract
        raise NotImplementedError

    def _check_fitted(self) -> None:
        if not hasattr(self, "codebook_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet; call fit(Z) first")

    @property
    def n_codes(self) -> int:
        self._check_fitted()
        return int(self.codebook_.shape[0])

    @property
    def dim(self) -> int:
        self._check_fitted()
        return int(self.codebook_.shape[1])

    @property
    def bits_per_vector(self) -> float:
        return math.log2(self.n_codes)

    def predict(self, Z) -> np.ndarray:
        """(N,) int64 index of the nearest codebook vector."""
        self._check_fitted()
        return nearest(as_latents(Z, self.dim), self.codebook_)[0]

    def transform(self, Z) -> np.ndarray:
        """(N, K) float32 Euclidean distances to every codebook vector."""
        self._check_fitted()
        Zt = torch.from_numpy(as_latents(Z, self.dim))
        return squared_distances(Zt, torch.from_numpy(self.codebook_)).sqrt_().numpy()

    def inverse_transform(self, codes) -> np.ndarray:
        """(N, D) float32 codebook vectors of code indices (N,)."""
        self._check_fitted()
        codes = np.asarray(codes)
        if codes.ndim != 1:
            raise ValueError(f"codes must be (N,) indices, got shape {codes.shape}")
        if codes.size and (codes.min() < 0 or codes.max() >= self.n_codes):
            raise ValueError(f"code indices must lie in [0, {self.n_codes}), got [{codes.min()}, {codes.max()}]")
        return self.codebook_[codes]

    def quantize(self, Z) -> np.ndarray:
        """(N, D) quantized latents: ``inverse_transform(predict(Z))``."""
        return self.inverse_transform(self.predict(Z))

    # ------------------------------------------------------------------ persistence
    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Learned state as tensors (saved with safetensors)."""
        self._check_fitted()
        return {"codebook": torch.from_numpy(np.ascontiguousarray(self.codebook_))}

    def state_info(self) -> dict[str, Any]:
        """Learned state that is not a tensor (JSON-able): counters, diagnostics."""
        return {}

    def load_state(self, tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> None:
        self.codebook_ = tensors["codebook"].numpy().astype(np.float32)
