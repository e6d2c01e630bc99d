"""VAE models with named outputs."""

from posthoc_vq.models.vae import OUTPUT_RANGE, ConvVAE, EncoderOutput, VAELoss, VAEOutput, build_vae

__all__ = ["OUTPUT_RANGE", "ConvVAE", "EncoderOutput", "VAELoss", "VAEOutput", "build_vae"]
