"""Adapters from models to the :class:`~posthoc_vq.autoencoders.base.Autoencoder` protocol:
plain callables, this package's own VAEs, and :func:`as_autoencoder`, which picks one.

The adapters for third-party formats (pythae, diffusers ``AutoencoderKL``) live in their own
modules and import their library only when used.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from posthoc_vq.autoencoders.base import Encoded, ModelContractError, as_encoded, check_range
from posthoc_vq.models import OUTPUT_RANGE, VAEBase


class FunctionAutoencoder:
    """An autoencoder made of two plain functions.

    Parameters
    ----------
    encode : callable
        Images (B, C, H, W) in ``output_range`` -> mu (B, *L), or (mu, logvar), or an object
        with ``mu``/``logvar`` attributes.
    decode : callable
        Latents (B, *L) -> images (B, C, H, W) in ``output_range``.
    output_range : (lo, hi)
        Range of the images both functions work in; (0, 1) by default.
    latent_shape : tuple or None
        (D,) or (C, h, w); None takes it from the first encoded batch.
    name : str
        Shown in error messages and results.

    Examples
    --------
    >>> ae = FunctionAutoencoder(lambda x: net.encode(x).mu, net.decode, output_range=(0, 1))  # doctest: +SKIP
    """

    def __init__(
        self,
        encode: Callable[[torch.Tensor], Any],
        decode: Callable[[torch.Tensor], torch.Tensor],
        *,
        output_range: tuple[float, float] = (0.0, 1.0),
        latent_shape: tuple[int, ...] | None = None,
        name: str = "function",
    ):
        if not callable(encode) or not callable(decode):
            raise ModelContractError(f"FunctionAutoencoder needs two callables, got {type(encode).__name__} and {type(decode).__name__}")
        self._encode, self._decode = encode, decode
        self.output_range = check_range(output_range, name)
        self.latent_shape = tuple(int(s) for s in latent_shape) if latent_shape is not None else None
        self.name = name

    def encode(self, x: torch.Tensor) -> Encoded:
        out = as_encoded(self._encode(x), f"{self.name}.encode")
        if self.latent_shape is None:
            self.latent_shape = tuple(out.mu.shape[1:])
        return out

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self._decode(z)

    def __repr__(self) -> str:
        return f"FunctionAutoencoder(name={self.name!r}, output_range={self.output_range}, latent_shape={self.latent_shape})"


class VAEAutoencoder:
    """This package's VAEs (:class:`~posthoc_vq.models.ConvVAE`, :class:`~posthoc_vq.models.SpatialVAE`).

    Put in eval mode; encode returns (mu, logvar); decode ends in a sigmoid, so
    ``output_range`` is ``OUTPUT_RANGE`` = (0, 1).
    """

    def __init__(self, model: VAEBase):
        self.model = model.eval()
        self.output_range = OUTPUT_RANGE
        self.latent_shape = tuple(model.latent_shape) if model.latent_shape is not None else None  # None: a fully convolutional network
        self.name = type(model).__name__

    def encode(self, x: torch.Tensor) -> Encoded:
        post = self.model.encode(x)
        return Encoded(post.mu, post.logvar)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.model.decode(z)

    def num_parameters(self) -> int:
        return self.model.num_parameters()


def as_autoencoder(model: Any) -> Any:
    """The :class:`Autoencoder` for ``model``.

    Accepts: one of the adapters here; this package's VAEs; a pythae model; a diffusers
    ``AutoencoderKL``; a pair ``(encode_fn, decode_fn)`` (images in [0, 1]); or any object with
    ``encode``, ``decode`` and ``output_range`` (and optionally ``latent_shape``).

    Raises
    ------
    ModelContractError
        for anything else, saying what is missing.
    """
    if isinstance(model, (FunctionAutoencoder, VAEAutoencoder)) or getattr(model, "_posthoc_vq_adapter", False):
        return model
    if isinstance(model, VAEBase):
        return VAEAutoencoder(model)
    module = type(model).__module__ or ""
    if module.startswith("pythae."):
        from posthoc_vq.autoencoders.pythae import PythaeAutoencoder

        return PythaeAutoencoder(model)
    if module.startswith("diffusers.") and type(model).__name__ == "AutoencoderKL":
        from posthoc_vq.autoencoders.diffusers import DiffusersAutoencoderKL

        return DiffusersAutoencoderKL(model)
    if isinstance(model, tuple) and len(model) == 2 and all(callable(f) for f in model):
        return FunctionAutoencoder(*model)
    missing = [a for a in ("encode", "decode", "output_range") if not hasattr(model, a)]
    if missing:
        raise ModelContractError(
            f"cannot use a {type(model).__name__} as an autoencoder: it has no {', '.join(missing)}. Pass an object with "
            "encode(x) -> mu, decode(z) -> x and output_range = (lo, hi), or wrap two functions: "
            "FunctionAutoencoder(encode_fn, decode_fn, output_range=(0, 1))"
        )
    return FunctionAutoencoder(
        model.encode, model.decode, output_range=model.output_range,
        latent_shape=getattr(model, "latent_shape", None), name=getattr(model, "name", None) or type(model).__name__,
    )
