"""What every VAE of our family shares: named outputs, the decoder's output range, the loss.

Decoded images live in ``OUTPUT_RANGE`` = [0, 1]: every decoder ends in a sigmoid.
This is the one place that states it; evaluation and quantization read it from here.

A model's latent is either one vector per image, ``latent_shape == (D,)``, or a grid of
vectors, ``latent_shape == (C, h, w)`` (one C-vector per position). Shapes below write
``(B, *L)`` for a batch of latents of shape ``L = latent_shape``.

A model with a trained quantizer (``config.quantizer`` vq, rvq or fsq, see
:mod:`posthoc_vq.models.quantizers`) is a VQ-VAE: the encoder gives z_e (``mu``; there is no
logvar head, no sampling and no KL term), ``quantize(z_e)`` gives z_q, and the loss is the
reconstruction plus the quantizer's commitment loss. Its latent, for every tool that encodes
and decodes (post-hoc codebooks, evaluation, weight quantization, export), is z_e, so its
``decode(z)`` quantizes z first: ``decode(encode(x).mu)`` is the model's own output.
``decode_unquantized`` is the decoder alone (fed z_q, or z_e for a look at what the quantizer does).
"""

from __future__ import annotations

import os

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from posthoc_vq.config import VAEConfig
from posthoc_vq.errors import CheckpointError
from posthoc_vq.models.quantizers import QuantizerOutput, TrainedQuantizer

OUTPUT_RANGE = (0.0, 1.0)


@dataclass
class EncoderOutput:
    mu: torch.Tensor  # (B, *L); z_e for a model with a trained quantizer
    logvar: torch.Tensor | None  # (B, *L); None for a model with a trained quantizer (no posterior variance)


@dataclass
class VAEOutput:
    reconstruction: torch.Tensor  # (B, C, H, W) in OUTPUT_RANGE
    logits: torch.Tensor  # (B, C, H, W) pre-sigmoid decoder output
    mu: torch.Tensor  # (B, *L)
    logvar: torch.Tensor | None  # (B, *L); None with a trained quantizer
    z: torch.Tensor  # (B, *L) the latent that was decoded (z_q with a trained quantizer)
    codes: torch.Tensor | None = None  # (B, [T,] [M]) int64 codes of a trained quantizer
    aux_loss: torch.Tensor | None = None  # scalar: the quantizer's weighted commitment loss per image


