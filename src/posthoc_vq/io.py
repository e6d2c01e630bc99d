"""Atomic, pickle-free file I/O: JSON and safetensors written to a temp file, then renamed.

A reader never sees a half-written file: every writer goes through
:func:`atomic_write`, which writes ``<name>.tmp-<pid>`` in the same folder,
fsyncs it and ``os.replace``-s it over the target. Loaders turn every way a file
can be damaged into a :class:`CheckpointError` that names the file.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from posthoc_vq.errors import CheckpointError

if TYPE_CHECKING:  # torch and safetensors load on first tensor I/O, not when a path or a JSON file is all that is needed (CLI start-up)
    import torch


@contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path next to ``path``; on success it replaces ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp folder beside ``path``; on success it replaces the folder ``path`` as one unit.

    The files written into it are fsynced, then the folder is renamed into place, so a reader
    sees the old folder, the new one, or (for the instant between the two renames when an old
    one is replaced) none, but never a mix of old and new files. A kill leaves a ``.tmp-`` folder
    that the next writer of the run removes (:meth:`posthoc_vq.run.Run.lock`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        for f in tmp.iterdir():
            with open(f, "rb+") as fh:
                os.fsync(fh.fileno())
        old = None
        if path.exists():
            old = path.with_name(f".old-{path.name}.tmp-{os.getpid()}")
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def json_safe(obj: Any, *, nan_to_none: bool = False) -> Any:
    """``obj`` with paths as strings, typed results as their JSON, numpy/torch scalars and arrays as Python values; with ``nan_to_none``
    also NaN and infinities as None (strict JSON, for machine output)."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v, nan_to_none=nan_to_none) for k, v in obj.items()}
    if callable(getattr(obj, "to_json", None)):  # a typed result (posthoc_vq.results)
        return json_safe(obj.to_json(), nan_to_none=nan_to_none)
    if isinstance(obj, (list, tuple)):
        return [json_safe(v, nan_to_none=nan_to_none) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float):
        return None if nan_to_none and (math.isnan(obj) or math.isinf(obj)) else obj
    if hasattr(obj, "item") and getattr(obj, "ndim", 1) == 0:  # numpy / torch scalars
        return json_safe(obj.item(), nan_to_none=nan_to_none)
    if hasattr(obj, "tolist"):  # arrays, e.g. an explicit init passed as a hyperparameter
        return json_safe(obj.tolist(), nan_to_none=nan_to_none)
    return obj


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` as indented JSON atomically (inf and NaN as Python's json writes them)."""
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(json_safe(data), indent=2, sort_keys=False) + "\n")
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) atomically."""
    with atomic_write(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def read_json(path: str | os.PathLike, what: str = "file") -> Any:
    """Read JSON; a missing or damaged file is a CheckpointError naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{what} not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} is damaged (not valid JSON: {err}); restore it or re-create the {what}") from None


def save_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> str:
    """Save tensors as safetensors atomically and return the file's sha256.

    The file is byte-for-byte a function of its contents: safetensors writes its JSON header (tensor entries and
    ``__metadata__``) in hash-map order, which varies between runs, so the header is written again with sorted keys
    (the same characters, so the same length and data offsets). Equal tensors and metadata give equal checksums.
    """
    from safetensors.torch import save

    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    data = save(tensors, metadata=metadata)
    with atomic_write(path) as tmp:
        tmp.write_bytes(canonical_safetensors(data))
    return sha256_file(path)


def canonical_safetensors(data: bytes) -> bytes:
    """A safetensors file's bytes with its JSON header's keys sorted (padding kept): data and offsets unchanged."""
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    text = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    if len(text) > n:  # never expected (the same keys and values): keep the library's bytes
        return data
    return data[:8] + text + b" " * (n - len(text)) + data[8 + n :]


def load_tensors(path: str | os.PathLike, sha256: str | None = None) -> dict[str, torch.Tensor]:
    """Load a safetensors file; missing, truncated, corrupt or checksum-mismatched files raise CheckpointError."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"tensor file not found: {path}")
    if sha256 is not None:
        try:
            actual = sha256_file(path)
        except FileNotFoundError:
            raise CheckpointError(f"tensor file not found: {path}") from None
        if actual != sha256:
            raise CheckpointError(
                f"{path} is corrupt or was modified: sha256 {actual[:12]}... does not match the recorded {sha256[:12]}...; "
                "re-create it (for a training checkpoint, resume from an earlier one or retrain)"
            )
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{path} is truncated or not a safetensors file ({err}); re-create it") from None


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
