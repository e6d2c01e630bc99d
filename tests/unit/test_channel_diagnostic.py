"""The per-channel diagnostic's numbers against direct computations."""

import numpy as np
import pytest

from posthoc_vq.evaluation.channels import channel_errors, effective_dimension


def test_effective_dimension_of_known_spectra():
    rng = np.random.default_rng(0)
    iso = rng.standard_normal((200_000, 8))
    d = effective_dimension(iso)
    assert d["participation_ratio"] == pytest.approx(8, rel=0.02) and d["dims_90"] in (7, 8) and d["dims_99"] == 8
    scales = np.array([10.0, 1.0, 1.0, 0.1])
    x = rng.standard_normal((200_000, 4)) * scales @ np.linalg.qr(rng.standard_normal((4, 4)))[0]  # rotated: PCA, not per channel
    lam = scales**2
    d = effective_dimension(x)
    assert d["participation_ratio"] == pytest.approx(lam.sum() ** 2 / (lam**2).sum(), rel=0.02)
    assert d["dims_90"] == 1 and d["dims_99"] == 2  # cumulative 0.980, 0.990, 0.99990, 1
    assert np.allclose(sorted(d["eigenvalues"], reverse=True), lam, rtol=0.03)


def test_channel_errors_shares():
    z = np.zeros((4, 3))
    q = np.array([[1.0, 0, 0], [1.0, 0, 0], [0, 2.0, 0], [0, 0, 0]])
    e = channel_errors(z, q)
    assert e["mse"] == pytest.approx([0.5, 1.0, 0.0]) and e["share"] == pytest.approx([1 / 3, 2 / 3, 0.0]) and e["total_mse"] == pytest.approx(1.5)
