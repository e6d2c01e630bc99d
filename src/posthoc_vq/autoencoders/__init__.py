"""Bring your own autoencoder: the protocol a model must keep, and adapters to it.

See :mod:`posthoc_vq.autoencoders.base` for the contract. Adapters: :class:`FunctionAutoencoder`
(two plain callables), :class:`VAEAutoencoder` (this package's VAEs), and, with the
``adapters`` extra installed, :class:`PythaeAutoencoder` and :class:`DiffusersAutoencoderKL`
(their libraries are imported only by the models you pass). :func:`as_autoencoder` picks one.
"""

from posthoc_vq.autoencoders.adapters import FunctionAutoencoder, VAEAutoencoder, as_autoencoder
from posthoc_vq.autoencoders.base import (
    Autoencoder,
    Encoded,
    LatentShapeError,
    ModelContractError,
    OutputRangeError,
    decode_latents,
    encode_images,
    tokens_per_image,
)
from posthoc_vq.autoencoders.diffusers import DiffusersAutoencoderKL
from posthoc_vq.autoencoders.pythae import PythaeAutoencoder

__all__ = [
    "Autoencoder", "DiffusersAutoencoderKL", "Encoded", "FunctionAutoencoder", "LatentShapeError", "ModelContractError",
    "OutputRangeError", "PythaeAutoencoder", "VAEAutoencoder", "as_autoencoder", "decode_latents", "encode_images", "tokens_per_image",
]
