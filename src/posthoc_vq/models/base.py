"""What every VAE of our family shares: named outputs, the decoder's output range, the loss.

Decoded images live in ``OUTPUT_RANGE`` = [0, 1]: every decoder ends in a sigmoid.
This is the one place that states it; evaluation and quantization read it from here.

A model's latent is either one vector per image, ``latent_shape == (D,)``, or a grid of
vectors, ``latent_shape == (C, h, w)`` (one C-vector per position). Shapes below write
``(B, *L)`` for a batch of latents of shape ``L = latent_shape``.
"""

from __future__ import annotations

import os

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from posthoc_vq.config import VAEConfig
from posthoc_vq.errors import CheckpointError

OUTPUT_RANGE = (0.0, 1.0)


@dataclass
class EncoderOutput:
    mu: torch.Tensor  # (B, *L)
    logvar: torch.Tensor  # (B, *L)


@dataclass
class VAEOutput:
    reconstruction: torch.Tensor  # (B, C, H, W) in OUTPUT_RANGE
    logits: torch.Tensor  # (B, C, H, W) pre-sigmoid decoder output
    mu: torch.Tensor  # (B, *L)
    logvar: torch.Tensor  # (B, *L)
    z: torch.Tensor  # (B, *L) the latent that was decoded


@dataclass
class VAELoss:
    loss: torch.Tensor  # scalar: recon + beta * kl, mean over the batch
    recon: torch.Tensor  # scalar: reconstruction term per image (sum over pixels)
    kl: torch.Tensor  # scalar: KL(q(z|x) || N(0, I)) per image, in nats (sum over all latent values)


def conv_padding(kernel_size: int) -> tuple[int, int]:
    """(padding, output_padding) of stride-2 layers that exactly halve / double even sizes."""
    k = kernel_size
    return ((k - 2) // 2, 0) if k % 2 == 0 else ((k - 1) // 2, 1)


def _norm(config: VAEConfig, c: int) -> nn.Module:
    return nn.BatchNorm2d(c) if config.batch_norm else nn.Identity()


def encoder_layers(config: VAEConfig) -> list[nn.Module]:
    """``len(channels)`` stride-2 convolutions, each followed by norm and LeakyReLU:
    (B, in_channels, S, S) -> (B, channels[-1], S / 2**L, S / 2**L)."""
    k, (pad, _) = config.kernel_size, conv_padding(config.kernel_size)
    layers: list[nn.Module] = []
    c_in = config.in_channels
    for c_out in config.channels:
        layers += [nn.Conv2d(c_in, c_out, k, stride=2, padding=pad), _norm(config, c_out), nn.LeakyReLU(0.2)]
        c_in = c_out
    return layers


def decoder_layers(config: VAEConfig) -> list[nn.Module]:
    """The mirror of :func:`encoder_layers` with transposed convolutions, ending in the
    pre-sigmoid image: (B, channels[-1], s, s) -> (B, in_channels, S, S)."""
    k, (pad, out_pad) = config.kernel_size, conv_padding(config.kernel_size)
    widths = list(config.channels)[::-1]
    layers: list[nn.Module] = []
    for c_from, c_to in zip(widths, widths[1:] + [config.in_channels]):
        layers += [_norm(config, c_from), nn.LeakyReLU(0.2), nn.ConvTranspose2d(c_from, c_to, k, stride=2, padding=pad, output_padding=out_pad)]
    return layers


class VAEBase(nn.Module):
    """Gaussian-posterior VAE with a sigmoid decoder; subclasses define ``encode``,
    ``decode_logits`` and ``latent_shape``."""

    def __init__(self, config: VAEConfig):
        super().__init__()
        if config.image_size is None or config.in_channels is None:
            raise ValueError("VAEConfig.image_size and in_channels must be resolved from the dataset first")
        self.config = config

    @property
    def latent_shape(self) -> tuple[int, ...]:  # pragma: no cover - abstract
        raise NotImplementedError

    def encode(self, x: torch.Tensor) -> EncoderOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z: (B, *L) -> images (B, C, H, W) in OUTPUT_RANGE."""
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
        Bernoulli cross-entropy summed over pixels. KL is summed over every latent value
        (all dims, or all channels and positions of a latent grid).
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


def load_state_checked(module: nn.Module, state: dict[str, torch.Tensor], path: str | os.PathLike) -> None:
    """Load ``state`` into ``module``; missing, unexpected or wrongly shaped tensors raise CheckpointError naming ``path``."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        detail = "; ".join(
            part
            for part in (
                f"missing {missing[:3]}" if missing else "",
                f"unexpected {unexpected[:3]}" if unexpected else "",
                f"shape mismatch in {wrong[:3]}" if wrong else "",
            )
            if part
        )
        raise CheckpointError(f"{path} does not match the model recorded beside it ({detail}); the run directory is inconsistent")
    module.load_state_dict(state)
