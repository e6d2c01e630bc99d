"""Weight-quantized copies of a trained run: pack one from a :class:`WeightsConfig`, open it, list them.

Saved as the folder ``<run>/weights/<name>/``, published as one unit: ``weights.safetensors``
(the packed, self-contained file whose size is what ships) and ``weights.json`` (sizes
measured from the files, per-layer weight errors, the config, the fp32 model's checksum,
provenance). Sizes are file sizes on
disk, not bit arithmetic: the ratio is ``packed file bytes / fp32 model file bytes``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from posthoc_vq.config import WeightsConfig
from posthoc_vq.errors import CheckpointError, NotFoundError, UntrainedRunError
from posthoc_vq.derivation import check_source, recorded_sha256, warn_replaced
from posthoc_vq.io import atomic_folder, write_json
from posthoc_vq.provenance import provenance
from posthoc_vq.quantize.weights import load_packed, quantize_network, save_packed
from posthoc_vq.records import PackedWeightsRecord, read_dict
from posthoc_vq.run import WEIGHTS_RECORD, WEIGHTS_TENSORS, Run, check_name


def require_trained(run_dir: Path, meta: dict[str, Any]) -> None:
    """Refuse a run whose model never trained: its numbers would measure random weights."""
    if meta.get("trained_steps") == 0:
        raise UntrainedRunError(
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


def compress_run(run_dir: str | Path | Run, config: WeightsConfig) -> tuple[str, dict[str, Any]]:
    """Quantize the run's model weights, write the packed file and its JSON record (under the run's lock).

    Returns
    -------
    (name, the saved JSON record)
    """
    run = Run.open(run_dir)
    name = check_name(config.default_name(), "weights name")  # a bad name fails before any work
    with run.lock("compress-weights"):
        model, meta = run.load_model()
        require_trained(run.root, meta)
        run_config = run.config()
        start = time.perf_counter()
        qn = quantize_network(model, config)
        fp32_file = run.model_file.stat().st_size
        before = recorded_sha256(run.weights_files(name)[1])
        with atomic_folder(run.new_artifact("weights", name)) as folder:
            path = folder / WEIGHTS_TENSORS
            saved = save_packed(path, qn, model.config.model_dump(mode="json"))
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
            write_json(folder / WEIGHTS_RECORD, record)
        warn_replaced(f"packed weights '{name}' of {run.root}", run.weights_files(name)[1], before)
    return name, record


def open_compressed(run_dir: str | Path | Run, name: str) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The dequantized float model of a packed artifact of the run (checksum verified, and packed from the run's model
    as it is now: :func:`~posthoc_vq.derivation.check_source`), and its record."""
    run = Run.open(run_dir)
    path, record_path = run.weights_files(name)
    if not record_path.exists():
        have = ", ".join(run.weights_names()) or "none"
        raise NotFoundError(f"no packed weights '{name}' in {run.root / 'weights'} (have: {have}); create them with `posthoc-vq compress-weights {run.root}`")
    for attempt in range(3):  # a writer may publish a new version between the two reads (see records.read_pair)
        record = read_dict(record_path, PackedWeightsRecord, "packed-weight record")
        try:
            model, _ = load_packed(path, sha256=record["sha256"])
            break
        except CheckpointError:
            if attempt == 2 or read_dict(record_path, PackedWeightsRecord, "packed-weight record")["sha256"] == record["sha256"]:
                raise
    check_source(f"packed weights '{name}'", record_path, record.get("source_model_sha256"), run.model_record()["sha256"], "the run's model",
                 f"pack them again from the model as it is now: `posthoc-vq compress-weights {run.root} --bits {record['weights']['bits']} --name {name}`")
    return model, record
