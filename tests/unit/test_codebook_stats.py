"""Code usage statistics against scipy and hand-computed cases."""

import math

import numpy as np
import pytest
from scipy.stats import entropy

from posthoc_vq.metrics.codebook import codebook_usage, per_class_usage, usage_stats


def test_usage_entropy_perplexity_against_scipy():
    rng = np.random.default_rng(0)
    codes = rng.zipf(1.5, 5000) % 100
    s = usage_stats(codes, 128)
    counts = np.bincount(codes, minlength=128)
    assert s["used"] == int((counts > 0).sum()) and s["dead"] == 128 - s["used"]
    assert s["entropy_nats"] == pytest.approx(entropy(counts), rel=1e-12)
    assert s["entropy_bits"] == pytest.approx(entropy(counts, base=2), rel=1e-12)
    assert s["perplexity"] == pytest.approx(math.exp(entropy(counts)), rel=1e-12)
    assert s["n_vectors"] == 5000 and s["max_entropy_bits"] == 7.0


def test_uniform_usage_has_perplexity_k_and_single_code_has_zero_entropy():
    assert usage_stats(np.arange(64).repeat(3), 64)["perplexity"] == pytest.approx(64)
    one = usage_stats(np.zeros(10, int), 8)
    assert (one["entropy_bits"], one["used"], one["dead"], one["top_code_share"]) == (0.0, 1, 7, 1.0)


def test_per_class_usage_and_purity_by_hand():
    codes = np.array([0, 0, 1, 1, 1, 2])
    labels = np.array([0, 0, 0, 1, 1, 1])
    out = per_class_usage(codes, labels, 4)
    assert out["classes"]["0"] == {"n_vectors": 3, "used": 2, "entropy_bits": pytest.approx(entropy([2, 1], base=2))}
    assert out["classes"]["1"]["used"] == 2
    assert out["purity"] == pytest.approx((2 + 2 + 1) / 6)  # code 1 is 2/3 class 1


def test_residual_codes_report_stages_and_distinct_tuples():
    codes = np.array([[0, 1], [0, 1], [1, 1], [2, 0]])
    out = codebook_usage(codes, 4)
    assert [s["used"] for s in out["stages"]] == [3, 2]
    assert out["distinct_tuples"] == 3 and out["used"] == 3


def test_out_of_range_codes_are_rejected():
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        usage_stats(np.array([0, 4]), 4)
