"""The codebook-estimator contract (scikit-learn style) shared by every latent quantizer.

``__init__`` only stores hyperparameters; ``fit(Z)`` learns state in attributes
ending in ``_`` and returns ``self``. After fitting:

* ``codebook_``: (K, D) float32, the vectors a code index stands for;
* ``labels_``: codes of the fitted points, as ``predict`` gives them; ``n_features_in_``: D;
* ``predict(Z)``: (N,) int64 code indices (residual quantizers: (N, M), one per stage);
* ``transform(Z)``: (N, K) float32 distances to the codebook entries (residual: (N, M, K),
  each stage's residual against that stage's codebook); ``transform(Z).argmin(-1) == predict(Z)``;
* ``inverse_transform(codes)``: (N, D) float32 latent vectors;
* ``bits_per_vector``: bits needed to send one latent vector's codes.

Class labels: an estimator whose class attribute ``needs_labels`` is True (the class-conditional
codebook) quantizes each vector with the codebook of its class, so ``fit``, ``predict``,
``transform`` and ``quantize`` take the vectors' class labels as ``y`` (N,) and refuse to run
without them (:class:`ClassLabelError`); ``inverse_transform`` needs none (a code names its
class). The others ignore ``y`` in ``fit`` and take none elsewhere. Code that predicts the codes
of a run's latents calls :func:`predict_codes`, which passes the labels exactly to the
estimators that need them.

Latents go in as (N, D) float32 arrays (NumPy or torch); results come out as NumPy.
Each estimator is deterministic for a given ``random_state``.

scikit-learn conformance (``sklearn.utils.estimator_checks.check_estimator``, see
``tests/contract/test_sklearn_conformance.py``): hyperparameters are checked on ``fit``
against each class's declarative ``_parameter_constraints``; input goes through
``sklearn.utils.validation.validate_data`` (:meth:`CodebookEstimator._validate_latents`), so
``fit`` sets ``n_features_in_`` and sparse, complex and NaN/inf input (and an empty fit set)
get scikit-learn's standard errors (``validate_data`` and tags need scikit-learn >= 1.6). Input is converted to C-contiguous float32 once, without a
copy when it already is. Tags: a clusterer (``predict`` gives code indices, ``labels_``
those of the fitted points) and a transformer (``transform`` gives distances) that
preserves float32 only (every result is float32).

Persistence: ``state_tensors()``/``from_state()`` give the learned state as plain
tensors, so a fitted estimator is saved as safetensors plus JSON (see ``store.py``).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClusterMixin, TransformerMixin
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import _num_features, validate_data

from posthoc_vq.errors import ConfigError
from posthoc_vq.nearest import nearest, squared_distances  # noqa: F401 - the one kernel, re-exported for the estimators


class ClassLabelError(ConfigError, ValueError):
    """Class labels an estimator with ``needs_labels`` cannot work with: missing, of the wrong
    length, of a class absent from the fit set, or of a class too small for its codes.

    A ValueError (scikit-learn's convention for bad input) and a :class:`~posthoc_vq.errors.ConfigError`,
    so the CLI prints the message and exits 2 instead of showing a traceback.
    """


def missing_labels_error(method: str, call: str = "predict(Z, y=labels)") -> ClassLabelError:
    """The error for a label-needing estimator called without labels; ``call`` shows the right call."""
    return ClassLabelError(
        f"the {method} codebook needs each vector's class label: call {call} with labels (N,) integer class labels, one per vector (per image for whole latents) "
        f"(quantize.method '{method}' codes every vector with the codebook of its own class, so the label is part of the code); "
        "these vectors have none: use a codebook method that needs no labels, e.g. kmeans"
    )


def predict_codes(estimator: "CodebookEstimator", Z: Any, labels: Any = None) -> np.ndarray:
    """Codes of vectors ``Z`` (N, D) under a fitted codebook, with their class labels where it needs them.

    The one way the pipeline predicts codes of latents (fit usage, evaluation, samples, perceptual
    metrics, fine-tuning, weight evaluation): an estimator with ``needs_labels`` gets
    ``predict(Z, y=labels)`` (``labels`` (N,) ints; None raises its missing-label
    :class:`ClassLabelError`), every other estimator ``predict(Z)`` with ``labels`` ignored.

    Returns
    -------
    (N,) int64 codes ((N, M) for residual quantizers), as ``estimator.predict``.
    """
    if estimator.needs_labels:
        return estimator.predict(Z, y=labels)
    return estimator.predict(Z)


def as_latents(Z: Any, dim: int | None = None, name: str = "Z") -> np.ndarray:
    """(N, D) float32 C-contiguous NumPy view of ``Z``; checks rank, finiteness and, if given, D."""
    if isinstance(Z, torch.Tensor):
        Z = Z.detach().cpu().numpy()
    if np.iscomplexobj(Z):
        raise ValueError(f"Complex data not supported: {name} must be real (N, D) latent vectors")
    Z = np.ascontiguousarray(Z, dtype=np.float32)
    if Z.ndim != 2:
        raise ValueError(f"{name} must be (N, D) latent vectors, got shape {Z.shape}")
    if dim is not None and Z.shape[1] != dim:
        raise ValueError(f"{name} has dimension {Z.shape[1]} but the codebook was fitted on dimension {dim}")
    if not np.isfinite(Z).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return Z


class CodebookEstimator(ClusterMixin, TransformerMixin, BaseEstimator):
    """Base class: nearest-codebook-vector quantization in Euclidean space.

    Subclasses declare ``_parameter_constraints``, implement ``fit`` (decorated with
    ``sklearn.base._fit_context``; it validates ``Z`` with ``_validate_latents(Z, reset=True)``
    and sets ``codebook_`` and ``labels_``) and may override ``predict``/``transform`` (the
    geodesic quantizer assigns along a graph).
    """

    method: ClassVar[str] = ""
    #: True for estimators that code each vector with its class's codebook: ``fit``/``predict``/``transform``
    #: take the class labels ``y`` (see the module docstring and :func:`predict_codes`)
    needs_labels: ClassVar[bool] = False
    _parameter_constraints: ClassVar[dict] = {}

    # ------------------------------------------------------------------ contract
    def fit(self, Z, y=None) -> "CodebookEstimator":  # pragma: no cover - abstract
        raise NotImplementedError

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float32"]  # results are float32 whatever the input
        return tags

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "codebook_")

    def _check_fitted(self) -> None:
        if not hasattr(self, "codebook_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet; call fit(Z) first")

    def _validate_latents(self, Z, *, reset: bool) -> np.ndarray:
        """``Z`` as an (N, D) float32 C-contiguous array (no copy if it already is one).

        ``reset=True`` (fit): at least one sample and one feature; sets ``n_features_in_``.
        ``reset=False`` (predict, transform): D must be the fitted dimension; zero rows are
        allowed (an empty batch gives an empty result). NaN/inf, complex and sparse input raise
        scikit-learn's standard errors; torch tensors are read as NumPy.
        """
        if isinstance(Z, torch.Tensor):
            Z = Z.detach().cpu().numpy()
        if reset:
            return validate_data(self, Z, dtype=np.float32, order="C")
        self._check_fitted()
        try:
            X = validate_data(self, Z, reset=False, dtype=np.float32, order="C", ensure_min_samples=0)
        except ValueError as err:
            try:
                d = _num_features(Z)
            except TypeError:  # not 2-D: validate_data's error says so
                d = self.dim
            if d == self.dim:
                raise
            raise ValueError(f"{err} (Z has dimension {d} but the codebook was fitted on dimension {self.dim})") from err
        if X.shape[1] != self.dim:  # state set without n_features_in_ (an estimator pickled before it existed)
            raise ValueError(
                f"X has {X.shape[1]} features, but {type(self).__name__} is expecting {self.dim} features as input. "
                f"(Z has dimension {X.shape[1]} but the codebook was fitted on dimension {self.dim})"
            )
        return X

    def _check_n_samples(self, n: int) -> None:
        """A codebook of K real points (or centroids of non-empty clusters) needs K <= N."""
        if n < self.n_clusters:
            raise ValueError(f"n_samples={n} should be >= n_clusters={self.n_clusters}.")

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
        return nearest(self._validate_latents(Z, reset=False), self.codebook_)[0]

    def transform(self, Z) -> np.ndarray:
        """(N, K) float32 Euclidean distances to every codebook vector."""
        Zt = torch.from_numpy(self._validate_latents(Z, reset=False))
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

    def as_module(self, *, straight_through: bool = False):
        """This fitted codebook as a torch ``nn.Module``: ``forward(z) -> (z_q, indices)``.

        See :class:`~posthoc_vq.quantize.latent.module.CodebookModule`; indices equal
        ``predict`` for kmeans, random-prior and residual codebooks. Geodesic, hybrid and
        class-conditional codebooks are refused (their assignment is not Euclidean-nearest).
        """
        from posthoc_vq.quantize.latent.module import CodebookModule

        return CodebookModule.from_estimator(self, straight_through=straight_through)

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
        self.n_features_in_ = self.dim
