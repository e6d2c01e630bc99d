"""Fold inference-mode BatchNorm into the linear layer that produces its input.

``BN(y) = a * y + b`` per channel, with ``a = gamma / sqrt(var + eps)`` and
``b = beta - a * mean``; when ``y = W x + c`` the pair becomes one layer with
``W' = a * W`` (per output channel) and ``c' = a * c + b``. Folding happens
before quantization, so the quantizer sees the weights that actually run.

Patterns folded:

* ``Conv2d`` / ``ConvTranspose2d`` immediately followed by ``BatchNorm2d`` in an ``nn.Sequential``;
* a VAE decoder's input layer followed by ``decoder[0]``, a BatchNorm2d: ConvVAE's
  ``fc_dec -> view(C, h, w) -> BatchNorm2d`` (each channel owns ``h * w`` consecutive rows
  of ``fc_dec``) and SpatialVAE's ``conv_dec -> BatchNorm2d``.

The folded BatchNorm modules are replaced by ``nn.Identity``; their names are returned
so a loader can rebuild the same architecture.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn



def _affine(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    a = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    return a, bn.bias.detach() - a * bn.running_mean


@torch.no_grad()
def _fold_into(layer: nn.Module, a: torch.Tensor, b: torch.Tensor, repeat: int = 1) -> None:
    """Scale the output channels of ``layer`` by ``a`` and shift them by ``b`` (each repeated ``repeat`` times)."""
    a, b = a.repeat_interleave(repeat), b.repeat_interleave(repeat)
    axis = 1 if isinstance(layer, nn.ConvTranspose2d) else 0
    shape = [1] * layer.weight.dim()
    shape[axis] = -1
    layer.weight.mul_(a.view(shape))
    if layer.bias is None:
        layer.bias = nn.Parameter(torch.zeros_like(a))
    layer.bias.copy_(a * layer.bias + b)


def set_module(root: nn.Module, name: str, module: nn.Module) -> None:
    """Replace the submodule at dotted ``name``."""
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, module)


def fold_batchnorm(model: nn.Module) -> tuple[nn.Module, list[str]]:
    """A copy of ``model`` (eval mode) with every foldable BatchNorm folded; returns it and the folded BN names."""
    model = copy.deepcopy(model).eval()
    folded: list[str] = []
    for seq_name, seq in list(model.named_modules()):
        if not isinstance(seq, nn.Sequential):
            continue
        children = list(seq.named_children())
        for (_, layer), (bn_name, bn) in zip(children, children[1:]):
            if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)) and layer.groups == 1 and isinstance(bn, nn.BatchNorm2d):
                _fold_into(layer, *_affine(bn))
                folded.append(f"{seq_name}.{bn_name}" if seq_name else bn_name)
    decoder = getattr(model, "decoder", None)
    producer = getattr(model, "fc_dec", None) or getattr(model, "conv_dec", None)
    if isinstance(decoder, nn.Sequential) and isinstance(decoder[0], nn.BatchNorm2d) and isinstance(producer, (nn.Linear, nn.Conv2d)):
        bn = decoder[0]
        _fold_into(producer, *_affine(bn), repeat=producer.weight.shape[0] // bn.num_features)
        folded.append("decoder.0")
    for name in folded:
        set_module(model, name, nn.Identity())
    return model, folded
