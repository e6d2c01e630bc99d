"""The posthoc-vq bitstream: one image's (or a container of N images') entropy-coded code indices.

Format version 1 (integers little-endian; ``uvarint`` is unsigned LEB128, at most 5 bytes)::

    offset  size  field
    0       4     magic b"PHVQ"
    4       1     format version (1)
    5       1     kind: 0 = one image, 1 = a container of N images
    6       32    sha256 of the model file (model.safetensors)
    38      32    sha256 of the codebook file (codebook.safetensors)
    70      1     prior kind: 0 uniform, 1 empirical, 2 context
    71      8     the first 8 bytes of the prior file's sha256
    79      ...   uvarint C, H, W (the decoded image's shape), h, w (token grid; 1 x 1 for one vector), M (stages),
                  N (images; containers only), L (payload bytes)
    ...     L     payload: constriction ANS words (uint32, little-endian), at most 3 trailing zero bytes of the last word dropped
    end-4   4     CRC-32 (zlib) of every byte before it

A one-image file of a 28 x 28 or 32 x 32 image has an 87-byte header and trailer (:func:`overhead_bytes`),
so small images are best sent as a container: one header for N images. The payload's order of codes
is the prior's (:mod:`posthoc_vq.codec.priors`).

Version rule: any change to the layout or to the coding order makes a new version number; a reader
reads every version up to its own and refuses a newer one with a message to upgrade.

numpy and constriction only: the torch-free runtime reads files with this module.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np

from posthoc_vq.codec.priors import PRIOR_KINDS, Prior, PriorError
from posthoc_vq.errors import PosthocVQError

MAGIC = b"PHVQ"
FORMAT_VERSION = 1
SUFFIX = ".phvq"
_FIXED = struct.Struct("<4sBB32s32sB8s")  # magic, version, kind, model sha, codebook sha, prior kind, prior id
MAX_SIDE = 1 << 16
MAX_SYMBOLS = 1 << 31


class BitstreamError(PosthocVQError, ValueError):
    """A file that is not a readable posthoc-vq bitstream: foreign, truncated, corrupted, of a newer version, or made for another
    model or codebook (the CLI prints the message and exits 2)."""


@dataclass(frozen=True)
class Header:
    model_sha256: str
    codebook_sha256: str
    prior_kind: str
    prior_id: str  # hex of the first 8 bytes of the prior's sha256
    image_shape: tuple[int, int, int]  # (C, H, W)
    grid: tuple[int, int, int]  # (h, w, M)
    n_images: int = 1
    container: bool = False
    version: int = FORMAT_VERSION

    def describe(self) -> dict:
        return {"version": self.version, "container": self.container, "n_images": self.n_images, "model_sha256": self.model_sha256,
                "codebook_sha256": self.codebook_sha256, "prior": self.prior_kind, "prior_id": self.prior_id,
                "image_shape": list(self.image_shape), "grid": list(self.grid)}


def _uvarint(value: int) -> bytes:
    if value < 0 or value >= 1 << 32:
        raise ValueError(f"{value} does not fit the header's 32-bit field")
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _read_uvarint(data: bytes, pos: int, what: str) -> tuple[int, int]:
    value = 0
    for i in range(5):
        if pos + i >= len(data):
            raise BitstreamError(f"{what}: the header ends early (truncated file)")
        byte = data[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, pos + i + 1
    raise BitstreamError(f"{what}: a header field is not a valid number (corrupted file)")


def overhead_bytes(image_shape: tuple[int, int, int], grid: tuple[int, int, int], payload_bytes: int, n_images: int | None = None) -> int:
    """Bytes of a file other than its payload: fixed fields, shape fields, lengths and the CRC."""
    fields = [*image_shape, *grid, *([n_images] if n_images is not None else []), payload_bytes]
    return _FIXED.size + sum(len(_uvarint(v)) for v in fields) + 4


def pack_words(words: np.ndarray) -> bytes:
    """ANS words as little-endian bytes with up to 3 trailing zero bytes dropped (:func:`unpack_words` pads them back)."""
    data = np.asarray(words, dtype="<u4").tobytes()
    cut = 0
    while cut < 3 and len(data) - cut > 0 and data[len(data) - cut - 1] == 0:
        cut += 1
    return data[: len(data) - cut]


def unpack_words(payload: bytes) -> np.ndarray:
    return np.frombuffer(payload + b"\0" * (-len(payload) % 4), dtype="<u4").astype(np.uint32)


def write(header: Header, codes: np.ndarray, prior: Prior) -> bytes:
    """The file of ``codes`` (N, h, w, M) coded with ``prior``, described by ``header``."""
    codes = prior.check(codes)
    n, h, w, m = codes.shape
    if (h, w, m) != tuple(header.grid) or n != header.n_images or (not header.container and n != 1):
        raise ValueError(f"codes of shape {codes.shape} do not match the header's grid {header.grid} and {header.n_images} image(s)")
    if prior.kind != header.prior_kind or prior.sha256[:16] != header.prior_id:
        raise ValueError("the header names another prior than the one given")
    payload = pack_words(prior.encode(codes))
    fields = [*header.image_shape, *header.grid, *([n] if header.container else []), len(payload)]
    body = _FIXED.pack(MAGIC, FORMAT_VERSION, int(header.container), bytes.fromhex(header.model_sha256), bytes.fromhex(header.codebook_sha256),
                       PRIOR_KINDS.index(header.prior_kind), bytes.fromhex(header.prior_id))
    body += b"".join(_uvarint(v) for v in fields) + payload
    return body + struct.pack("<I", zlib.crc32(body))


def read_header(data: bytes, what: str = "bitstream") -> tuple[Header, bytes]:
    """(header, payload) of a file's bytes; checks magic, version, CRC and lengths (:class:`BitstreamError`)."""
    if len(data) < _FIXED.size + 4 or data[:4] != MAGIC:
        raise BitstreamError(f"{what}: not a posthoc-vq bitstream (no PHVQ magic number)" if data[:4] != MAGIC else f"{what}: truncated ({len(data)} bytes)")
    version = data[4]
    if version > FORMAT_VERSION or version == 0:
        raise BitstreamError(f"{what}: format version {version}, but this posthoc-vq reads versions 1 to {FORMAT_VERSION}; upgrade posthoc-vq to read it")
    (crc,) = struct.unpack("<I", data[-4:])
    if zlib.crc32(data[:-4]) != crc:
        raise BitstreamError(f"{what}: checksum mismatch: the file is truncated or corrupted")
    _, _, kind, model, codebook, prior_kind, prior_id = _FIXED.unpack_from(data)
    if kind > 1 or prior_kind >= len(PRIOR_KINDS):
        raise BitstreamError(f"{what}: unknown {'file kind' if kind > 1 else 'prior'} in the header (corrupted file)")
    pos, fields = _FIXED.size, []
    for _ in range(8 if kind else 7):
        value, pos = _read_uvarint(data, pos, what)
        fields.append(value)
    c, hh, ww, h, w, m = fields[:6]
    n, length = (fields[6], fields[7]) if kind else (1, fields[6])
    if pos + length + 4 != len(data):
        raise BitstreamError(f"{what}: the payload is {len(data) - pos - 4} bytes but the header says {length} (truncated or corrupted)")
    if not (1 <= c <= 4 and 1 <= hh <= MAX_SIDE and 1 <= ww <= MAX_SIDE and 1 <= h <= hh and 1 <= w <= ww and 1 <= m <= 64) or n * h * w * m > MAX_SYMBOLS:
        raise BitstreamError(f"{what}: implausible shapes in the header (image {c}x{hh}x{ww}, grid {h}x{w}x{m}, {n} images)")
    header = Header(model.hex(), codebook.hex(), PRIOR_KINDS[prior_kind], prior_id.hex(), (c, hh, ww), (h, w, m), n, bool(kind), version)
    return header, data[pos : pos + length]


def read(data: bytes, prior: Prior, what: str = "bitstream") -> tuple[Header, np.ndarray]:
    """(header, codes (N, h, w, M)) of a file, decoded with ``prior`` (the one the header names: the caller checks identity)."""
    header, payload = read_header(data, what)
    if prior.kind != header.prior_kind or prior.sha256[:16] != header.prior_id:
        raise BitstreamError(f"{what}: made with the {header.prior_kind} prior {header.prior_id}, not the one given ({prior.kind} {prior.sha256[:16]})")
    h, w, m = header.grid
    if m != prior.n_stages:
        raise BitstreamError(f"{what}: {m} stage(s) in the header, but the prior has {prior.n_stages}")
    try:
        codes = prior.decode(unpack_words(payload), header.n_images, h, w)
    except PriorError as err:
        raise BitstreamError(f"{what}: {err}") from err
    return header, codes
