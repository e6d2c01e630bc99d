"""Priors of a codebook's codes, fitted on its fit set and stored beside it (the coding side of a codebook).

:func:`fit_priors` fits every prior that applies (:mod:`posthoc_vq.codec.priors`): ``uniform`` and
``empirical`` always, ``context`` for token grids, each per residual stage. The context prior's code
groups come from k-means of each stage's codebook vectors into :data:`~posthoc_vq.codec.priors.DEFAULT_GROUPS`
groups (seed 0), so that neighbours with similar vectors share a context.

Files: ``<codebook folder>/prior-<kind>.safetensors`` (numpy-readable safetensors, see
:mod:`posthoc_vq.codec.tensorfile`), each written to a temp file and renamed. A codebook saved
before priors existed gets them on first use (:func:`ensure_priors`), fitted on the same fit set.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from posthoc_vq.codec import tensorfile
from posthoc_vq.codec.priors import DEFAULT_GROUPS, MAX_TABLE_CODES, PRIOR_KINDS, Prior, PriorError, context_prior, empirical_prior, uniform_prior
from posthoc_vq.errors import CheckpointError, NotFoundError
from posthoc_vq.quantize.latent.base import CodebookEstimator

PRIOR_FILE = "prior-{kind}.safetensors"


def stage_codebooks(estimator: CodebookEstimator) -> np.ndarray:
    """(M, K, D) the vectors each stage's codes stand for (M = 1 unless residual)."""
    books = getattr(estimator, "codebooks_", None)
    return np.asarray(estimator.codebook_[None] if books is None else books, dtype=np.float32)


def codes_grid(codes: np.ndarray, n_images: int, latent_shape: tuple[int, ...]) -> np.ndarray:
    """Codes (N * T,) or (N * T, M) in token order as a grid (N, h, w, M) (h = w = 1 for one-vector latents)."""
    codes = np.asarray(codes, dtype=np.int64)
    h, w = (tuple(latent_shape[1:]) + (1, 1))[:2] if len(latent_shape) > 1 else (1, 1)
    if len(latent_shape) > 3:
        raise ValueError(f"latent grids of more than 2 dimensions are not coded (latent shape {latent_shape})")
    return codes.reshape(n_images, h, w, -1)


def code_groups(estimator: CodebookEstimator, n_groups: int = DEFAULT_GROUPS) -> np.ndarray:
    """(M, K) group of each code: k-means (seed 0) of each stage's codebook vectors into ``n_groups`` groups."""
    from posthoc_vq.quantize.latent.kmeans import KMeans

    books = stage_codebooks(estimator)
    if books.shape[1] <= n_groups:
        return np.tile(np.arange(books.shape[1]), (len(books), 1))
    return np.stack([KMeans(n_groups, random_state=0).fit(book).labels_ for book in books]).astype(np.int32)


def fit_priors(estimator: CodebookEstimator, codes: np.ndarray) -> dict[str, Prior]:
    """Every prior that applies to a codebook, fitted on its fit set's codes (N, h, w, M); none for more than
    :data:`~posthoc_vq.codec.priors.MAX_TABLE_CODES` codes (an FSQ of 40 bits), whose rate stays nominal."""
    k = estimator.n_codes
    if k > MAX_TABLE_CODES:
        return {}
    priors = {"uniform": uniform_prior(k, codes.shape[3]), "empirical": empirical_prior(codes, k)}
    if codes.shape[1] * codes.shape[2] > 1 and k <= 2**16:
        priors["context"] = context_prior(codes, k, code_groups(estimator))
    return priors


def prior_summary(priors: dict[str, Prior], codes: np.ndarray) -> dict[str, dict]:
    """JSON record of the priors: file sha256 and the ideal bits per image on the fit set."""
    return {kind: {"sha256": p.sha256, "ideal_bits_per_image_fit": float(p.ideal_bits(codes).mean()), **p.info} for kind, p in priors.items()}


def save_priors(folder: str | Path, priors: dict[str, Prior]) -> None:
    for kind, prior in priors.items():
        data = prior.to_bytes()
        path = Path(folder) / PRIOR_FILE.format(kind=kind)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)


def load_prior(folder: str | Path, kind: str) -> Prior:
    """The ``kind`` prior stored in a codebook folder; damaged files raise CheckpointError naming the file."""
    if kind not in PRIOR_KINDS:
        raise NotFoundError(f"unknown prior {kind!r}; choose one of: {', '.join(PRIOR_KINDS)}")
    path = Path(folder) / PRIOR_FILE.format(kind=kind)
    if not path.is_file():
        raise NotFoundError(f"{path}: no {kind} prior for this codebook ({'the context prior needs a token grid' if kind == 'context' else 'fit the codebook again'})")
    try:
        return Prior.from_bytes(path.read_bytes(), str(path))
    except (PriorError, tensorfile.TensorFileError) as err:
        raise CheckpointError(f"{path}: {err}; delete it and run the command again to refit it") from None


def has_priors(folder: str | Path) -> bool:
    return all((Path(folder) / PRIOR_FILE.format(kind=k)).is_file() for k in ("uniform", "empirical"))
