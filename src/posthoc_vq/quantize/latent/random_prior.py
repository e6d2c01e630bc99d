"""Random-prior codebook: K draws from the VAE prior N(0, I), nearest-neighbour assignment.

The zero-effort baseline: it uses no data at all (``fit`` only reads D), so every
learned codebook has to beat it to be worth its fitting time.
"""

from __future__ import annotations

import numpy as np

from posthoc_vq.quantize.latent.base import CodebookEstimator, as_latents


class RandomPrior(CodebookEstimator):
    """K vectors drawn from N(0, scale^2 I).

    Parameters
    ----------
    n_clusters : K, number of codebook vectors.
    scale : standard deviation of the draws (1 = the VAE prior).
    random_state : seed of the draws.
    """

    method = "random-prior"

    def __init__(self, n_clusters: int = 1024, *, scale: float = 1.0, random_state: int = 0):
        self.n_clusters = n_clusters
        self.scale = scale
        self.random_state = random_state

    def fit(self, Z, y=None) -> "RandomPrior":
        dim = as_latents(Z).shape[1]
        rng = np.random.default_rng(self.random_state)
        self.codebook_ = (self.scale * rng.standard_normal((self.n_clusters, dim))).astype(np.float32)  # (K, D)
        return self
