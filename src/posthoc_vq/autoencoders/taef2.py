"""TAEF2: the tiny autoencoder distilled to the FLUX.2 latent space (MIT, madebyollin/taesd), rebuilt here.

The network is written from the description in ``shared/models/taef2/SOURCE.md`` (the weights'
state-dict layout), not copied from its repository. Both halves are flat ``nn.Sequential`` stacks
whose indices match the upstream state dicts, so the two ``.pth`` files load with ``strict`` keys.

* Input: RGB images in [0, 1], (B, 3, H, W) with H and W multiples of 8 (``DOWNSAMPLING``).
* Latent: (B, 32, H/8, W/8), one 32-vector (token) per 8x8 pixel block, neither scaled nor shifted.
* The decoder starts with the soft clamp ``3 * tanh(z / 3)`` and has no output activation: its raw
  output runs slightly outside [0, 1] (-0.15 to 1.17 on Kodak). :meth:`TAEF2.decode` clamps it to
  [0, 1], the image the model gives; that is the stated conversion to this package's
  ``OUTPUT_RANGE`` (``decode_raw`` is the network alone).
* GroupNorm layers take statistics over the whole feature map, so the latents of a crop differ from
  the same region of the whole image's latents: encode whole images, never tiles.

:func:`load_taef2_weights` reads the upstream float16 state dicts (``torch.load(weights_only=True)``,
never pickle code), checks every key and shape against this module and converts them to float32;
:func:`posthoc_vq.api.import_pretrained` turns them into an ordinary run directory.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from posthoc_vq.config import VAEConfig
from posthoc_vq.errors import ConfigError
from posthoc_vq.models.base import EncoderOutput, VAEBase

LATENT_CHANNELS = 32
DOWNSAMPLING = 8
WIDTH = 64
WEIGHT_FILES = {"encoder": "taef2_encoder.pth", "decoder": "taef2_decoder.pth"}
SOURCE = {
    "name": "taef2",
    "description": "Tiny AutoEncoder for the FLUX.2 latent space (taef2), by Ollin Boer Bohan",
    "repository": "https://github.com/madebyollin/taesd",
    "commit": "5cccb12dc72074a4be35680c3b108548a7c69978",
    "licence": "MIT",
    "copyright": "Copyright (c) 2023 Ollin Boer Bohan",
}


class PretrainedWeightsError(ConfigError):
    """Weight files that are missing, unreadable or not the network's (an input error: exit 2)."""


def taef2_config() -> VAEConfig:
    """The fixed :class:`~posthoc_vq.config.VAEConfig` of TAEF2 (family ``taef2``: fully convolutional, any H, W multiple of 8)."""
    return VAEConfig(family="taef2", latent_dim=LATENT_CHANNELS, channels=[WIDTH], kernel_size=3, batch_norm=False, recon_loss="mse",
                     beta=0.0, in_channels=3, image_size=None)


def _conv(c_in: int, c_out: int, **kw) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, padding=1, **kw)


