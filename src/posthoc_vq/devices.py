"""Which torch device to run encoding, decoding and metrics on.

:func:`resolve_device` turns a spec ('auto', 'cpu', 'cuda', 'cuda:N', 'mps', a
:class:`torch.device`, or None) into a :class:`torch.device`, with an error naming the
remedy when the device is not available here. None means the device of ``model``'s
parameters (CPU for a model without parameters, or no model). 'auto' is CUDA if available,
else MPS if available, else CPU.
"""

from __future__ import annotations

import functools
from contextlib import nullcontext
from typing import Any

import torch

from posthoc_vq.errors import ConfigError

DEVICE_CHOICES = "auto|cpu|cuda|cuda:N|mps"


def model_device(model: Any) -> torch.device:
    """The device of ``model``'s first parameter (an adapter's wrapped module's too); CPU if it has none."""
    for candidate in (model, getattr(model, "module", None), getattr(model, "model", None)):
        params = getattr(candidate, "parameters", None)
        if callable(params):
            try:
                return next(iter(params())).device
            except (StopIteration, TypeError):
                continue
    return torch.device("cpu")


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(spec: str | torch.device | None = None, model: Any = None) -> torch.device:
    """The :class:`torch.device` meant by ``spec``; raises :class:`ConfigError` for an unknown or unavailable device.

    Examples
    --------
    >>> resolve_device("cpu")
    device(type='cpu')
    >>> resolve_device(None)  # no model: CPU
    device(type='cpu')
    """
    if spec is None:
        return model_device(model) if model is not None else torch.device("cpu")
    text = str(spec).strip().lower()
    if text == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise ConfigError(f"--device {spec}: unknown device; use one of {DEVICE_CHOICES}") from None
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {spec}: no CUDA device is available here (torch.cuda.is_available() is False); use --device cpu or auto")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ConfigError(f"--device {spec}: there {'is' if count == 1 else 'are'} {count} CUDA device(s) here (cuda:0 .. cuda:{count - 1}); use one of those, cpu or auto")
        return device
    if device.type == "mps":
        if not _mps_available():
            raise ConfigError(f"--device {spec}: no MPS (Apple GPU) device is available here (torch.backends.mps.is_available() is False); use --device cpu or auto")
        return device
    raise ConfigError(f"--device {spec}: unsupported device type '{device.type}'; use one of {DEVICE_CHOICES}")


def device_record(device: torch.device) -> dict[str, Any]:
    """What a result was computed on, for its JSON: the device, and a GPU's name (``torch.cuda.get_device_name``)."""
    record: dict[str, Any] = {"device": str(device)}
    if device.type == "cuda":
        record["device_name"] = torch.cuda.get_device_name(device)
    return record


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 natively: any CUDA device, or an x86 CPU whose flags (Linux
    ``/proc/cpuinfo``) list ``avx512_bf16`` or ``amx_bf16``. Elsewhere (no such flags, macOS, MPS) False:
    bf16 autocast there would be emulated, slower than fp32."""
    if device.type == "cuda":
        return True
    if device.type != "cpu":
        return False
    flags = cpu_flags()
    return "avx512_bf16" in flags or "amx_bf16" in flags


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from Linux's ``/proc/cpuinfo`` (empty where there is none); read once."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return frozenset(next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), []))
    except OSError:
        return frozenset()


def resolve_precision(precision: str, device: torch.device) -> str:
    """The precision ``precision`` ('fp32', 'bf16' or 'auto') means on ``device``: auto is bf16 where
    :func:`native_bf16`, else fp32."""
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision


def autocast(device: torch.device, precision: str):
    """A context manager for the forward passes at ``precision`` ('fp32', 'bf16', 'auto') on ``device``: bf16 autocast, or nothing."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if resolve_precision(precision, device) == "bf16" else nullcontext()
