"""Convolutional VAE with a spatial latent: a (D, h, w) grid, one D-vector per position.

The encoder is :class:`~posthoc_vq.models.vae.ConvVAE`'s convolution stack without the
flatten; 3x3 convolutions map its (channels[-1], h, w) features to mu and logvar of
D = ``config.latent_dim`` channels each, with h = w = image_size / 2**len(channels)
(7 x 7 on 28 x 28 images with two stages). The decoder starts with a 3x3 convolution back
to channels[-1] and mirrors the encoder with transposed convolutions. Decoded images lie in
``OUTPUT_RANGE`` = [0, 1].

Quantizing each position's D-vector against one shared codebook of K entries turns the
model into a tokenizer: h * w codes of log2(K) bits per image (VQGAN-style), see
:mod:`posthoc_vq.quantize.codebooks`. A trained quantizer (``config.quantizer``) does the same
during training, per position (no logvar head then).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from posthoc_vq.config import VAEConfig
from posthoc_vq.models.base import EncoderOutput, VAEBase, decoder_layers, encoder_layers
from posthoc_vq.models.quantizers import build_quantizer


class SpatialVAE(VAEBase):
    """Convolutional VAE with a (D, h, w) latent grid.

    Parameters
    ----------
    config : VAEConfig of family ``spatial`` with ``image_size`` and ``in_channels`` resolved
        from the dataset; ``latent_dim`` is D, the channels of the grid (the size of a token).
    """

    def __init__(self, config: VAEConfig):
        super().__init__(config)
        channels = list(config.channels)
        D = config.latent_dim
        self.encoder = nn.Sequential(*encoder_layers(config))
        side = config.image_size >> len(channels)
        self.grid = (side, side)
        self.conv_mu = nn.Conv2d(channels[-1], D, 3, padding=1)
        self.conv_logvar = nn.Conv2d(channels[-1], D, 3, padding=1) if config.quantizer == "none" else None

        self.conv_dec = nn.Conv2d(D, channels[-1], 3, padding=1)
        self.decoder = nn.Sequential(*decoder_layers(config))
        self.quantizer = build_quantizer(config)

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """(D, h, w)"""
        return (self.config.latent_dim, *self.grid)

    def encode(self, x: torch.Tensor) -> EncoderOutput:
        """x: (B, C, H, W) in [0, 1] -> posterior parameters (B, D, h, w) each (z_e and no logvar with a trained quantizer)."""
        h = self.encoder(x)  # (B, channels[-1], h, w)
        return EncoderOutput(mu=self.conv_mu(h), logvar=self.conv_logvar(h) if self.conv_logvar is not None else None)

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        """z: (B, D, h, w) -> pre-sigmoid images (B, C, H, W)."""
        if z.shape[1:] != self.latent_shape:
            raise ValueError(f"latents must be (B, {', '.join(map(str, self.latent_shape))}), got {tuple(z.shape)}")
        return self.decoder(self.conv_dec(z))