@dataclass
class VAELoss:
    loss: torch.Tensor  # scalar: recon + beta * kl, mean over the batch
    recon: torch.Tensor  # scalar: reconstruction term per image (sum over pixels)
    kl: torch.Tensor  # scalar: KL(q(z|x) || N(0, I)) per image, in nats (sum over all latent values); 0 with a trained quantizer
    commitment: torch.Tensor | None = None  # scalar: weighted commitment loss per image (trained quantizer only; part of ``loss``)


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
    """Gaussian-posterior VAE with a sigmoid decoder, or a VQ-VAE with ``quantizer``; subclasses
    define ``encode``, ``decode_logits`` and ``latent_shape``, and set ``self.quantizer``
    (:func:`~posthoc_vq.models.quantizers.build_quantizer`, None for a continuous VAE)."""

    quantizer: TrainedQuantizer | None  # no class-level default: it would hide the registered submodule
    #: True for a network whose latent grid follows the image (any size); ``latent_shape`` is then None
    fully_convolutional = False

    def __init__(self, config: VAEConfig):
        super().__init__()
        if (config.image_size is None and not self.fully_convolutional) or config.in_channels is None:
            raise ValueError("VAEConfig.image_size and in_channels must be resolved from the dataset first")
        self.config = config
        self.quantizer = None  # subclasses replace it with build_quantizer(config)

    @property
    def quantized(self) -> bool:
        """Whether the model has a trained quantizer."""
        return self.quantizer is not None

    @property
    def latent_shape(self) -> tuple[int, ...]:  # pragma: no cover - abstract
        raise NotImplementedError

    def encode(self, x: torch.Tensor) -> EncoderOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def to_image(self, logits: torch.Tensor) -> torch.Tensor:
        """Images in OUTPUT_RANGE from the decoder's raw output: a sigmoid for this family (a pretrained
        network without an output activation clamps instead)."""
        return torch.sigmoid(logits)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z: (B, *L) -> images (B, C, H, W) in OUTPUT_RANGE. With a trained quantizer z is z_e and is
        quantized first (a lookup that changes no state), so this is the model's own output."""
        if self.quantizer is not None:
            z = self.quantizer.lookup(z)
        return self.to_image(self.decode_logits(z))

    def decode_unquantized(self, z: torch.Tensor) -> torch.Tensor:
        """The decoder alone: z (B, *L) -> images (B, C, H, W) in OUTPUT_RANGE (``decode`` for a continuous VAE)."""
        return self.to_image(self.decode_logits(z))

    def quantize(self, z: torch.Tensor) -> QuantizerOutput:
        """The trained quantizer on z_e (B, *L): z_q, codes, commitment loss. Training mode updates its codebooks."""
        if self.quantizer is None:
            raise ValueError(f"{type(self).__name__} has no trained quantizer (model.quantizer is 'none')")
        return self.quantizer(z)

    def forward(self, x: torch.Tensor, *, sample: bool = True, generator: torch.Generator | None = None) -> VAEOutput:
        """Encode, reparameterise (or take mu when ``sample`` is False), decode. With a trained
        quantizer: encode to z_e, quantize (``sample`` and ``generator`` are unused), decode z_q."""
        if self.quantizer is not None:
            z_e = self.encode(x).mu
            q = self.quantizer(z_e)
            logits = self.decode_logits(q.z_q)
            return VAEOutput(torch.sigmoid(logits), logits, z_e, None, q.z_q, codes=q.codes, aux_loss=q.aux_loss)
        post = self.encode(x)
        if sample:
            # drawn where the generator lives (a CPU generator: the same noise on every device), then moved
            device = post.mu.device if generator is None else generator.device
            eps = torch.randn(post.mu.shape, generator=generator, dtype=post.mu.dtype, device=device).to(post.mu.device)
            z = post.mu + eps * torch.exp(0.5 * post.logvar)
        else:
            z = post.mu
        logits = self.decode_logits(z)
        return VAEOutput(torch.sigmoid(logits), logits, post.mu, post.logvar, z)

    def loss(self, x: torch.Tensor, out: VAEOutput) -> VAELoss:
        """Negative ELBO per image (up to constants), averaged over the batch.

        ``mse``: sum of squared errors over pixels (Gaussian decoder). ``bce``:
        Bernoulli cross-entropy summed over pixels. KL is summed over every latent value
        (all dims, or all channels and positions of a latent grid). With a trained quantizer:
        reconstruction plus the commitment loss (``out.aux_loss``), no KL term.
        """
        b = x.shape[0]
        logits = out.logits.float()
        if self.config.recon_loss == "mse":
            recon = F.mse_loss(self.to_image(logits), x, reduction="sum") / b
        else:
            recon = F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / b
        if self.quantizer is not None:
            commitment = out.aux_loss.float()
            return VAELoss(recon + commitment, recon, torch.zeros((), dtype=recon.dtype), commitment)
        mu, logvar = out.mu.float(), out.logvar.float()
        kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp()) / b
        return VAELoss(recon + self.config.beta * kl, recon, kl)

    # ------------------------------------------------------------------ size
    def num_parameters(self) -> int:
        """Learned values: the parameters, plus a trained quantizer's codebook entries (learned by EMA, not by gradient)."""
        return sum(p.numel() for p in self.parameters()) + (self.quantizer.codebook_numel() if self.quantizer is not None else 0)

    def fp32_bytes(self) -> int:
        """Bytes of every floating-point tensor of the state dict stored as float32 (BatchNorm statistics and
        a quantizer's codebooks and EMA statistics included)."""
        return 4 * sum(t.numel() for t in self.state_dict().values() if t.is_floating_point())


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
