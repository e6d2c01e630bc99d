"""Convolutional VAE with one latent vector per image, a Gaussian posterior and a sigmoid decoder.

Encoder: ``len(channels)`` stride-2 convolutions (kernel 4, padding 1 halve the
size), optional BatchNorm, LeakyReLU, then two linear heads for mu and logvar.
Decoder: the mirror image with transposed convolutions. Decoded images lie in
``OUTPUT_RANGE`` = [0, 1] (see ``base.py``). With a trained quantizer (``config.quantizer``)
there is no logvar head and ``self.quantizer`` sits between the mu head (z_e) and the decoder. The spatial-latent variant of the family
lives in ``spatial.py``; :func:`build_vae` builds either from a :class:`VAEConfig`.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from posthoc_vq.config import VAEConfig
from posthoc_vq.models.base import OUTPUT_RANGE, EncoderOutput, VAEBase, VAELoss, VAEOutput, decoder_layers, encoder_layers
from posthoc_vq.models.quantizers import build_quantizer

# Widths used when a family's config leaves `channels` at the conv default.
TINY_CHANNELS = [16, 32]

__all__ = ["OUTPUT_RANGE", "TINY_CHANNELS", "ConvVAE", "EncoderOutput", "VAELoss", "VAEOutput", "build_vae", "latent_shape_of"]


class ConvVAE(VAEBase):
    """Convolutional VAE with a (D,) latent, D = ``config.latent_dim``.

    Parameters
    ----------
    config : VAEConfig with ``image_size`` and ``in_channels`` resolved from the dataset.
    """

    def __init__(self, config: VAEConfig):
        super().__init__(config)
        channels = list(config.channels)
        self.encoder = nn.Sequential(*encoder_layers(config), nn.Flatten())
        self.feature_shape = (channels[-1], config.image_size >> len(channels), config.image_size >> len(channels))
        flat = channels[-1] * self.feature_shape[1] * self.feature_shape[2]
        self.fc_mu = nn.Linear(flat, config.latent_dim)
        self.fc_logvar = nn.Linear(flat, config.latent_dim) if config.quantizer == "none" else None

        self.fc_dec = nn.Linear(config.latent_dim, flat)
        self.decoder = nn.Sequential(*decoder_layers(config))
        self.quantizer = build_quantizer(config)

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """(D,)"""
        return (self.config.latent_dim,)

    def encode(self, x: torch.Tensor) -> EncoderOutput:
        """x: (B, C, H, W) in [0, 1] -> posterior parameters (B, D) each (z_e and no logvar with a trained quantizer)."""
        h = self.encoder(x)  # (B, flat)
        return EncoderOutput(mu=self.fc_mu(h), logvar=self.fc_logvar(h) if self.fc_logvar is not None else None)

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        """z: (B, D) -> pre-sigmoid images (B, C, H, W)."""
        h = self.fc_dec(z).view(-1, *self.feature_shape)
        return self.decoder(h)


def resolved_channels(config: VAEConfig) -> VAEConfig:
    """The config with the ``tiny`` family's narrow channels filled in unless set explicitly."""
    if config.family == "tiny" and "channels" not in config.model_fields_set:
        return config.model_copy(update={"channels": list(TINY_CHANNELS)})
    return config


def latent_shape_of(config: VAEConfig) -> tuple[int, ...]:
    """Latent shape of a resolved config: (D,), (D, h, w) for the spatial family, or None for a fully
    convolutional network (``taef2``), whose grid follows the image."""
    if config.family == "taef2":
        return None
    if config.family != "spatial":
        return (config.latent_dim,)
    if config.image_size is None:
        raise ValueError("the spatial family's latent grid needs image_size, resolved from the dataset")
    side = config.image_size >> len(config.channels)
    return (config.latent_dim, side, side)


def build_vae(config: VAEConfig) -> VAEBase:
    """Build the model of a config: :class:`ConvVAE` (``conv``, ``tiny``), ``SpatialVAE`` (``spatial``), or the
    pretrained network ``TAEF2`` (``taef2``, :mod:`posthoc_vq.autoencoders.taef2`; its weights come from an imported run)."""
    config = resolved_channels(config)
    if config.family == "taef2":
        from posthoc_vq.autoencoders.taef2 import TAEF2

        return TAEF2(config)
    if config.family == "spatial":
        from posthoc_vq.models.spatial import SpatialVAE

        return SpatialVAE(config)
    return ConvVAE(config)
