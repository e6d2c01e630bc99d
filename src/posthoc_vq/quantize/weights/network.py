"""Quantize every Conv2d, ConvTranspose2d and Linear weight of a network.

Everything else in the state dict (biases, BatchNorm parameters and statistics,
skipped layers) stays float (fp32, or fp16 when asked) and is stored and counted
beside the packed weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from posthoc_vq.config import WeightsConfig
from posthoc_vq.errors import ConfigError
from posthoc_vq.quantize.weights.folding import fold_batchnorm, set_module
from posthoc_vq.quantize.weights.qtensor import QTensor, matrix_view
from posthoc_vq.quantize.weights.quantizer import IntQuantizer

QUANTIZABLE = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)


def output_axis(module: nn.Module) -> int:
    """Axis of the output channels in the module's weight: 1 for ConvTranspose2d, else 0."""
    return 1 if isinstance(module, nn.ConvTranspose2d) else 0


def quantizable_layers(model: nn.Module) -> list[str]:
    """Names of the layers whose weights are quantized, in module order."""
    return [name for name, m in model.named_modules() if isinstance(m, QUANTIZABLE)]


def resolve_skip(model: nn.Module, skip: list[str]) -> set[str]:
    """Layer names to keep in float; ``first`` / ``last`` name the first / last quantizable layer."""
    layers = quantizable_layers(model)
    out: set[str] = set()
    for item in skip:
        if item in ("first", "last"):
            out.add(layers[0] if item == "first" else layers[-1])
        elif item in layers:
            out.add(item)
        else:
            raise ConfigError(f"weights.skip: '{item}' is not a quantizable layer; use 'first', 'last' or one of {layers}")
    return out


def make_quantizer(config: WeightsConfig) -> IntQuantizer:
    if config.bits == 32:
        raise ConfigError("weights.bits=32 keeps the fp32 model; there is nothing to quantize")
    return IntQuantizer(config.bits, config.symmetric, config.resolved_granularity(), config.group_size)


@dataclass
class QuantizedNetwork:
    """Quantized weights of a network, the float rest of its state dict, and per-layer errors."""

    layers: dict[str, QTensor]  # '<module>.weight' -> codes and scales
    floats: dict[str, torch.Tensor]  # every other state-dict entry
    folded_bn: list[str]
    config: WeightsConfig
    errors: dict[str, dict[str, Any]] = field(default_factory=dict)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Dequantized float32 state dict of the (folded) network."""
        state = {k: (v.float() if v.is_floating_point() else v) for k, v in self.floats.items()}
        state.update({k: IntQuantizer.dequantize(qt) for k, qt in self.layers.items()})
        return state


@torch.no_grad()
def quantize_network(model: nn.Module, config: WeightsConfig) -> QuantizedNetwork:
    """Quantize a network's layer weights as ``config`` says (BatchNorm folded first when ``fold_bn``).

    Per-layer ``errors``: max and mean absolute weight error, the largest error as a
    fraction of that weight's scale (at most 0.5 by construction), and the parameter count.
    """
    quantizer = make_quantizer(config)
    folded: list[str] = []
    if config.fold_bn:
        model, folded = fold_batchnorm(model)
    skip = resolve_skip(model, config.skip)
    state = model.state_dict()
    layers: dict[str, QTensor] = {}
    errors: dict[str, dict[str, Any]] = {}
    for name, module in model.named_modules():
        if not isinstance(module, QUANTIZABLE) or name in skip:
            continue
        key = f"{name}.weight"
        w = state[key].float()
        qt = quantizer.quantize(w, axis=output_axis(module))
        err = (IntQuantizer.dequantize(qt) - w).abs()
        layers[key] = qt
        errors[name] = {
            "type": type(module).__name__, "shape": list(w.shape), "numel": w.numel(),
            "max_abs_error": float(err.max()), "mean_abs_error": float(err.mean()),
            "max_error_over_scale": _error_over_scale(err, qt),
        }
    float_dtype = torch.float16 if config.float_dtype == "fp16" else torch.float32
    floats = {k: (v.to(float_dtype) if v.is_floating_point() else v) for k, v in state.items() if k not in layers}
    return QuantizedNetwork(layers, floats, folded, config, errors)


def _error_over_scale(err: torch.Tensor, qt: QTensor) -> float:
    """Largest |error| / scale of its group, in the QTensor's matrix layout."""
    m = matrix_view(err, qt.axis, per_tensor=qt.granularity == "tensor")
    return float((m / qt.expand(qt.scale.float())).max())


def rebuild_folded(model: nn.Module, folded_bn: list[str]) -> nn.Module:
    """Replace the named (folded) BatchNorm modules by ``nn.Identity`` so a folded state dict loads."""
    for name in folded_bn:
        set_module(model, name, nn.Identity())
    return model
