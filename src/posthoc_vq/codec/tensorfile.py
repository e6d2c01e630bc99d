"""safetensors files read and written with numpy alone, for the torch-free decoder runtime.

The format (https://github.com/huggingface/safetensors): 8 bytes little-endian header length n,
n bytes of JSON (``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}``),
then the tensors' bytes, little-endian, C order. Writing is deterministic (names sorted, JSON
without spaces, padded to 8 bytes), so the same arrays give the same bytes and the same sha256.
Files are readable by ``safetensors.numpy.load_file`` (tested); the writer publishes through a temp
file and a rename.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

import numpy as np

_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1", "U8": "u1", "U16": "<u2", "U32": "<u4", "U64": "<u8"}
_NAMES = {np.dtype(v): k for k, v in _DTYPES.items()}
MAX_HEADER_BYTES = 100 * 1024 * 1024


class TensorFileError(ValueError):
    """A file that is not a readable safetensors file (truncated, corrupt, foreign)."""


def encode(tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> bytes:
    """The bytes of a safetensors file holding ``tensors`` (and string ``metadata``)."""
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in sorted(metadata.items())}
    blobs, offset = [], 0
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        a = a.astype(a.dtype.newbyteorder("<"), copy=False)
        if a.dtype not in _NAMES:
            raise TypeError(f"tensor {name!r}: dtype {a.dtype} cannot be written to safetensors")
        blob = a.tobytes()
        header[name] = {"dtype": _NAMES[a.dtype], "shape": list(a.shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


def decode(data: bytes, what: str = "tensor file") -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(tensors, metadata) of safetensors bytes; anything malformed raises :class:`TensorFileError` naming ``what``."""
    if len(data) < 8:
        raise TensorFileError(f"{what}: {len(data)} bytes, too short for a safetensors file (truncated?)")
    (n,) = struct.unpack("<Q", data[:8])
    if n > min(MAX_HEADER_BYTES, len(data) - 8):
        raise TensorFileError(f"{what}: header length {n} exceeds the file's {len(data)} bytes (truncated or not a safetensors file)")
    try:
        header = json.loads(data[8 : 8 + n])
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise TensorFileError(f"{what}: unreadable header ({err}); the file is damaged or not a safetensors file") from err
    if not isinstance(header, dict):
        raise TensorFileError(f"{what}: header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    body = memoryview(data)[8 + n :]
    tensors = {}
    for name, spec in header.items():
        try:
            dtype = np.dtype(_DTYPES[spec["dtype"]])
            begin, end = (int(v) for v in spec["data_offsets"])
            shape = tuple(int(s) for s in spec["shape"])
        except (KeyError, TypeError, ValueError) as err:
            raise TensorFileError(f"{what}: bad entry for tensor {name!r} ({err})") from err
        if not 0 <= begin <= end <= len(body) or end - begin != dtype.itemsize * int(np.prod(shape, dtype=np.int64)):
            raise TensorFileError(f"{what}: tensor {name!r} does not fit the file (truncated?)")
        tensors[name] = np.frombuffer(body[begin:end], dtype=dtype).reshape(shape).copy()
    return tensors, {str(k): str(v) for k, v in metadata.items()}


def save(path: str | os.PathLike, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> str:
    """Write ``tensors`` to ``path`` (temp file, then rename); returns the file's sha256."""
    data = encode(tensors, metadata)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return hashlib.sha256(data).hexdigest()


def load(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, str], str]:
    """(tensors, metadata, sha256) of a safetensors file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as err:
        raise TensorFileError(f"{path}: no such file") from err
    tensors, metadata = decode(data, str(path))
    return tensors, metadata, hashlib.sha256(data).hexdigest()
