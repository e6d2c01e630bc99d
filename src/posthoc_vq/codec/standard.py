"""The standard image codecs, encoded to real file bytes at a ladder of their quality knob (numpy only, no torch).

A learned codec is compared with JPEG, WebP and AVIF (through Pillow) and JPEG XL (through
``imagecodecs``, the optional extra ``codecs``) on rate-distortion curves. :func:`encode` returns the
whole file exactly as the encoder writes it (container and headers included), so the rate of an
image is ``len(encode(...)) * 8 / (H * W)`` bits per pixel; :func:`decode` gives back the pixels.

Fixed encoder settings (:data:`SETTINGS`; every one makes the output deterministic: the same image
and quality always give the same bytes, which the unit tests check):

* **jpeg**: Pillow's libjpeg(-turbo), baseline (not progressive), ``optimize=True`` (Huffman tables
  optimized for the image), chroma ``4:2:0`` for RGB (Pillow's default, set explicitly), one
  component for grayscale (stored natively), JFIF header. Quality 1..100 (libjpeg's scale).
* **webp**: Pillow's libwebp, lossy (VP8), ``method=6`` (the slowest, best-compressing search;
  about 0.3 ms per 32x32 image), always YUV 4:2:0. Quality 0..100.
* **avif**: Pillow's libavif with the ``aom`` encoder, ``speed=6`` (libavif's and Pillow's default; speed 4 gains
  about 0.2-0.4 dB for three times the time), ``max_threads=1`` (one thread: deterministic, and
  parallelism belongs to the caller), chroma ``4:2:0`` for RGB, monochrome ``4:0:0`` for grayscale
  (stored natively), full range. Quality 0..100 (libavif's scale; 100 is lossless).
* **jxl**: ``imagecodecs.jpegxl_encode`` (libjxl), ``effort=7`` (libjxl's default), ``numthreads=1``,
  bare codestream (no ISOBMFF container), grayscale stored natively. Quality 0..100 is libjxl's
  quality (``cjxl -q``), which imagecodecs maps to a Butteraugli distance with
  ``JxlEncoderDistanceFromQuality`` (quality 90 is distance 1.0, 100 is distance 0).

Grayscale: an (H, W) image is stored as one channel by JPEG, AVIF and JPEG XL. **WebP cannot store
grayscale**: the image is encoded as RGB with R = G = B, and the decoded RGB (whose channels differ by
rounding in the YUV conversion) gives back its green channel, the channel with the largest luma
weight (on grayscale images it equals Pillow's ITU-R 601 luma ``convert("L")`` up to rounding). A
WebP file does not record that it came from a grayscale image, so :func:`decode` takes ``channels=1``
to ask for it.

Default ladders (:data:`DEFAULT_QUALITIES`, 8 points each, low to high quality), measured with these
settings on 32x32 RGB CIFAR-10 images and 28x28 Fashion-MNIST images (mean bits per pixel, whole file;
a pixel is one (H, W) position, whatever the channels):

======  =================================  ==================  ==================
codec   qualities                          32x32 RGB bpp       28x28 gray bpp
======  =================================  ==================  ==================
jpeg    5 10 20 35 50 70 85 95             2.5 - 5.4           2.2 - 6.8
webp    0 10 25 40 55 70 85 95             0.7 - 4.6           1.0 - 4.5
avif    0 15 30 45 60 70 80 90             2.6 - 5.2           3.5 - 6.1
jxl     10 25 40 55 70 80 90 95            0.9 - 3.7           1.5 - 5.2
======  =================================  ==================  ==================

On images this small the file overhead sets a floor under the rate that no quality reaches below:
JPEG's JFIF header, quantization and Huffman tables take about 290 bytes for RGB (2.3 bpp at 32x32)
and 170 bytes for grayscale (1.7 bpp at 28x28); AVIF's HEIF boxes (``ftyp``, ``meta``) about 275
bytes (2.1 bpp at 32x32); WebP's RIFF/VP8 headers about 30 bytes and JPEG XL's codestream header a
few bytes. So WebP and JPEG XL reach below 1 bpp, JPEG and AVIF do not, and none reaches 0.2 bpp on a
32x32 image (25.6 bytes for the whole file). The ladders stop below each codec's near-lossless end
(JPEG 100, AVIF 100 and JPEG XL 100 jump to 7-18 bpp) and above JPEG XL's lowest qualities, where
libjxl's rate is not monotone in quality on these images.
"""

from __future__ import annotations

import io
from types import ModuleType
from typing import Any

import numpy as np
from PIL import Image, features

from posthoc_vq import extras
from posthoc_vq.errors import ConfigError, MissingExtraError

