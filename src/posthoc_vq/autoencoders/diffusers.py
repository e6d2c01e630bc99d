"""Adapter for diffusers ``AutoencoderKL`` models: ``pip install 'posthoc-vq[adapters]'``.

``AutoencoderKL`` works on images in [-1, 1]: ``vae.encode(x).latent_dist`` is a diagonal
Gaussian over a (latent_channels, H / f, W / f) grid, f = 2 ** (len(block_out_channels) - 1),
and ``vae.decode(z).sample`` is an image whose values are *not* squashed. diffusers' own
image post-processing clamps them to [-1, 1] before use (``VaeImageProcessor``); this adapter
does the same by default (``clamp=True``), so decoded values outside [-1, 1] are clipped
rather than reported. The latents are the raw posterior (``scaling_factor`` is a diffusion
convention and is not applied). diffusers is not imported by this module: the model brings it.
"""

from __future__ import annotations

from typing import Any

import torch

from posthoc_vq.autoencoders.base import Encoded, ModelContractError

DIFFUSERS_RANGE = (-1.0, 1.0)


class DiffusersAutoencoderKL:
    """A diffusers ``AutoencoderKL`` as an :class:`Autoencoder` with (C, h, w) latents.

    Parameters
    ----------
    vae : ``diffusers.AutoencoderKL``; put in eval mode.
    clamp : clip decoded images to [-1, 1], as diffusers' image processor does. With
        ``clamp=False`` a decoder overshooting [-1, 1] raises ``OutputRangeError``.
    image_size : (H, W) of the inputs, to know ``latent_shape`` before the first batch; without
        it the shape is taken from the first encoded batch.
    """

    _posthoc_vq_adapter = True

    def __init__(self, vae: Any, *, clamp: bool = True, image_size: tuple[int, int] | int | None = None):
        config = getattr(vae, "config", None)
        if config is None or not hasattr(vae, "encode") or not hasattr(vae, "decode") or not hasattr(config, "latent_channels"):
            raise ModelContractError(f"{type(vae).__name__} is not a diffusers AutoencoderKL (it needs encode, decode and config.latent_channels)")
        self.model = vae.eval()
        self.clamp = clamp
        self.output_range = DIFFUSERS_RANGE
        self.downsample = 2 ** (len(config.block_out_channels) - 1)
        self.latent_channels = int(config.latent_channels)
        self.latent_shape = None
        if image_size is not None:
            h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
            self.latent_shape = (self.latent_channels, h // self.downsample, w // self.downsample)
        self.name = f"diffusers.{type(vae).__name__}"

    def encode(self, x: torch.Tensor) -> Encoded:
        dist = self.model.encode(x).latent_dist
        if self.latent_shape is None:
            self.latent_shape = tuple(dist.mean.shape[1:])
        return Encoded(dist.mean, dist.logvar)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        x = self.model.decode(z).sample
        return x.clamp(*DIFFUSERS_RANGE) if self.clamp else x

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())
