"""Weight-quantized copies of a trained run: pack one from a :class:`WeightsConfig`, open it, list them.

Saved as ``<run>/weights/<name>.safetensors`` (the packed, self-contained file whose size
is what ships) and ``<name>.json`` (sizes measured from the files, per-layer weight
errors, the config, the fp32 model's checksum, provenance). Sizes are file sizes on
disk, not bit arithmetic: the ratio is ``packed file bytes / fp32 model file bytes``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from posthoc_vq.config import WeightsConfig
from posthoc_vq.errors import CheckpointError, TrainingError
from posthoc_vq.io import read_json, write_json
from posthoc_vq.provenance import provenance
from posthoc_vq.quantize.weights import load_packed, quantize_network, save_packed
from posthoc_vq.train import load_model, load_run_config
from posthoc_vq.train.checkpoint import MODEL_FILE

WEIGHTS_DIR = "weights"


def require_trained(run_dir: Path, meta: dict[str, Any]) -> None:
    """Refuse a run whose model never trained: its numbers would measure random weights."""
    if meta.get("trained_steps") == 0:
        raise TrainingError(
            f"{run_dir} has zero training steps: quantizing or comparing random weights measures nothing. "
            f"Train it first (`posthoc-vq train --resume --out {run_dir}`)."
        )


def _tensor_bytes(path: Path) -> dict[str, int]:
    from safetensors import safe_open

    out = {"codes": 0, "scales": 0, "float": 0}
    with safe_open(str(path), framework="pt") as f:
        for key in f.keys():
            t = f.get_tensor(key)
            kind = "codes" if key.endswith((".q", ".zero_point")) else "scales" if key.endswith(".scale") else "float"
            out[kind] += t.numel() * t.element_size()
    out["header"] = path.stat().st_size - sum(out.values())
    return out


def compress_run(run_dir: str | Path, config: WeightsConfig) -> tuple[str, dict[str, Any]]:
    """Quantize the run's model weights, write the packed file and its JSON record.

    Returns
    -------
    (name, the saved JSON record)
    """
    run_dir = Path(run_dir)
    model, meta = load_model(run_dir)
    require_trained(run_dir, meta)
    run_config = load_run_config(run_dir)
    name = config.default_name()
    start = time.perf_counter()
    qn = quantize_network(model, config)
    path = run_dir / WEIGHTS_DIR / f"{name}.safetensors"
    saved = save_packed(path, qn, model.config.model_dump(mode="json"))
    fp32_file = (run_dir / MODEL_FILE).stat().st_size
    record = {
        "name": name,
        "weights": config.model_dump(mode="json") | {"granularity": config.resolved_granularity()},
        "source_model_sha256": meta["sha256"],
        "num_parameters": meta["num_parameters"],
        "quantized_parameters": sum(e["numel"] for e in qn.errors.values()),
        "fp32_bytes": meta["fp32_bytes"],
        "fp32_file_bytes": fp32_file,
        "packed_file_bytes": saved["bytes"],
        "packed_breakdown_bytes": _tensor_bytes(path),
        "size_ratio": saved["bytes"] / fp32_file,
        "compression_factor": fp32_file / saved["bytes"],
        "folded_bn": qn.folded_bn,
        "layers": qn.errors,
        "sha256": saved["sha256"],
        "seconds": time.perf_counter() - start,
        "provenance": provenance(seed=run_config.seed),
    }
    write_json(path.with_suffix(".json"), record)
    return name, record


def open_compressed(run_dir: str | Path, name: str) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The dequantized float model of a packed artifact of the run (checksum verified), and its record."""
    run_dir = Path(run_dir)
    path = run_dir / WEIGHTS_DIR / f"{name}.safetensors"
    if not path.exists():
        have = ", ".join(list_compressed(run_dir)) or "none"
        raise CheckpointError(f"no packed weights '{name}' in {run_dir / WEIGHTS_DIR} (have: {have}); create them with `posthoc-vq compress-weights {run_dir}`")
    record = read_json(path.with_suffix(".json"), what="packed-weight record")
    model, _ = load_packed(path, sha256=record.get("sha256"))
    return model, record


def list_compressed(run_dir: str | Path) -> list[str]:
    """Names of the run's packed-weight artifacts."""
    folder = Path(run_dir) / WEIGHTS_DIR
    return sorted(p.stem for p in folder.glob("*.safetensors")) if folder.is_dir() else []
