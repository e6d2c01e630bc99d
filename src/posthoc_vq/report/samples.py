"""The stored sample sets a report draws: read, checked against the run's current model and artifacts, never computed.

``posthoc-vq evaluate`` (continuous and ``--codebook``), ``compress-weights`` and the sweep jobs
decode the fixed images, the interpolation strip and the code counts and store them in the run
(:mod:`posthoc_vq.evaluation.samples` describes the files). This module reads them. A sample file
that is absent, damaged, or was made with another model or another version of its codebook or
packed weights (its recorded checksum differs from the record's) is left out and becomes a
*missing* note naming the command that writes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from posthoc_vq.run import Run


@dataclass
class SampleSet:
    """One stored sample file: its tensors and metadata (see :mod:`posthoc_vq.evaluation.samples`)."""

    path: Path
    tensors: dict[str, torch.Tensor]
    info: dict[str, str]

    def __getitem__(self, key: str) -> torch.Tensor:
        return self.tensors[key]

    def get(self, key: str) -> torch.Tensor | None:
        return self.tensors.get(key)


@dataclass
class StoredSamples:
    """The current sample sets of a run on one split: ``continuous`` (or None), per codebook and per packed weights; ``missing`` notes."""

    split: str
    continuous: SampleSet | None = None
    codebooks: dict[str, SampleSet] = field(default_factory=dict)
    weights: dict[str, SampleSet] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)

    @property
    def idx(self) -> list[int]:
        """The fixed images (indices into the split); [] without continuous samples."""
        return [int(i) for i in self.continuous["idx"]] if self.continuous is not None else []

    @property
    def labels(self) -> list[int]:
        """Classes of the fixed images."""
        return [int(c) for c in self.continuous["labels"]] if self.continuous is not None else []


def read_sample_file(path: Path) -> SampleSet:
    """Tensors and metadata of a sample file; damaged files raise (the caller turns that into a missing note)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return SampleSet(path, {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {}))


def _weights_command(run: Run, name: str, record: dict[str, Any], split: str) -> str:
    bits = (record.get("weights") or {}).get("bits", 8)
    return (f"re-run `posthoc-vq compress-weights {run.root} --bits {bits} --name {name} --split {split}` with the settings recorded in "
            f"{run.weights_files(name)[1]} (it packs, evaluates and stores the samples)")


def _load(run: Run, path: Path, command: str, what: str, model_sha: str | None, artifact_sha: str | None, missing: list[str]) -> SampleSet | None:
    if not path.exists():
        missing.append(f"no decoded samples of {what} ({path} not found): {command}.")
        return None
    try:
        s = read_sample_file(path)
    except Exception as err:  # damaged or truncated: say so, draw the rest
        missing.append(f"{path} is damaged ({type(err).__name__}): {command}.")
        return None
    if s.info.get("model_sha256") != model_sha or (artifact_sha is not None and s.info.get("artifact_sha256") != artifact_sha):
        missing.append(f"{path} was made with another version of the model or of {what} (its checksum differs from the record's): {command}.")
        return None
    return s


def read_samples(run: Run, split: str, *, model_sha: str | None, codebooks: dict[str, dict[str, Any]],
                 weights: dict[str, dict[str, Any]]) -> StoredSamples:
    """The run's stored sample sets on ``split`` for its model (``model_sha``: model.json's sha256), ``codebooks`` and
    ``weights`` (name -> record); a codebook's or weights' samples whose fixed images differ from the continuous ones are left out."""
    out = StoredSamples(split)
    evaluate = f"run `posthoc-vq evaluate {run.root} --split {split}`"
    out.continuous = _load(run, run.samples_file(split), evaluate, "the continuous model (reconstruction grid, interpolation strip)",
                           model_sha, None, out.missing)
    for name, record in codebooks.items():
        s = _load(run, run.samples_file(split, codebook=name), f"run `posthoc-vq evaluate {run.root} --codebook {name} --split {split}`",
                  f"codebook {name}", model_sha, record.get("sha256"), out.missing)
        if s is not None:
            out.codebooks[name] = s
    for name, record in weights.items():
        s = _load(run, run.samples_file(split, weights=name), _weights_command(run, name, record, split), f"packed weights {name}",
                  model_sha, record.get("sha256"), out.missing)
        if s is not None:
            out.weights[name] = s
    if out.continuous is not None:
        for kind, sets in (("codebook", out.codebooks), ("packed weights", out.weights)):
            for name in [n for n, s in sets.items() if not torch.equal(s["idx"], out.continuous["idx"])]:
                out.missing.append(f"the samples of {kind} {name} show other images than the continuous ones (the split changed?): "
                                   f"re-run the command that evaluated it; it is left out of the grid.")
                del sets[name]
    return out
