"""Class-conditional codebooks: one k-means codebook per class, the class label sent as side information.

A vector of class c is coded by the nearest vector of class c's own codebook, so the receiver
needs the class label too: it is part of the code and counted in the rate. The total budget
``n_clusters`` = K codes is split equally over the n_classes classes of the fit set:

    K_c = floor(K / n_classes) codes per class,

each class's codebook a :class:`~posthoc_vq.quantize.latent.kmeans.KMeans` fitted on that class's
vectors alone. The class codebooks are stacked in class order into one ``codebook_`` of
n_classes * K_c vectors: the global code of local code j of the class at position i of
``classes_`` is i * K_c + j, so ``inverse_transform`` decodes global codes with no label.
A vector costs log2(n_classes) + log2(K_c) bits (label plus local code) = log2(n_classes * K_c)
<= log2(K): at K = 1024 and 10 classes, K_c = 102 and 9.99 bits, at most the 10 bits of a global
K = 1024 codebook, so the two compare at equal (or fewer) total bits.
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any

import numpy as np
import torch
from sklearn.base import _fit_context
from sklearn.utils._param_validation import Interval

from posthoc_vq.quantize.latent.base import ClassLabelError, CodebookEstimator, missing_labels_error, nearest, squared_distances
from posthoc_vq.quantize.latent.kmeans import KMeans


class ClassConditionalKMeans(CodebookEstimator):
    """One k-means codebook per class of the fit set; every call takes the vectors' class labels.

    Parameters
    ----------
    n_clusters : total budget K of codes; each of the n_classes classes in the fit set gets
        K_c = floor(K / n_classes) of them (the K - n_classes * K_c left over are not used).
    max_iter, tol, init_sample_size : passed to each class's :class:`KMeans`.
    random_state : the class at position i of ``classes_`` (sorted labels) uses ``random_state + i``.

    Attributes
    ----------
    classes_ : (n_classes,) int64 sorted class labels of the fit set; position i owns codes
        [i * K_c, (i + 1) * K_c).
    codes_per_class_ : int, K_c.
    class_counts_ : (n_classes,) int64 fitted vectors per class.
    codebook_ : (n_classes * K_c, D) float32, the class codebooks stacked in class order.
    labels_ : (N,) int64 global code of each fitted point (always in its class's block).
    inertia_ : float, summed squared distances of the fitted points to their codes (all classes);
        ``inertia_per_class_`` per class.
    n_iter_ : int, the most Lloyd iterations any class ran; ``n_reseeded_`` empty clusters re-seeded, all classes.

    Notes
    -----
    ``fit(Z, y)``, ``predict(Z, y)``, ``transform(Z, y)``, ``quantize(Z, y)``, ``fit_predict`` and
    ``fit_transform`` need ``y`` (N,) integer class labels, one per vector (for latent grids, each
    token carries its image's label). Without them, with the wrong length, with a class absent from
    the fit set (at predict time) or with a class of fewer than K_c vectors (at fit time) they raise
    :class:`~posthoc_vq.quantize.latent.base.ClassLabelError` naming the class, its count and what
    to do. ``transform(Z, y)`` is (N, n_classes * K_c): Euclidean distances to the codes of each
    vector's own class and +inf to every other class's codes, so ``transform(Z, y).argmin(-1) ==
    predict(Z, y)``. ``inverse_transform(codes)`` needs no labels.

    scikit-learn's ``check_estimator`` calls ``predict``/``transform`` without labels, so the
    checks doing that fail by design (declared in ``tests/contract/test_sklearn_conformance.py``).
    """

    method = "class-conditional"
    needs_labels = True

    _parameter_constraints: dict = {
        "n_clusters": [Interval(Integral, 1, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "init_sample_size": [Interval(Integral, 1, None, closed="left"), None],
        "random_state": [Interval(Integral, 0, None, closed="left")],  # class i seeds numpy.random.default_rng(random_state + i)
    }

    def __init__(self, n_clusters: int = 1024, *, max_iter: int = 100, tol: float = 1e-4, init_sample_size: int | None = None, random_state: int = 0):
        self.n_clusters = n_clusters
        self.max_iter = max_iter
        self.tol = tol
        self.init_sample_size = init_sample_size
        self.random_state = random_state

    # ------------------------------------------------------------------ labels
    def _labels(self, y: Any, n: int, call: str) -> np.ndarray:
        """``y`` as (n,) int64 class labels (integers, or floats with whole values); missing, misshapen or other labels are a ClassLabelError."""
        if y is None:
            raise missing_labels_error(self.method, call)
        if isinstance(y, torch.Tensor):
            y = y.detach().cpu().numpy()
        y = np.asarray(y)
        if y.shape != (n,):
            raise ClassLabelError(
                f"{call}: y has shape {y.shape} but Z has {n} vectors; pass one class label per vector, y of shape ({n},) "
                "(for a latent grid, each token carries its image's label: LatentSet.token_labels())"
            )
        whole = np.issubdtype(y.dtype, np.integer) or (np.issubdtype(y.dtype, np.floating) and bool(np.all(np.isfinite(y) & (y == np.round(y)))))
        if y.size and not whole:
            raise ClassLabelError(f"{call}: class labels must be integers, got dtype {y.dtype}" + (" with non-integer values" if np.issubdtype(y.dtype, np.floating) else ""))
        return y.astype(np.int64, copy=False)

    def _positions(self, y: np.ndarray) -> np.ndarray:
        """(N,) position in ``classes_`` of each label; a class absent from the fit set is a ClassLabelError."""
        pos = np.searchsorted(self.classes_, y)
        known = (pos < len(self.classes_)) & (self.classes_[np.minimum(pos, len(self.classes_) - 1)] == y)
        if not known.all():
            absent, counts = np.unique(y[~known], return_counts=True)
            listed = ", ".join(f"class {c} ({k} vector{'s' * (k != 1)})" for c, k in zip(absent.tolist(), counts.tolist()))
            raise ClassLabelError(
                f"{listed}: not in the fit set of this class-conditional codebook, which has codes for classes {self.classes_.tolist()} only; "
                "drop these vectors, or refit the codebook on a fit set that contains the class (lowering K if the class is small)"
            )
        return pos

    def _blocks(self, pos: np.ndarray):
        """(class position i, row indices of that class) for every class present in ``pos``, in class order."""
        order = np.argsort(pos, kind="stable")
        present, starts = np.unique(pos[order], return_index=True)
        ends = np.append(starts[1:], len(order))
        for i, s, e in zip(present.tolist(), starts.tolist(), ends.tolist()):
            yield i, order[s:e]

    def _block(self, i: int) -> np.ndarray:
        """(K_c, D) codebook of the class at position ``i``."""
        k = self.codes_per_class_
        return self.codebook_[i * k : (i + 1) * k]

    # ------------------------------------------------------------------ contract
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, Z, y=None) -> "ClassConditionalKMeans":
        """Fit one k-means codebook of K_c = floor(K / n_classes) codes on each class's vectors of ``Z`` (N, D).

        ``y`` (N,) integer class labels, required. Raises ClassLabelError for missing or
        misshapen labels, K < n_classes, or a class with fewer than K_c vectors.
        """
        Z = self._validate_latents(Z, reset=True)
        y = self._labels(y, len(Z), "fit(Z, y=labels)")
        self._check_n_samples(len(Z))
        K = int(self.n_clusters)
        classes, counts = np.unique(y, return_counts=True)
        k = K // len(classes)
        if k < 1:
            raise ClassLabelError(
                f"K={K} codes cannot be split over the {len(classes)} classes of the fit set (K_c = floor(K / n_classes) = 0 codes per class); "
                f"raise K to at least {len(classes)}, or drop classes from the fit set"
            )
        small = counts < k
        if small.any():
            listed = ", ".join(f"class {c} has {n} vector{'s' * (n != 1)}" for c, n in zip(classes[small].tolist(), counts[small].tolist()))
            raise ClassLabelError(
                f"{listed}, fewer than its K_c = floor(K / n_classes) = floor({K} / {len(classes)}) = {k} codes per class; "
                f"lower K to at most {len(classes) * int(counts.min())}, or drop the class from the fit set"
            )
        books, inertia, n_iter, reseeded = [], [], [], 0
        labels = np.empty(len(Z), dtype=np.int64)
        pos = np.searchsorted(classes, y)
        for i, rows in self._blocks(pos):
            km = KMeans(k, max_iter=self.max_iter, tol=self.tol, init_sample_size=self.init_sample_size, random_state=self.random_state + i).fit(Z[rows])
            books.append(km.codebook_)
            labels[rows] = km.labels_ + i * k
            inertia.append(float(km.inertia_))
            n_iter.append(km.n_iter_)
            reseeded += km.n_reseeded_
        self.classes_, self.class_counts_, self.codes_per_class_ = classes.astype(np.int64), counts.astype(np.int64), k
        self.codebook_ = np.ascontiguousarray(np.concatenate(books), dtype=np.float32)  # (n_classes * K_c, D)
        self.labels_ = labels
        self.inertia_per_class_, self.inertia_ = inertia, float(sum(inertia))
        self.n_iter_, self.n_reseeded_ = max(n_iter), reseeded
        return self

    @property
    def n_classes(self) -> int:
        self._check_fitted()
        return len(self.classes_)

    @property
    def bits_per_vector(self) -> float:
        """log2(n_classes) + log2(K_c): the class label (side information the receiver needs) plus the code within the class."""
        self._check_fitted()
        return math.log2(self.n_classes) + math.log2(self.codes_per_class_)

    def predict(self, Z, y=None) -> np.ndarray:
        """(N,) int64 global code of each vector: its class's block offset plus the nearest code of that class's codebook."""
        Z = self._validate_latents(Z, reset=False)
        pos = self._positions(self._labels(y, len(Z), "predict(Z, y=labels)"))
        codes = np.empty(len(Z), dtype=np.int64)
        for i, rows in self._blocks(pos):
            codes[rows] = nearest(Z[rows], self._block(i))[0] + i * self.codes_per_class_
        return codes

    def transform(self, Z, y=None) -> np.ndarray:
        """(N, n_classes * K_c) float32 Euclidean distances to the codes of each vector's class, +inf to the other classes' codes."""
        Z = self._validate_latents(Z, reset=False)
        pos = self._positions(self._labels(y, len(Z), "transform(Z, y=labels)"))
        k = self.codes_per_class_
        out = np.full((len(Z), self.n_codes), np.inf, dtype=np.float32)
        for i, rows in self._blocks(pos):
            out[rows, i * k : (i + 1) * k] = squared_distances(torch.from_numpy(Z[rows]), torch.from_numpy(self._block(i))).sqrt_().numpy()
        return out

    def quantize(self, Z, y=None) -> np.ndarray:
        """(N, D) quantized latents: ``inverse_transform(predict(Z, y))``."""
        return self.inverse_transform(self.predict(Z, y))

    def fit_predict(self, Z, y=None, **kwargs) -> np.ndarray:
        """``fit(Z, y).labels_`` (scikit-learn's default drops ``y``, which this codebook needs)."""
        return self.fit(Z, y, **kwargs).labels_

    def fit_transform(self, Z, y=None, **kwargs) -> np.ndarray:
        """``fit(Z, y).transform(Z, y)``."""
        return self.fit(Z, y, **kwargs).transform(Z, y)

    # ------------------------------------------------------------------ persistence
    def state_info(self) -> dict[str, Any]:
        """The class list (position i owns codes [i * K_c, (i + 1) * K_c)), K_c, fit counts and inertia (JSON-able)."""
        self._check_fitted()
        return {
            "classes": self.classes_.tolist(),
            "codes_per_class": int(self.codes_per_class_),
            "class_counts": None if getattr(self, "class_counts_", None) is None else self.class_counts_.tolist(),
            "inertia_per_class": getattr(self, "inertia_per_class_", None),
            "n_iter": getattr(self, "n_iter_", None),
        }

    def load_state(self, tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> None:
        """Codebook from ``tensors``, classes and K_c from ``info``; a codebook of another size than n_classes * K_c is a ValueError."""
        classes = np.asarray(info["classes"], dtype=np.int64)
        k = int(info["codes_per_class"])
        if classes.ndim != 1 or len(classes) == 0 or k < 1 or np.any(np.diff(classes) <= 0):
            raise ValueError(f"state classes {info['classes']} must be a non-empty sorted list of distinct labels and codes_per_class ({k}) >= 1")
        codebook = tensors["codebook"]
        if codebook.shape[0] != len(classes) * k:
            raise ValueError(f"codebook has {codebook.shape[0]} vectors but {len(classes)} classes x codes_per_class {k} = {len(classes) * k}")
        super().load_state(tensors, info)
        self.classes_, self.codes_per_class_ = classes, k
        if info.get("class_counts") is not None:
            self.class_counts_ = np.asarray(info["class_counts"], dtype=np.int64)
        for key in ("inertia_per_class", "n_iter"):
            if info.get(key) is not None:
                setattr(self, key + "_", info[key])
        if getattr(self, "inertia_per_class_", None) is not None:
            self.inertia_ = float(sum(self.inertia_per_class_))
