"""The ``Autoencoder`` protocol: what a model must offer to be quantized and evaluated post hoc.

A model is any object with

* ``encode(x) -> mu``: images (B, C, H, W) to posterior means (B, *L); it may return
  ``(mu, logvar)``, an object with ``mu``/``logvar`` (or ``mean``/``logvar``) attributes, or
  an :class:`Encoded`. ``logvar`` is needed only for sampled latents (``z``);
* ``decode(z) -> x``: latents (B, *L) to images (B, C, H, W);
* ``output_range``: (lo, hi), the range of the images the model takes in and gives out.
  Data enter this library as images in [0, 1]; they are mapped linearly to ``output_range``
  before ``encode`` and decoded images are mapped back to [0, 1] for the metrics. A decoder
  that returns values outside its declared range is an error (:class:`OutputRangeError`),
  not a silently clipped number;
* ``latent_shape`` (optional): ``(D,)`` for one vector per image, ``(C, h, w)`` for a latent
  grid, ``None`` to take it from the first encoded batch.

The first axis of the latent is the token: codebooks quantize vectors of ``latent_shape[0]``
values, one per position of the remaining axes (``prod(latent_shape[1:])`` tokens per image).

:func:`encode_images` and :func:`decode_latents` run a model over many images in batches,
without gradients, checking the contract as they go.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch

from posthoc_vq.errors import PosthocVQError
from posthoc_vq.progress import report

#: Decoded values may exceed the declared range by this fraction of its width (float rounding).
RANGE_TOLERANCE = 1e-4
#: Batches are capped so that one holds at most this many input pixels (encode) or latent values (decode):
#: photographs (a 768x512 image's activations take about 100 MB per layer of a 64-wide network) go a few at a
#: time, while 28x28 or 32x32 images keep the caller's batch size.
MAX_BATCH_PIXELS = 2**20  # 6 BSDS500 photos per batch: 0.36 s each to encode on 2 cores, against 0.45 s in batches of 13
MAX_BATCH_LATENT_VALUES = 2**20


def capped_batch(batch_size: int, per_item: int, cap: int) -> int:
    """``batch_size`` reduced so that ``batch * per_item <= cap`` (at least 1)."""
    return max(1, min(int(batch_size), cap // max(1, int(per_item))))


class ModelContractError(PosthocVQError):
    """A model does not keep the :class:`Autoencoder` contract."""


class OutputRangeError(ModelContractError):
    """A decoder returned values outside the output range its model declares."""


class LatentShapeError(ModelContractError):
    """Latents do not have the shape the model or the codebook expects."""


@dataclass
class Encoded:
    """Posterior of a batch: ``mu`` (B, *L) and, if the model has one, ``logvar`` (B, *L)."""

    mu: torch.Tensor
    logvar: torch.Tensor | None = None


@runtime_checkable
class Autoencoder(Protocol):
    """What :func:`posthoc_vq.fit_codebook` and :func:`posthoc_vq.evaluate` need from a model."""

    output_range: tuple[float, float]

    def encode(self, x: torch.Tensor) -> Any: ...

    def decode(self, z: torch.Tensor) -> torch.Tensor: ...


def as_encoded(out: Any, source: str = "encode") -> Encoded:
    """Normalise what an encoder returned into an :class:`Encoded` of float tensors."""
    if isinstance(out, Encoded):
        mu, logvar = out.mu, out.logvar
    elif isinstance(out, (tuple, list)) and len(out) == 2:
        mu, logvar = out
    elif isinstance(out, dict) and "mu" in out:
        mu, logvar = out["mu"], out.get("logvar")
    elif hasattr(out, "mu"):
        mu, logvar = out.mu, getattr(out, "logvar", None)
    elif hasattr(out, "mean") and not callable(out.mean):  # e.g. a diagonal Gaussian distribution
        mu, logvar = out.mean, getattr(out, "logvar", None)
    else:
        mu, logvar = out, None
    try:
        mu = torch.as_tensor(mu).float()
        logvar = None if logvar is None else torch.as_tensor(logvar).float()
    except (TypeError, ValueError, RuntimeError):
        raise ModelContractError(
            f"{source} returned a {type(out).__name__}; it must return mu (a tensor), (mu, logvar), or an object with mu/logvar"
        ) from None
    if logvar is not None and logvar.shape != mu.shape:
        raise LatentShapeError(f"{source} returned mu {tuple(mu.shape)} but logvar {tuple(logvar.shape)}; they must have the same shape")
    return Encoded(mu, logvar)


def check_range(output_range: Any, source: str) -> tuple[float, float]:
    """Validated ``(lo, hi)`` with lo < hi, both finite."""
    try:
        lo, hi = (float(v) for v in output_range)
    except (TypeError, ValueError):
        raise ModelContractError(f"{source}: output_range must be (lo, hi), e.g. (0, 1) or (-1, 1); got {output_range!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ModelContractError(f"{source}: output_range must be finite with lo < hi, got ({lo}, {hi})")
    return lo, hi


def tokens_per_image(latent_shape: tuple[int, ...]) -> int:
    """Latent vectors (tokens) per image: 1 for (D,), h * w for (C, h, w)."""
    return math.prod(latent_shape[1:])


def _name(model: Any) -> str:
    return getattr(model, "name", None) or type(model).__name__


def to_model_range(x: torch.Tensor, output_range: tuple[float, float]) -> torch.Tensor:
    """Images in [0, 1] mapped linearly to ``output_range`` (unchanged for (0, 1))."""
    lo, hi = output_range
    return x if (lo, hi) == (0.0, 1.0) else x * (hi - lo) + lo


@torch.no_grad()
def encode_images(model: Autoencoder, images: torch.Tensor, kind: str = "mu", seed: int = 0, batch_size: int = 1000, *,
                  device: torch.device | str | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Latents (N, *L) on CPU of images (N, C, H, W) in [0, 1]: posterior means, or samples.

    ``device``: each batch is moved there for ``encode`` (None: left where it is); the latents
    come back to CPU. ``generator``: a CPU generator to draw ``eps`` from (seeded with ``seed``
    when None), so a stream of batches can share one; ``eps`` is drawn on CPU, so the samples do
    not depend on the device.

    ``kind='z'`` draws ``mu + exp(logvar / 2) * eps`` with ``eps`` from a generator seeded by
    ``seed``, batch by batch. Raises :class:`LatentShapeError` when a batch's latents do not have
    the model's declared ``latent_shape`` (or the first batch's), and :class:`ModelContractError`
    when ``z`` is asked of a model whose encoder gives no ``logvar``.
    """
    lo_hi = check_range(model.output_range, _name(model))
    gen = torch.Generator().manual_seed(seed) if generator is None else generator
    expected = tuple(model.latent_shape) if getattr(model, "latent_shape", None) else None
    out = []
    batch_size = capped_batch(batch_size, math.prod(images.shape[2:]), MAX_BATCH_PIXELS)
    for i in range(0, len(images), batch_size):
        x = images[i : i + batch_size]
        if device is not None:
            x = x.to(device)
        post = as_encoded(model.encode(to_model_range(x, lo_hi)), f"{_name(model)}.encode")
        shape = tuple(post.mu.shape[1:])
        if post.mu.shape[0] != len(x) or post.mu.ndim < 2:
            raise LatentShapeError(f"{_name(model)}.encode turned {len(x)} images into latents of shape {tuple(post.mu.shape)}; expected (B, D) or (B, C, h, w)")
        if expected is None:
            expected = shape
        elif shape != expected:
            raise LatentShapeError(
                f"{_name(model)}.encode returned latents of shape {shape} per image, but the model declares latent_shape {expected}; "
                "fix latent_shape (or leave it None to take it from the encoder)"
            )
        if kind == "z":
            if post.logvar is None:
                raise ModelContractError(f"{_name(model)}.encode returns no logvar, so sampled latents (z) are not defined; use latents='mu'")
            eps = torch.randn(post.mu.shape, generator=gen).to(post.mu.device)
            out.append((post.mu + eps * torch.exp(0.5 * post.logvar)).cpu())
        elif kind == "mu":
            out.append(post.mu.cpu())
        else:
            raise ModelContractError(f"latents must be 'mu' or 'z', got '{kind}'")
        report("encoding images", i + len(x), len(images))
    return torch.cat(out)


