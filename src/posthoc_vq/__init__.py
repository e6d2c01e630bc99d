"""posthoc-vq: post-hoc latent and weight quantization of trained VAEs."""

__version__ = "0.1.0"
