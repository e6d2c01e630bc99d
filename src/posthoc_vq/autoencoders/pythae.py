"""Adapter for pythae (``clementchadebec/benchmark_VAE``) autoencoders: ``pip install 'posthoc-vq[adapters]'``.

pythae models take images as they were trained on (usually [0, 1]) and expose
``model.encoder(x)`` -> ``ModelOutput(embedding, log_covariance)`` and ``model.decoder(z)``
-> ``ModelOutput(reconstruction)``. The posterior mean is ``embedding``; ``log_covariance``
(the log of the diagonal variance, present for VAE-type models) is ``logvar``. pythae is
not imported by this module: the model object brings it.
"""

from __future__ import annotations

from typing import Any

import torch

from posthoc_vq.autoencoders.base import Encoded, ModelContractError, check_range


class PythaeAutoencoder:
    """A pythae model (``pythae.models.AE``, ``VAE``, ``BetaVAE``, ...) as an :class:`Autoencoder`.

    Parameters
    ----------
    model : a pythae ``BaseAE`` subclass instance; put in eval mode.
    output_range : (lo, hi) of the images it was trained on and decodes to; (0, 1) by default
        (pythae's MNIST/CIFAR decoders end in a sigmoid). A decoder without a squashing last
        layer may leave it: :func:`~posthoc_vq.autoencoders.base.decode_latents` then says so.
    """

    _posthoc_vq_adapter = True

    def __init__(self, model: Any, *, output_range: tuple[float, float] = (0.0, 1.0)):
        if not (hasattr(model, "encoder") and hasattr(model, "decoder") and hasattr(model, "model_config")):
            raise ModelContractError(f"{type(model).__name__} is not a pythae model (it needs encoder, decoder and model_config)")
        self.model = model.eval()
        self.output_range = check_range(output_range, f"pythae {type(model).__name__}")
        latent_dim = getattr(model.model_config, "latent_dim", None)
        self.latent_shape = (int(latent_dim),) if latent_dim else None
        self.name = f"pythae.{type(model).__name__}"

    def encode(self, x: torch.Tensor) -> Encoded:
        out = self.model.encoder(x)
        mu = out["embedding"]
        logvar = out["log_covariance"] if "log_covariance" in out.keys() else None
        return Encoded(mu, logvar)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.model.decoder(z)["reconstruction"]

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())
