"""Schemas of every JSON file the project reads back, and the one reader that checks them.

A file can be valid JSON and still be wrong: ``[]``, ``null``, a record with its checksum
removed, a pointer at another run. :func:`read_record` parses a file through its pydantic
schema and turns every such case into a one-line :class:`~posthoc_vq.errors.CheckpointError`
that names the file and the field. Records keep the fields they do not declare
(``extra="allow"``): a schema states what a reader relies on, not everything a writer adds.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from posthoc_vq.errors import CheckpointError
from posthoc_vq.io import read_json
from posthoc_vq.results import Compute, Evaluation, Warning_  # noqa: F401  (re-exported: records declare them)

SHA256 = r"^[0-9a-f]{64}$"
CHECKPOINT_NAME = r"^epoch-[0-9]{4,}$"

R = TypeVar("R", bound=BaseModel)


class Record(BaseModel):
    model_config = ConfigDict(extra="allow", allow_inf_nan=True)


def compute_record(wall_seconds: float, optimizer_steps: int = 0, images_seen: int = 0, **extra: Any) -> dict[str, Any]:
    """A :class:`Compute` record as written into JSON files (``extra``: step-specific counts, e.g. ``vectors_fitted``)."""
    return {"wall_seconds": float(wall_seconds), "optimizer_steps": int(optimizer_steps), "images_seen": int(images_seen), **extra}


def total_compute(parts: dict[str, dict[str, Any] | None]) -> dict[str, Any]:
    """``parts`` (name -> compute record, None where unknown) with their ``total`` and whether it is ``complete``.

    The total sums the known parts; ``complete`` is False when a part is unknown (a run trained, a
    codebook fitted or latents cached before compute accounting), and ``missing`` names those parts.
    """
    known = [p for p in parts.values() if p is not None]
    total = compute_record(sum(p["wall_seconds"] for p in known), sum(p["optimizer_steps"] for p in known), sum(p["images_seen"] for p in known))
    missing = [name for name, p in parts.items() if p is None]
    return {**parts, "total": total, "complete": not missing, "missing": missing}


def model_compute(summary: dict[str, Any] | None) -> dict[str, dict[str, Any] | None]:
    """The parts of what produced a run's model, from its ``train_summary.json`` (None: unfinished):
    ``training``, plus ``finetune`` for a fine-tuned run; sum them with :func:`total_compute`.

    A fine-tuned run's ``training`` is its source model's (``upstream.training``); the codebook the
    fine-tune started from is counted by that codebook's record (``compute``, ``encoding_compute``), not here.
    """
    summary = summary or {}
    upstream = summary.get("upstream")
    if upstream is not None:
        return {"training": upstream.get("training"), "finetune": summary.get("compute")}
    return {"training": summary.get("compute")}


class ModelRecord(Record):
    """``model.json``: the usable model's architecture, size and the weights' checksum."""

    model: dict[str, Any]
    num_parameters: int = Field(ge=0)
    fp32_bytes: int = Field(ge=0)
    sha256: str = Field(pattern=SHA256)
    epoch: int | None = None
    trained_steps: int | None = Field(None, ge=0)


class CheckpointPointer(Record):
    """``checkpoints/latest.json``: the newest complete resume checkpoint of this run."""

    checkpoint: str = Field(pattern=CHECKPOINT_NAME)
    epoch: int = Field(ge=0)


class CheckpointChecksums(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    model: str = Field(alias="model.safetensors", pattern=SHA256)
    optimizer: str = Field(alias="optimizer.safetensors", pattern=SHA256)


class OptimizerState(Record):
    param_groups: list[dict[str, Any]]
    scalars: dict[str, Any] = Field(default_factory=dict)


class CheckpointState(Record):
    """``checkpoints/epoch-NNNN/state.json``."""

    epoch: int = Field(ge=0)
    sha256: CheckpointChecksums
    optimizer: OptimizerState


class LatentCacheRecord(Record):
    """``latents/<kind>-<split>[-seedS].json``: which model and data the cached latents came from."""

    split: str
    kind: Literal["mu", "z"]
    seed: int | None = None
    n: int = Field(ge=0)
    shape: list[int]
    model_sha256: str = Field(pattern=SHA256)
    sha256: str = Field(pattern=SHA256)
    compute: Compute | None = None  # the encoding (absent in caches written before compute accounting)


class CodebookRecord(Record):
    """``codebooks/<name>/codebook.json``."""

    method: str
    params: dict[str, Any]
    n_codes: int = Field(ge=1)
    dim: int = Field(ge=1)
    bits_per_vector: float = Field(ge=0)
    tensor_shapes: dict[str, list[int]]
    sha256: str = Field(pattern=SHA256)
    state: dict[str, Any] = Field(default_factory=dict)
    compute: Compute | None = None  # the fit (absent in codebooks fitted before compute accounting)
    encoding_compute: Compute | None = None  # the encoding of the latents it was fitted on


class PackedWeightsRecord(Record):
    """``weights/<name>/weights.json``: sizes measured from the files, errors, checksums."""

    name: str
    weights: dict[str, Any]
    source_model_sha256: str = Field(pattern=SHA256)
    sha256: str = Field(pattern=SHA256)
    packed_file_bytes: int = Field(ge=0)
    fp32_file_bytes: int = Field(ge=0)
    layers: dict[str, dict[str, Any]]


class TrainSummary(Record):
    """``train_summary.json``."""

    converged: bool
    stop_reason: str
    epochs: int = Field(ge=0)
    best_epoch: int = Field(ge=0)
    steps: int = Field(ge=0)
    compute: Compute | None = None  # this run's own training (a fine-tune's: the fine-tune); absent before compute accounting
    upstream: dict[str, Compute | None] | None = None  # a fine-tune: what its source model and codebook cost


class FinetuneRecord(Record):
    """``finetune.json``: where a fine-tuned run came from and how it is trained (``posthoc-vq finetune``)."""

    source_run: str
    source_model_sha256: str = Field(pattern=SHA256)
    codebook: str
    codebook_sha256: str = Field(pattern=SHA256)
    part: Literal["decoder", "decoder+codebook"]
    epochs: int = Field(ge=1)
    lr: float = Field(gt=0)
    patience: int = Field(ge=1)


class HistoryRow(Record):
    epoch: int = Field(ge=1)


class History(BaseModel):
    rows: list[HistoryRow]


class Provenance(Record):
    seed: int | None = None
    git_commit: str | None = None
    versions: dict[str, str | None]


class SweepCellAxes(BaseModel):
    """The axis values of a sweep cell: a JSON object."""

    model_config = ConfigDict(extra="allow")


class SweepCellMetrics(Record):
    """The metrics stored for a ``done`` cell of a sweep's results database."""

    psnr_db: float
    ssim: float
    continuous_psnr_db: float
    warnings: list[str]


