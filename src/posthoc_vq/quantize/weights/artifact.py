"""The packed-weight file: one safetensors file that holds everything needed to run the model.

Tensors: for each quantized weight ``<module>.weight`` its ``.q`` (uint8, 4-bit codes two
per byte), ``.scale`` (fp16) and, when asymmetric, ``.zero_point`` (uint8, packed like the
codes); every other state-dict entry under its own name, in fp32 or fp16. The safetensors
header metadata holds the format tag, the model config and each layer's spec (bits, shape,
axis, groups), so the file alone rebuilds the model; its size is the deployable size.

Loading checks the bytes against the spec (bit width, element counts, scale shapes) and the
spec against the model architecture, and dequantizes into an ordinary float model that runs
the same code as the fp32 one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors import SafetensorError, safe_open

from posthoc_vq.config import VAEConfig, validate
from posthoc_vq.errors import CheckpointError, NotFoundError, PosthocVQError
from posthoc_vq.io import load_tensors, save_tensors
from posthoc_vq.models import build_vae
from posthoc_vq.quantize.weights.network import QuantizedNetwork, rebuild_folded
from posthoc_vq.quantize.weights.quantizer import IntQuantizer

FORMAT = "posthoc-vq/packed-weights"
VERSION = "1"
SUFFIXES = ("q", "scale", "zero_point")


def save_packed(path: str | Path, qn: QuantizedNetwork, model_config: dict[str, Any]) -> dict[str, Any]:
    """Write the packed file atomically; returns its ``sha256`` and size in ``bytes``."""
    path = Path(path)
    tensors = dict(qn.floats)
    specs: dict[str, Any] = {}
    for key, qt in qn.layers.items():
        packed, spec = IntQuantizer.pack(qt)
        tensors.update({f"{key}.{suffix}": value for suffix, value in packed.items()})
        specs[key] = spec
    header = {
        "format": FORMAT, "version": VERSION, "model": json.dumps(model_config), "layers": json.dumps(specs),
        "folded_bn": json.dumps(qn.folded_bn), "float_dtype": qn.config.float_dtype,
    }
    sha = save_tensors(path, tensors, metadata=header)
    return {"sha256": sha, "bytes": path.stat().st_size}


def read_header(path: Path) -> dict[str, Any]:
    """The decoded header metadata of a packed file (format checked)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{path} is truncated or not a safetensors file ({err}); re-create it with `posthoc-vq compress-weights`") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a packed-weight file (header format {meta.get('format')!r}, expected {FORMAT!r})")
    try:
        return {"model": json.loads(meta["model"]), "layers": json.loads(meta["layers"]), "folded_bn": json.loads(meta["folded_bn"]), "version": meta.get("version")}
    except (KeyError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: packed-weight header is damaged ({err!r}); re-create the file") from None


def unpack_state(path: Path, tensors: dict[str, torch.Tensor], layers: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Float32 state dict from the file's tensors: quantized layers dequantized, the rest cast to fp32."""
    state: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    for key, spec in layers.items():
        parts = {s: tensors[f"{key}.{s}"] for s in SUFFIXES if f"{key}.{s}" in tensors}
        used.update(f"{key}.{s}" for s in parts)
        try:
            state[key] = IntQuantizer.dequantize(IntQuantizer.unpack(parts, spec))
        except CheckpointError as err:
            raise CheckpointError(f"{path}: layer '{key}': {err}; the file is corrupt or was written by another tool") from None
    for key, value in tensors.items():
        if key not in used:
            state[key] = value.float() if value.is_floating_point() else value
    return state


def load_packed(path: str | Path, sha256: str | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the dequantized float model (eval mode) from a packed file; returns it and the header.

    Raises CheckpointError when the file is missing, truncated, corrupt (``sha256`` mismatch),
    or its bytes, bit widths or shapes do not fit the recorded spec and architecture.
    """
    path = Path(path)
    if not path.exists():
        raise NotFoundError(f"packed weights not found: {path}; create them with `posthoc-vq compress-weights RUN`")
    tensors = load_tensors(path, sha256=sha256)
    header = read_header(path)
    try:
        config = validate(header["model"], VAEConfig, source=f"{path} (header 'model')")
    except PosthocVQError as err:
        raise CheckpointError(str(err)) from None
    model = rebuild_folded(build_vae(config), header["folded_bn"])
    state = unpack_state(path, tensors, header["layers"])
    expected = model.state_dict()
    problems = [f"missing {k}" for k in expected if k not in state]
    problems += [f"unexpected {k}" for k in state if k not in expected]
    problems += [f"{k} has shape {list(state[k].shape)}, the model needs {list(expected[k].shape)}" for k in expected if k in state and state[k].shape != expected[k].shape]
    if problems:
        raise CheckpointError(f"{path} does not fit the architecture in its header: {'; '.join(problems[:3])}")
    model.load_state_dict(state)
    return model.eval(), header