__all__ = ["CODECS", "DEFAULT_QUALITIES", "QUALITY_RANGE", "SETTINGS", "available_codecs", "check_codec", "check_quality",
           "decode", "encode", "settings"]

#: the standard codecs, in the order results list them
CODECS: tuple[str, ...] = ("jpeg", "webp", "avif", "jxl")

#: inclusive range of each codec's quality knob
QUALITY_RANGE: dict[str, tuple[int, int]] = {"jpeg": (1, 100), "webp": (0, 100), "avif": (0, 100), "jxl": (0, 100)}

#: the default ladder of each codec, low to high quality (see the module docstring for the rates they give)
DEFAULT_QUALITIES: dict[str, tuple[int, ...]] = {
    "jpeg": (5, 10, 20, 35, 50, 70, 85, 95),
    "webp": (0, 10, 25, 40, 55, 70, 85, 95),
    "avif": (0, 15, 30, 45, 60, 70, 80, 90),
    "jxl": (10, 25, 40, 55, 70, 80, 90, 95),
}

_JPEG = {"optimize": True, "progressive": False, "subsampling": "4:2:0"}
_WEBP = {"lossless": False, "method": 6}
_AVIF = {"speed": 6, "max_threads": 1, "codec": "aom", "subsampling": "4:2:0", "range": "full"}
_JXL = {"effort": 7, "numthreads": 1, "usecontainer": False}

#: the fixed encoder settings of each codec (besides the quality), as recorded in results
SETTINGS: dict[str, dict[str, Any]] = {
    "jpeg": {**_JPEG, "grayscale": "native (one component)", "library": "Pillow (libjpeg)"},
    "webp": {**_WEBP, "subsampling": "4:2:0 (always, VP8)", "grayscale": "encoded as RGB, green channel decoded", "library": "Pillow (libwebp)"},
    "avif": {**_AVIF, "grayscale": "native (monochrome 4:0:0)", "library": "Pillow (libavif)"},
    "jxl": {**_JXL, "quality": "libjxl quality (cjxl -q), distance from JxlEncoderDistanceFromQuality", "grayscale": "native",
            "library": "imagecodecs (libjxl)"},
}

_PIL_FORMAT = {"jpeg": "JPEG", "webp": "WEBP", "avif": "AVIF"}
_PIL_FEATURE = {"jpeg": "jpg", "webp": "webp", "avif": "avif"}


def check_codec(codec: str) -> str:
    """``codec`` if it is one of :data:`CODECS`, else :class:`ConfigError` naming the valid ones."""
    if not isinstance(codec, str) or codec not in CODECS:
        raise ConfigError(f"unknown standard codec {codec!r}: use one of {', '.join(CODECS)}")
    return codec


def check_quality(codec: str, quality: Any) -> int:
    """``quality`` as an int if it is an integer in ``codec``'s :data:`QUALITY_RANGE`, else :class:`ConfigError`."""
    lo, hi = QUALITY_RANGE[check_codec(codec)]
    if isinstance(quality, (bool, np.bool_)) or not isinstance(quality, (int, np.integer)) or not lo <= int(quality) <= hi:
        raise ConfigError(f"{codec} quality must be an integer from {lo} to {hi}, got {quality!r}")
    return int(quality)


def _imagecodecs() -> ModuleType:
    """imagecodecs with JPEG XL, or :class:`MissingExtraError` naming the ``codecs`` extra."""
    module = extras.require("imagecodecs", "codecs", "JPEG XL")
    if not getattr(getattr(module, "JPEGXL", None), "available", False):
        raise MissingExtraError(f"JPEG XL needs the 'codecs' extra: {extras.install_command('codecs')} "
                                f"(imagecodecs {getattr(module, '__version__', '?')} is installed without JPEG XL)")
    return module


def _aom_available() -> bool:
    from PIL import AvifImagePlugin

    return bool(AvifImagePlugin._avif.encoder_codec_available(_AVIF["codec"]))


def available_codecs() -> tuple[str, ...]:
    """The codecs of :data:`CODECS` this installation can encode and decode (jxl only with imagecodecs built with JPEG XL)."""
    out = []
    for codec in CODECS:
        if codec == "jxl":
            try:
                _imagecodecs()
            except MissingExtraError:
                continue
        elif not features.check(_PIL_FEATURE[codec]) or (codec == "avif" and not _aom_available()):
            continue
        out.append(codec)
    return tuple(out)


