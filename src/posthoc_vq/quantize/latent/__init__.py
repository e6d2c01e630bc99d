"""Quantizers (contents filled in elsewhere)."""
