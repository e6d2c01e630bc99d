"""VAE models with named outputs: one latent vector per image (ConvVAE) or a latent grid (SpatialVAE),
continuous or with a trained quantizer (VQ, residual VQ, FSQ; :mod:`posthoc_vq.models.quantizers`)."""

from posthoc_vq.models.base import OUTPUT_RANGE, EncoderOutput, VAEBase, VAELoss, VAEOutput, load_state_checked
from posthoc_vq.models.quantizers import QuantizerOutput, TrainedQuantizer, build_quantizer
from posthoc_vq.models.spatial import SpatialVAE
from posthoc_vq.models.vae import ConvVAE, build_vae, latent_shape_of

__all__ = ["OUTPUT_RANGE", "ConvVAE", "EncoderOutput", "SpatialVAE", "VAEBase", "VAELoss", "VAEOutput", "QuantizerOutput", "TrainedQuantizer", "build_quantizer", "build_vae", "latent_shape_of", "load_state_checked"]