@torch.no_grad()
def decode_latents(model: Autoencoder, z: torch.Tensor, batch_size: int = 1000, *, device: torch.device | str | None = None) -> torch.Tensor:
    """Images (N, C, H, W) in [0, 1], on CPU, decoded from latents (N, *L), batch by batch.

    ``device``: each batch of latents is moved there for ``decode`` (None: left where it is).

    The decoder's output is checked against the model's ``output_range`` (within
    ``RANGE_TOLERANCE`` of its width) and then mapped linearly to [0, 1].

    Raises
    ------
    OutputRangeError
        naming the range found and the range declared.
    """
    lo, hi = check_range(model.output_range, _name(model))
    tol = RANGE_TOLERANCE * (hi - lo)
    out = []
    batch_size = capped_batch(batch_size, math.prod(z.shape[1:]), MAX_BATCH_LATENT_VALUES)
    for i in range(0, len(z), batch_size):
        zb = z[i : i + batch_size]
        x = torch.as_tensor(model.decode(zb if device is None else zb.to(device))).float().cpu()
        if x.ndim != 4 or len(x) != len(z[i : i + batch_size]):
            raise ModelContractError(f"{_name(model)}.decode must return images (B, C, H, W); got shape {tuple(x.shape)} for {len(z[i : i + batch_size])} latents")
        x_lo, x_hi = float(x.min()), float(x.max())
        if not (math.isfinite(x_lo) and math.isfinite(x_hi)) or x_lo < lo - tol or x_hi > hi + tol:
            raise OutputRangeError(
                f"{_name(model)}.decode returned values in [{x_lo:.4g}, {x_hi:.4g}], outside its declared output_range [{lo:g}, {hi:g}]: "
                "PSNR and SSIM would be computed on the wrong scale. Declare the range the decoder really produces "
                "(e.g. output_range=(-1, 1)), or end the decoder in a sigmoid / tanh or clamp its output"
            )
        out.append(x if (lo, hi) == (0.0, 1.0) else (x - lo) / (hi - lo))
        report("decoding latents", i + len(x), len(z))
    return torch.cat(out)