class Block(nn.Module):
    """Residual block: x <- x + MLP(x) first when ``bottleneck`` (1x1 conv 64->256, GroupNorm(4), ReLU, 1x1 conv 256->64),
    then relu(conv-relu-conv-relu-conv(x) + x). Keys ``conv.{0,2,4}`` and ``pool.{0,1,3}``."""

    def __init__(self, bottleneck: bool = False):
        super().__init__()
        self.conv = nn.Sequential(_conv(WIDTH, WIDTH), nn.ReLU(), _conv(WIDTH, WIDTH), nn.ReLU(), _conv(WIDTH, WIDTH))
        self.pool = (nn.Sequential(nn.Conv2d(WIDTH, 4 * WIDTH, 1, bias=False), nn.GroupNorm(4, 4 * WIDTH), nn.ReLU(),
                                   nn.Conv2d(4 * WIDTH, WIDTH, 1, bias=False)) if bottleneck else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool is not None:
            x = x + self.pool(x)
        return F.relu(self.conv(x) + x)


class SoftClamp(nn.Module):
    """z -> 3 * tanh(z / 3): values beyond about +-3 are compressed."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(z / 3) * 3


def build_encoder() -> nn.Sequential:
    """(B, 3, H, W) -> (B, 32, H/8, W/8); indices 0-14 as in the upstream state dict."""
    down = lambda: _conv(WIDTH, WIDTH, stride=2, bias=False)  # noqa: E731
    return nn.Sequential(_conv(3, WIDTH), Block(), down(), Block(), Block(), Block(), down(), Block(), Block(), Block(), down(),
                         Block(True), Block(True), Block(True), _conv(WIDTH, LATENT_CHANNELS))


def build_decoder() -> nn.Sequential:
    """(B, 32, h, w) -> (B, 3, 8h, 8w), raw (no output activation); indices 0-19 as in the upstream state dict."""
    up = lambda: nn.Upsample(scale_factor=2)  # noqa: E731  (nearest neighbour)
    conv = lambda: _conv(WIDTH, WIDTH, bias=False)  # noqa: E731
    return nn.Sequential(SoftClamp(), _conv(LATENT_CHANNELS, WIDTH), nn.ReLU(), Block(True), Block(True), Block(True),
                         up(), conv(), Block(), Block(), Block(), up(), conv(), Block(), Block(), Block(), up(), conv(), Block(),
                         _conv(WIDTH, 3))


class TAEF2(VAEBase):
    """TAEF2 as a model of this package: ``encode`` gives mu (B, 32, H/8, W/8) (no logvar: it is not a VAE posterior),
    ``decode`` gives images in [0, 1] (the raw output clamped), ``decode_logits`` the raw output.

    Fully convolutional: the latent grid follows the image, so ``latent_shape`` is None (taken from the latents).
    Inputs run through the network in channels-last memory layout (oneDNN's fast path on CPU: 1.2-1.5x faster at Kodak
    size than NCHW, bench/taef2_kodak.py); outputs are returned contiguous (NCHW), as every other model's.
    """

    fully_convolutional = True
    downsampling = DOWNSAMPLING

    def __init__(self, config: VAEConfig | None = None):
        config = config or taef2_config()
        if config.family != "taef2":
            raise ValueError(f"TAEF2 needs a config of family 'taef2', got {config.family!r}")
        super().__init__(config)
        self.encoder = build_encoder()
        self.decoder = build_decoder()

    @property
    def latent_shape(self) -> None:
        return None

    def encode(self, x: torch.Tensor) -> EncoderOutput:
        """x: (B, 3, H, W) in [0, 1], H and W multiples of 8 -> mu (B, 32, H/8, W/8)."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"TAEF2 encodes RGB images (B, 3, H, W); got shape {tuple(x.shape)}")
        if x.shape[2] % DOWNSAMPLING or x.shape[3] % DOWNSAMPLING:
            raise ValueError(f"TAEF2 needs H and W multiples of {DOWNSAMPLING}; got {tuple(x.shape[2:])}: crop the images first (posthoc_vq.data.photos.crop_to_multiple)")
        return EncoderOutput(mu=self.encoder(x.contiguous(memory_format=torch.channels_last)).contiguous(), logvar=None)

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        """z: (B, 32, h, w) -> the raw decoder output (B, 3, 8h, 8w), roughly in [0, 1]."""
        if z.ndim != 4 or z.shape[1] != LATENT_CHANNELS:
            raise ValueError(f"TAEF2 decodes latents (B, {LATENT_CHANNELS}, h, w); got shape {tuple(z.shape)}")
        return self.decoder(z.contiguous(memory_format=torch.channels_last)).contiguous()

    def to_image(self, logits: torch.Tensor) -> torch.Tensor:
        """The raw output clamped to [0, 1] (the model has no output activation)."""
        return logits.clamp(0.0, 1.0)


def load_taef2_weights(folder: str | os.PathLike, part: str) -> dict[str, torch.Tensor]:
    """The float32 state dict of one half (``encoder`` or ``decoder``) read from ``folder``'s upstream ``.pth`` file.

    Loaded with ``weights_only=True`` (tensors only, never code). Float16 tensors are converted to
    float32 explicitly (on CPU, where every float16 value is exactly representable in float32).
    Raises :class:`PretrainedWeightsError` naming the file for a missing or unreadable file,
    and naming the first missing, unexpected or wrongly shaped key.
    """
    path = Path(folder) / WEIGHT_FILES[part]
    if not path.is_file():
        raise PretrainedWeightsError(f"{path} not found; pass --weights pointing at the folder holding {' and '.join(WEIGHT_FILES.values())}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several kinds for a damaged or foreign file
        raise PretrainedWeightsError(f"{path} is not a readable state dict of tensors ({type(exc).__name__}; loaded with weights_only=True, "
                                     "so no code in it runs); restore the original file of the taef2 release") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PretrainedWeightsError(f"{path} does not hold a plain state dict of tensors; expected the upstream {WEIGHT_FILES[part]}")
    expected = (build_encoder() if part == "encoder" else build_decoder()).state_dict()
    for key, ref in expected.items():
        if key not in state:
            raise PretrainedWeightsError(f"{path}: key {key!r} of the taef2 {part} is missing (first mismatch); is this the taef2 {part} file?")
        if tuple(state[key].shape) != tuple(ref.shape):
            raise PretrainedWeightsError(f"{path}: key {key!r} has shape {tuple(state[key].shape)}, the taef2 {part} needs {tuple(ref.shape)} (first mismatch)")
    extra = sorted(set(state) - set(expected))
    if extra:
        raise PretrainedWeightsError(f"{path}: unexpected key {extra[0]!r} (first mismatch; {len(extra)} in all); is this the taef2 {part} file?")
    out = {}
    for key, value in state.items():
        if not value.is_floating_point():
            raise PretrainedWeightsError(f"{path}: key {key!r} holds {value.dtype}, expected floating-point weights")
        out[key] = value.to(torch.float32)
    return out


def load_taef2(folder: str | os.PathLike) -> TAEF2:
    """TAEF2 in eval mode with both halves loaded from ``folder`` (float32)."""
    model = TAEF2()
    model.encoder.load_state_dict(load_taef2_weights(folder, "encoder"))
    model.decoder.load_state_dict(load_taef2_weights(folder, "decoder"))
    return model.eval()
