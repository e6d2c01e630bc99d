"""Rate-distortion ladders of the standard image codecs (JPEG, WebP, AVIF, JPEG XL) on a tensor of images.

Each image is encoded to a real file (:mod:`posthoc_vq.codec.standard`) at each quality of a
codec's ladder, and decoded again. The rate is the whole file as the encoder writes it, headers
included: ``bpp = len(file) * 8 / (H * W)`` (bits per pixel position, whatever the channels). PSNR
(dB, data range 1, capped at :data:`~posthoc_vq.evaluation.reconstruction.PSNR_CAP_DB`) and SSIM
are computed against the ground truth by :class:`~posthoc_vq.evaluation.reconstruction.QualityMeter`,
the code every other reconstruction result of the package uses, so a learned codec and the standard
ones are measured alike.

Ground truth: the images (N, C, H, W) in [0, 1] are turned into the uint8 images the codecs see with
``round(x * 255)``; the reference of the metrics is that uint8 image / 255 (the datasets of this
package are 8-bit, so this equals the input; ``input_8bit_max_error`` records how far it is from it).

Per-image rates and qualities are kept (``per_image``, n_images x n_points, points in ascending
quality) for paired bootstrap confidence intervals of BD-rate (:func:`posthoc_vq.codec.bdrate.bd_bootstrap`).
"""

from __future__ import annotations

import time
from typing import Any, Iterable

import numpy as np
import torch

from posthoc_vq.codec.standard import CODECS, DEFAULT_QUALITIES, available_codecs, check_codec, check_quality, decode, encode, settings
from posthoc_vq.errors import ConfigError
from posthoc_vq.evaluation.reconstruction import PSNR_CAP_DB, QualityMeter
from posthoc_vq.metrics.intervals import mean_ci
from posthoc_vq.progress import ProgressCallback, report, reporting

__all__ = ["PROGRESS_TASK", "codec_ladder", "to_uint8"]

#: the label of the progress reports
PROGRESS_TASK = "standard codecs"

_CHUNK = 1000  # images encoded, decoded and measured at a time (memory stays bounded, progress moves)
_DIGITS = 6  # per-image PSNR and SSIM are rounded to this many decimals (bpp is kept as computed)

NOTE = (
    "bpp = whole file bytes * 8 / (H * W), container and headers included (on images this small the header is a large part of "
    "JPEG's and AVIF's files); PSNR (dB, data range 1, capped at {cap:g}) and SSIM per image against round(x * 255) / 255, "
    "means with 95% t intervals over images; WebP cannot store grayscale: a grayscale image is encoded as R = G = B and its "
    "green channel decoded; encode/decode seconds are wall time summed over the images, one thread"
)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, H, W) or (N, H, W, 3) uint8 images from (N, C, H, W) floats in [0, 1] (C is 1 or 3): ``round(x * 255)``."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch tensor (N, C, H, W), got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must have shape (N, C, H, W) with C 1 or 3, got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise TypeError(f"images must be floating point in [0, 1], got {images.dtype}")
    x = images.detach().cpu().to(torch.float64)
    if not bool(torch.isfinite(x).all()) or (x.numel() and (float(x.min()) < 0.0 or float(x.max()) > 1.0)):
        raise ValueError("images must be finite and in [0, 1]")
    u8 = torch.round(x * 255.0).to(torch.uint8).numpy()
    return u8[:, 0] if u8.shape[1] == 1 else np.ascontiguousarray(u8.transpose(0, 2, 3, 1))


def _from_uint8(u8: np.ndarray) -> torch.Tensor:
    """(N, C, H, W) float32 in [0, 1] from (N, H, W) or (N, H, W, 3) uint8."""
    t = torch.from_numpy(np.ascontiguousarray(u8)).to(torch.float32) / 255.0
    return t[:, None] if t.ndim == 3 else t.permute(0, 3, 1, 2).contiguous()


def _ladders(codecs: Iterable[str] | None, qualities: dict[str, Iterable[int]] | None) -> dict[str, list[int]]:
    """codec -> its ascending, distinct qualities, checked."""
    if codecs is None:
        chosen = list(available_codecs())
    elif isinstance(codecs, str):
        chosen = [check_codec(codecs)]
    else:
        chosen = [check_codec(c) for c in codecs]
    if not chosen:
        raise ConfigError(f"no standard codec to measure: give one or more of {', '.join(CODECS)}")
    if len(set(chosen)) != len(chosen):
        raise ConfigError(f"a codec is named twice: {', '.join(chosen)}")
    qualities = dict(qualities or {})
    extra = [c for c in qualities if c not in chosen]
    if extra:
        raise ConfigError(f"qualities given for {', '.join(map(repr, extra))}, which is not among the codecs measured ({', '.join(chosen)})")
    out = {}
    for codec in chosen:
        ladder = qualities.get(codec, DEFAULT_QUALITIES[codec])
        if isinstance(ladder, (str, bytes, int, np.integer)) or not hasattr(ladder, "__iter__") or not (ladder := list(ladder)):
            raise ConfigError(f"the {codec} qualities must be a non-empty list of integers, got {ladder!r}")
        out[codec] = sorted({check_quality(codec, q) for q in ladder})
    return out


