"""Evaluation of trained runs and their codebooks on held-out data, with a sanity audit."""

from posthoc_vq.audit import audit
from posthoc_vq.evaluation.codebook import evaluate_codebook
from posthoc_vq.evaluation.reconstruction import decode, evaluate_continuous, image_quality

__all__ = ["audit", "decode", "evaluate_codebook", "evaluate_continuous", "image_quality"]
