"""Evaluation of trained runs (and, later, of their codebooks) on held-out data."""

from posthoc_vq.evaluation.reconstruction import decode, encode_mu, evaluate_continuous, image_quality

__all__ = ["decode", "encode_mu", "evaluate_continuous", "image_quality"]
