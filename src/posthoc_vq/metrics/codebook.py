"""How a codebook is used: live and dead codes, entropy, perplexity, per-class usage.

Entropy is that of the empirical code distribution p_k = count_k / N, in nats
and bits; perplexity = exp(entropy in nats), the number of equally used codes
that would give the same entropy. A residual quantizer's codes (N, M) are
reported per stage, and its joint usage counts distinct code tuples.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def usage_counts(codes: np.ndarray, n_codes: int) -> np.ndarray:
    """(K,) int64 number of vectors assigned to each code; codes (N,)."""
    codes = np.asarray(codes, dtype=np.int64)
    if codes.size and (codes.min() < 0 or codes.max() >= n_codes):
        raise ValueError(f"codes must lie in [0, {n_codes})")
    return np.bincount(codes, minlength=n_codes)


def entropy_nats(counts: np.ndarray) -> float:
    """Entropy (nats) of the distribution proportional to ``counts``."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    if total == 0:
        return 0.0
    p = counts[counts > 0] / total
    return float(-(p * np.log(p)).sum())


def usage_stats(codes: np.ndarray, n_codes: int) -> dict[str, Any]:
    """Usage of a single codebook by codes (N,).

    Returns
    -------
    dict with n_vectors, n_codes, used, dead, usage_fraction, entropy_nats,
    entropy_bits, max_entropy_bits (log2 K), perplexity, top_code_share.
    """
    counts = usage_counts(codes, n_codes)
    h = entropy_nats(counts)
    used = int((counts > 0).sum())
    return {
        "n_vectors": int(counts.sum()),
        "n_codes": n_codes,
        "used": used,
        "dead": n_codes - used,
        "usage_fraction": used / n_codes,
        "entropy_nats": h,
        "entropy_bits": h / math.log(2),
        "max_entropy_bits": math.log2(n_codes),
        "perplexity": math.exp(h),
        "top_code_share": float(counts.max() / counts.sum()) if counts.sum() else 0.0,
    }


def per_class_usage(codes: np.ndarray, labels: np.ndarray, n_codes: int) -> dict[str, Any]:
    """Per class: vectors, codes used, entropy (bits); and code purity.

    Purity is the share of vectors whose code's majority class is their own class:
    1 means every code is used by a single class.
    """
    codes = np.asarray(codes, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    classes = np.unique(labels)
    table = np.zeros((n_codes, int(labels.max()) + 1 if labels.size else 1), dtype=np.int64)  # (K, C)
    np.add.at(table, (codes, labels), 1)
    per_class = {}
    for c in classes:
        col = table[:, c]
        per_class[str(int(c))] = {"n_vectors": int(col.sum()), "used": int((col > 0).sum()), "entropy_bits": entropy_nats(col) / math.log(2)}
    purity = float(table.max(1).sum() / table.sum()) if table.sum() else 0.0
    return {"classes": per_class, "purity": purity}


def codebook_usage(codes: np.ndarray, n_codes: int, labels: np.ndarray | None = None) -> dict[str, Any]:
    """Usage statistics of codes (N,) or, for residual quantizers, (N, M).

    For (N, M) codes the top-level numbers describe the first stage, ``stages``
    lists every stage, and ``distinct_tuples`` counts distinct code combinations.
    """
    codes = np.asarray(codes)
    if codes.ndim == 1:
        out = usage_stats(codes, n_codes)
        if labels is not None:
            out["per_class"] = per_class_usage(codes, labels, n_codes)
        return out
    stages = [usage_stats(codes[:, m], n_codes) for m in range(codes.shape[1])]
    out = dict(stages[0])
    out["stages"] = stages
    out["distinct_tuples"] = int(len(np.unique(codes, axis=0)))
    if labels is not None:
        out["per_class"] = per_class_usage(codes[:, 0], labels, n_codes)
    return out