def settings(codec: str) -> dict[str, Any]:
    """The fixed settings of ``codec`` (:data:`SETTINGS`) with the versions of the libraries that encode it."""
    out = dict(SETTINGS[check_codec(codec)])
    out["quality_range"] = list(QUALITY_RANGE[codec])
    if codec == "jxl":
        module = _imagecodecs()
        out["versions"] = {"imagecodecs": module.__version__, "libjxl": module.jpegxl_version()}
    else:
        out["versions"] = {"Pillow": Image.__version__, _PIL_FEATURE[codec]: features.version(_PIL_FEATURE[codec])}
        if codec == "jpeg" and features.check_feature("libjpeg_turbo"):
            out["versions"]["libjpeg_turbo"] = features.version_feature("libjpeg_turbo")
        if codec == "avif":
            from PIL import AvifImagePlugin

            out["versions"]["avif_codecs"] = AvifImagePlugin._avif.codec_versions()
    return out


def _check_image(image: Any) -> np.ndarray:
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise TypeError(f"image must be uint8, got {image.dtype}")
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)) or min(image.shape[:2]) < 1:
        raise ValueError(f"image must be (H, W) grayscale or (H, W, 3) RGB, got shape {image.shape}")
    return np.ascontiguousarray(image)


def encode(image: np.ndarray, codec: str, quality: int) -> bytes:
    """The file ``codec`` writes for ``image`` at ``quality``: every byte of it, headers included.

    Parameters
    ----------
    image : uint8 array (H, W) grayscale or (H, W, 3) RGB.
    codec : one of :data:`CODECS`.
    quality : integer in :data:`QUALITY_RANGE` of the codec (higher is better quality, more bytes).

    Raises
    ------
    ConfigError
        Unknown codec, or quality not an integer in range.
    MissingExtraError
        ``jxl`` without imagecodecs (the ``codecs`` extra).
    TypeError, ValueError
        ``image`` not a uint8 array of one of those shapes.
    """
    quality = check_quality(codec, quality)
    image = _check_image(image)
    if codec == "jxl":
        return bytes(_imagecodecs().jpegxl_encode(image, quality, **_JXL))
    pil = Image.fromarray(image)  # (H, W) uint8: "L"; (H, W, 3): "RGB"
    if codec == "webp" and image.ndim == 2:
        pil = pil.convert("RGB")  # WebP stores no grayscale: R = G = B
    options: dict[str, Any] = {"jpeg": _JPEG, "webp": _WEBP, "avif": _AVIF}[codec]
    if codec == "avif" and image.ndim == 2:
        options = {**options, "subsampling": "4:0:0"}
    buffer = io.BytesIO()
    pil.save(buffer, _PIL_FORMAT[codec], quality=quality, **options)
    return buffer.getvalue()


def decode(data: bytes, codec: str, *, channels: int | None = None) -> np.ndarray:
    """The uint8 pixels of a file written by :func:`encode` (or any file of that format).

    Parameters
    ----------
    data : the whole file.
    codec : one of :data:`CODECS`: the format ``data`` must be in.
    channels : None: as the file stores them ((H, W) for a grayscale JPEG, AVIF or JPEG XL file,
        (H, W, 3) otherwise; a WebP file is always RGB). 1: (H, W), the green channel of an RGB
        file (a grayscale image encoded as WebP comes back as it went in). 3: (H, W, 3), a
        grayscale file repeated three times.

    Raises
    ------
    ConfigError
        Unknown codec or ``channels`` not None, 1 or 3.
    ValueError
        ``data`` is not a file of that format.
    """
    check_codec(codec)
    if channels not in (None, 1, 3):
        raise ConfigError(f"channels must be None, 1 or 3, got {channels!r}")
    if codec == "jxl":
        module = _imagecodecs()
        try:
            array = np.asarray(module.jpegxl_decode(bytes(data), numthreads=1))
        except Exception as err:  # imagecodecs.JpegxlError, a RuntimeError
            raise ValueError(f"not a decodable jxl file ({len(data)} bytes): {err}") from None
        if array.ndim == 3 and array.shape[2] == 1:
            array = array[:, :, 0]
        if array.dtype != np.uint8 or not (array.ndim == 2 or array.shape[2] == 3):
            raise ValueError(f"jxl file decodes to {array.dtype} {array.shape}, not 8-bit grayscale or RGB")
    else:
        try:
            with Image.open(io.BytesIO(bytes(data)), formats=[_PIL_FORMAT[codec]]) as pil:
                pil.load()
                if pil.mode not in ("L", "RGB"):
                    pil = pil.convert("RGB")
                array = np.asarray(pil)
        except (OSError, SyntaxError) as err:  # PIL.UnidentifiedImageError is an OSError
            raise ValueError(f"not a decodable {codec} file ({len(data)} bytes): {err}") from None
    if channels == 1 and array.ndim == 3:
        array = array[:, :, 1]
    elif channels == 3 and array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    return np.ascontiguousarray(array, dtype=np.uint8)