def _round(values: np.ndarray) -> list[list[float]]:
    return np.round(np.asarray(values, dtype=np.float64), _DIGITS).tolist()


def codec_ladder(images: torch.Tensor, codecs: Iterable[str] | None = None, qualities: dict[str, list[int]] | None = None, *,
                 progress: ProgressCallback | None = None) -> dict[str, Any]:
    """Encode every image with every codec at every quality of its ladder; rate, PSNR and SSIM of each point.

    Parameters
    ----------
    images : (N, C, H, W) float in [0, 1], C 1 (grayscale) or 3 (RGB).
    codecs : codecs of :data:`~posthoc_vq.codec.standard.CODECS` to measure; default every available one
        (jxl only with the ``codecs`` extra; naming it without the extra raises :class:`~posthoc_vq.errors.MissingExtraError`).
    qualities : codec -> its qualities; a codec left out gets its
        :data:`~posthoc_vq.codec.standard.DEFAULT_QUALITIES`. Sorted ascending, duplicates dropped.
    progress : callback told ``("standard codecs", images done, images in all)``, an image counted once per codec and quality.

    Returns
    -------
    JSON-able dict: ``codecs`` (codec -> ``settings``, ``points`` and ``per_image``), ``n_images``,
    ``image_shape`` ([C, H, W]), ``psnr_cap_db``, ``input_8bit_max_error`` and ``note``. A point is
    ``{"quality", "bpp", "psnr_db", "ssim"`` (each a mean with 95% CI, :func:`~posthoc_vq.metrics.intervals.mean_ci`),
    ``"bytes_total"`` (all N files), ``"encode_seconds"``, ``"decode_seconds"`` (summed over the N images)``}``;
    ``per_image`` holds ``bpp``, ``psnr_db`` and ``ssim`` as N rows of one value per point, in the order of ``points``.

    Raises
    ------
    ConfigError
        Unknown codec, a quality out of range, or qualities for a codec not measured.
    """
    ladders = _ladders(codecs, qualities)
    u8 = to_uint8(images)
    n, (c, h, w) = len(u8), tuple(images.shape[1:])
    if n == 0:
        raise ValueError("images is empty: nothing to encode")
    channels = 1 if c == 1 else None
    max_error = float((images.detach().cpu().to(torch.float64) - _from_uint8(u8).to(torch.float64)).abs().max())
    total = n * sum(len(qs) for qs in ladders.values())
    done = 0
    result_codecs: dict[str, Any] = {}
    with reporting(progress):
        report(PROGRESS_TASK, 0, total)
        for codec, ladder in ladders.items():
            points, bpp_rows, psnr_rows, ssim_rows = [], [], [], []
            for quality in ladder:
                sizes = np.empty(n, dtype=np.int64)
                t_encode = t_decode = 0.0
                measure = QualityMeter()
                for start in range(0, n, _CHUNK):
                    chunk = u8[start : start + _CHUNK]
                    decoded = np.empty_like(chunk)
                    for i, image in enumerate(chunk):
                        t0 = time.perf_counter()
                        data = encode(image, codec, quality)
                        t1 = time.perf_counter()
                        decoded[i] = decode(data, codec, channels=channels)
                        t2 = time.perf_counter()
                        t_encode, t_decode = t_encode + (t1 - t0), t_decode + (t2 - t1)
                        sizes[start + i] = len(data)
                    measure.add(_from_uint8(chunk), _from_uint8(decoded))
                    done += len(chunk)
                    report(PROGRESS_TASK, done, total)
                values = measure.per_image()
                bpp = sizes * 8.0 / (h * w)
                points.append({
                    "quality": quality,
                    "bpp": mean_ci(bpp).to_dict(),
                    "bytes_total": int(sizes.sum()),
                    "psnr_db": mean_ci(values["psnr_db"]).to_dict(),
                    "ssim": mean_ci(values["ssim"]).to_dict(),
                    "encode_seconds": t_encode,
                    "decode_seconds": t_decode,
                })
                bpp_rows.append(bpp)
                psnr_rows.append(values["psnr_db"])
                ssim_rows.append(values["ssim"])
            result_codecs[codec] = {
                "settings": settings(codec),
                "points": points,
                "per_image": {  # n_images x n_points
                    "bpp": np.stack(bpp_rows, axis=1).tolist(),  # exact: bytes * 8 / (H * W)
                    "psnr_db": _round(np.stack(psnr_rows, axis=1)),
                    "ssim": _round(np.stack(ssim_rows, axis=1)),
                },
            }
    return {
        "codecs": result_codecs,
        "n_images": n,
        "image_shape": [c, h, w],
        "psnr_cap_db": PSNR_CAP_DB,
        "input_8bit_max_error": max_error,
        "note": NOTE.format(cap=PSNR_CAP_DB),
    }
