"""Convolutional VAE with a Gaussian posterior and a sigmoid decoder.

Decoded images live in ``OUTPUT_RANGE`` = [0, 1]: the decoder ends in a sigmoid.
This is the one place that states it; evaluation and quantization read it from here.

Encoder: ``len(channels)`` stride-2 convolutions (kernel 4, padding 1 halve the
size), optional BatchNorm, LeakyReLU, then two linear heads for mu and logvar.
Decoder: the mirror image with transposed convolutions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from posthoc_vq.config import VAEConfig

OUTPUT_RANGE = (0.0, 1.0)

# Widths used when a family's config leaves `channels` at the conv default.
TINY_CHANNELS = [16, 32]


@dataclass
class EncoderOutput:
    mu: torch.Tensor  # (B, D)
    logvar: torch.Tensor  # (B, D)


@dataclass
class VAEOutput:
    reconstruction: torch.Tensor  # (B, C, H, W) in OUTPUT_RANGE
    logits: torch.Tensor  # (B, C, H, W) pre-sigmoid decoder output
    mu: torch.Tensor  # (B, D)
    logvar: torch.Tensor  # (B, D)
    z: torch.Tensor  # (B, D) the latent that was decoded


@dataclass
class VAELoss:
    loss: torch.Tensor  # scalar: recon + beta * kl, mean over the batch
    recon: torch.Tensor  # scalar: reconstruction term per image (sum over pixels)
    kl: torch.Tensor  # scalar: KL(q(z|x) || N(0, I)) per image, in nats


class ConvVAE(nn.Module):
    """Convolutional VAE.

    Parameters
    ----------
    config : VAEConfig with ``image_size`` and ``in_channels`` resolved from the dataset.
    """

    def __init__(self, config: VAEConfig):
        super().__init__()
        if config.image_size is None or config.in_channels is None:
            raise ValueError("VAEConfig.image_size and in_channels must be resolved from the dataset first")
        self.config = config
        channels = list(config.channels)
        # stride-2 layers that exactly halve / double even sizes, for odd and even kernels
        k = config.kernel_size
        pad, out_pad = ((k - 2) // 2, 0) if k % 2 == 0 else ((k - 1) // 2, 1)
        norm = (lambda c: nn.BatchNorm2d(c)) if config.batch_norm else (lambda c: nn.Identity())

        layers: list[nn.Module] = []
        c_in = config.in_channels
        for c_out in channels:
            layers += [nn.Conv2d(c_in, c_out, k, stride=2, padding=pad), norm(c_out), nn.LeakyReLU(0.2)]
            c_in = c_out
        self.encoder = nn.Sequential(*layers, nn.Flatten())
        self.feature_shape = (channels[-1], config.image_size >> len(channels), config.image_size >> len(channels))
        flat = channels[-1] * self.feature_shape[1] * self.feature_shape[2]
        self.fc_mu = nn.Linear(flat, config.latent_dim)
        self.fc_logvar = nn.Linear(flat, config.latent_dim)

        self.fc_dec = nn.Linear(config.latent_dim, flat)
        layers = []
        widths = channels[::-1]
        for c_from, c_to in zip(widths, widths[1:] + [config.in_channels]):
            layers += [norm(c_from), nn.LeakyReLU(0.2), nn.ConvTranspose2d(c_from, c_to, k, stride=2, padding=pad, output_padding=out_pad)]
        self.decoder = nn.Sequential(*layers)

    # ------------------------------------------------------------------ parts
    def encode(self, x: torch.Tensor) -> EncoderOutput:
        """x: (B, C, H, W) in [0, 1] -> posterior parameters (B, D) each."""
        h = self.encoder(x)  # (B, flat)
        return EncoderOutput(mu=self.fc_mu(h), logvar=self.fc_logvar(h))

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        """z: (B, D) -> pre-sigmoid images (B, C, H, W)."""
        h = self.fc_dec(z).view(-1, *self.feature_shape)
        return self.decoder(h)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z: (B, D) -> images (B, C, H, W) in OUTPUT_RANGE."""
        return torch.sigmoid(self.decode_logits(z))

    def forward(self, x: torch.Tensor, *, sample: bool = True, generator: torch.Generator | None = None) -> VAEOutput:
        """Encode, reparameterise (or take mu when ``sample`` is False), decode."""
        post = self.encode(x)
        if sample:
            eps = torch.randn(post.mu.shape, generator=generator, dtype=post.mu.dtype, device=post.mu.device)
            z = post.mu + eps * torch.exp(0.5 * post.logvar)
        else:
            z = post.mu
        logits = self.decode_logits(z)
        return VAEOutput(torch.sigmoid(logits), logits, post.mu, post.logvar, z)

    def loss(self, x: torch.Tensor, out: VAEOutput) -> VAELoss:
        """Negative ELBO per image (up to constants), averaged over the batch.

        ``mse``: sum of squared errors over pixels (Gaussian decoder). ``bce``:
        Bernoulli cross-entropy summed over pixels. KL is summed over latent dims.
        """
        b = x.shape[0]
        logits = out.logits.float()
        if self.config.recon_loss == "mse":
            recon = F.mse_loss(torch.sigmoid(logits), x, reduction="sum") / b
        else:
            recon = F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / b
        mu, logvar = out.mu.float(), out.logvar.float()
        kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp()) / b
        return VAELoss(recon + self.config.beta * kl, recon, kl)

    # ------------------------------------------------------------------ size
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def fp32_bytes(self) -> int:
        """Bytes of all parameters and buffers stored as float32 (BatchNorm statistics included)."""
        tensors = list(self.parameters()) + [b for b in self.buffers() if b.is_floating_point()]
        return 4 * sum(t.numel() for t in tensors)


def build_vae(config: VAEConfig) -> ConvVAE:
    """Build the VAE of a config; the ``tiny`` family uses narrow channels unless set explicitly."""
    if config.family == "tiny" and "channels" not in config.model_fields_set:
        config = config.model_copy(update={"channels": list(TINY_CHANNELS)})
    return ConvVAE(config)