def check_record(data: Any, schema: type[R], path: str | os.PathLike, what: str) -> R:
    """``data`` validated against ``schema``; a wrong shape is a CheckpointError naming ``path``."""
    try:
        return schema.model_validate(data)
    except ValidationError as err:
        e = err.errors()[0]
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        got = type(data).__name__ if not e["loc"] else repr(e.get("input"))[:60]
        more = f" (and {len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
        raise CheckpointError(f"{path} is not a valid {what}: {loc}: {e['msg']} (got {got}){more}; restore it or re-create the {what}") from None


def _read(path: str | os.PathLike, schema: type[R], what: str) -> tuple[Any, R]:
    data = read_json(path, what=what)
    wrapped = {"rows": data} if schema is History and isinstance(data, list) else data  # history.json is a bare list of rows
    return data, check_record(wrapped, schema, Path(path), what)


def read_record(path: str | os.PathLike, schema: type[R], what: str) -> R:
    """Read JSON at ``path`` through ``schema``; missing, damaged or wrongly shaped files raise CheckpointError."""
    return _read(path, schema, what)[1]


def read_evaluation(path: str | os.PathLike, what: str = "evaluation") -> Evaluation:
    """The evaluation stored at ``path``, typed; a missing, damaged or wrongly shaped file is a CheckpointError naming it."""
    return read_record(path, Evaluation, what)


def read_dict(path: str | os.PathLike, schema: type[BaseModel], what: str) -> dict[str, Any]:
    """The file's JSON object as a plain dict, after :func:`read_record` checked it against ``schema``."""
    return _read(path, schema, what)[0]


def read_pair(record_path: str | os.PathLike, schema: type[BaseModel], what: str, tensor_path: str | os.PathLike, attempts: int = 3) -> tuple[dict[str, Any], dict[str, Any]]:
    """An artifact's record and its tensors (checked against the record's sha256), read as one consistent pair.

    A writer may publish a new version of the artifact folder between the two reads (readers take
    no lock); then the record has changed since it was read, and the pair is read again.
    """
    from posthoc_vq.io import load_tensors

    for attempt in range(attempts):
        meta = read_dict(record_path, schema, what)
        try:
            return meta, load_tensors(tensor_path, sha256=meta["sha256"])
        except CheckpointError:
            try:
                replaced = read_json(record_path, what=what).get("sha256") != meta["sha256"]
            except CheckpointError:  # the folder is being replaced right now
                replaced = True
            if not replaced or attempt == attempts - 1:
                raise
            time.sleep(0.01 * (attempt + 1))
    raise AssertionError("unreachable")
