"""Random-prior codebook: K draws from the VAE prior N(0, I), nearest-neighbour assignment.

The zero-effort baseline: its codebook uses no data at all (only D), so every learned
codebook has to beat it to be worth its fitting time.
"""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
from sklearn.base import _fit_context
from sklearn.utils._param_validation import Interval

from posthoc_vq.quantize.latent.base import CodebookEstimator, nearest


class RandomPrior(CodebookEstimator):
    """K vectors drawn from N(0, scale^2 I).

    Parameters
    ----------
    n_clusters : K, number of codebook vectors.
    scale : standard deviation of the draws (1 = the VAE prior).
    random_state : seed of the draws.

    The codebook depends only on D, so K may exceed the number of fitted points. Like every
    codebook (and scikit-learn clusterer), ``fit`` sets ``labels_`` (N,) int64, the nearest code
    of each fitted point: one assignment pass, the whole cost of fitting this baseline.
    """

    method = "random-prior"

    _parameter_constraints: dict = {
        "n_clusters": [Interval(Integral, 1, None, closed="left")],
        "scale": [Interval(Real, 0, None, closed="neither")],
        "random_state": [Interval(Integral, 0, None, closed="left"), None],  # a numpy.random.default_rng seed
    }

    def __init__(self, n_clusters: int = 1024, *, scale: float = 1.0, random_state: int = 0):
        self.n_clusters = n_clusters
        self.scale = scale
        self.random_state = random_state

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, Z, y=None) -> "RandomPrior":
        Z = self._validate_latents(Z, reset=True)
        rng = np.random.default_rng(self.random_state)
        self.codebook_ = (self.scale * rng.standard_normal((self.n_clusters, Z.shape[1]))).astype(np.float32)  # (K, D)
        self.labels_ = nearest(Z, self.codebook_)[0]
        return self
