"""Flat rows of stored results, for ``--format csv|json|markdown`` (:mod:`posthoc_vq.report.formats`).

Evaluations are long ("tidy") tables: one row per (model, reference, metric) with the value and,
where the result has one, its 95% CI (``ci_low``, ``ci_high``), standard deviation and sample
size. One layout serves every evaluation, pixel or perceptual, continuous, codebook or packed
weights, so a script reads any of them the same way::

    model,reference,metric,value,ci_low,ci_high,std,n
    continuous (mu),ground truth,psnr_db,19.85,19.70,20.01,1.2,500
    kmeans-K64-mu-train,ground truth,psnr_db,17.2,17.05,17.36,1.1,500
    kmeans-K64-mu-train,,bits_per_image,6.0,,,,

Only reads the result dicts it is given: nothing here measures.
"""

from __future__ import annotations

from typing import Any

from posthoc_vq.results import Evaluation, ImageQuality, MeanCI, Usage

#: columns of :func:`evaluation_rows`
EVALUATION_COLUMNS = ("model", "reference", "metric", "value", "ci_low", "ci_high", "std", "n")
QUALITY_METRICS = ("mse", "psnr_db", "ssim")


def _row(model: str, reference: str | None, metric: str, value: Any) -> dict[str, Any]:
    """A row of one metric: a :class:`~posthoc_vq.results.MeanCI` (or its JSON dict) or a bare number."""
    if isinstance(value, MeanCI):
        value = value.to_json()
    if isinstance(value, dict):
        return {"model": model, "reference": reference, "metric": metric, "value": value.get("mean"), "ci_low": value.get("low"),
                "ci_high": value.get("high"), "std": value.get("std"), "n": value.get("n")}
    return {"model": model, "reference": reference, "metric": metric, "value": value, "ci_low": None, "ci_high": None, "std": None, "n": None}


def _quality(model: str, reference: str, block: ImageQuality | None) -> list[dict[str, Any]]:
    if block is None:
        return []
    return [_row(model, reference, m, getattr(block, m)) for m in QUALITY_METRICS]


def own_model_label(result: Evaluation) -> str:
    """What a run's own decoder output is: ``continuous (mu)``, or ``trained vq`` for a model trained with its quantizer."""
    kind = result.model.quantizer
    return f"trained {kind}" if kind else f"continuous ({result.latents or 'mu'})"


def _usage_rows(model: str, split: str, usage: Usage | None) -> list[dict[str, Any]]:
    if usage is None:
        return []
    keys = (("used", "codes_used"), ("n_codes", "n_codes"), ("dead", "dead_codes"), ("entropy_bits", "entropy_bits"), ("perplexity", "perplexity"))
    return [_row(model, split, name, getattr(usage, k)) for k, name in keys if isinstance(getattr(usage, k), (int, float))]


SIZE_KEYS = ("num_parameters", "quantized_parameters", "packed_file_bytes", "fp32_file_bytes", "size_ratio", "compression_factor")


def size_rows(name: str, record: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of a packed-weight file's sizes (its ``weights.json`` record, or a weight evaluation's ``size``): parameters, bytes, ratios."""
    return [_row(name, None, k, record[k]) for k in SIZE_KEYS if record.get(k) is not None]


def pixel_rows(result: Evaluation) -> list[dict[str, Any]]:
    """Rows of a pixel evaluation: continuous (``eval/continuous-*``), codebook (``eval/<codebook>-*``) or packed weights (``eval/weights-*``)."""
    split = result.split
    if result.weights is not None and result.size is not None:  # packed weights, and with a codebook between encoder and decoder
        name = result.weights
        rows = _quality("fp32", "ground truth", result.continuous) + _quality(name, "ground truth", result.quantized)
        rows += _quality(name, "fp32 output", result.penalty)
        rows.append(_row(name, "fp32", "psnr_change_db", result.psnr_change_db))
        rows += size_rows(name, result.size)
        rows.append(_row(name, "fp32", "latent_mse", result.latent_mse))
        book = result.with_codebook
        if book is not None:
            label = f"{name} + {book.name}"
            rows += _quality(f"fp32 + {book.name}", "ground truth", book.continuous) + _quality(label, "ground truth", book.quantized)
            rows += _quality(label, f"fp32 + {book.name} output", book.penalty)
            rows.append(_row(label, f"fp32 + {book.name}", "psnr_change_db", book.psnr_change_db))
            rows.append(_row(label, f"fp32 + {book.name}", "code_agreement", book.code_agreement))
        return rows
    own = own_model_label(result)
    rows = _quality(own, "ground truth", result.continuous)
    if result.quantized is not None and result.is_codebook:  # a post-hoc codebook
        name = result.codebook
        rows += _quality(name, "ground truth", result.quantized) + _quality(name, own, result.penalty)
        rows.append(_row(name, own, "psnr_change_db", result.psnr_change_db))
        rows.append(_row(name, None, "bits_per_image", result.bits_per_image))
        rows.append(_row(name, own, "latent_mse", result.latent_mse))
        rows += _usage_rows(name, split, result.usage_on(split))
    elif result.bits_per_image is not None:  # a trained quantizer's own rate and usage
        rows.append(_row(own, None, "bits_per_image", result.bits_per_image))
        rows += _usage_rows(own, split, result.usage_on(split))
    return [r for r in rows if r["value"] is not None or r["ci_low"] is not None]


def perceptual_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of a perceptual evaluation (``eval/perceptual-*``): per image set FD, KID (mean and std over subsets),
    precision/recall, diversity, LPIPS; the split's own diversity; the interpolation paths."""
    split = result.get("split")
    rows: list[dict[str, Any]] = []

    def diversity(model: str, reference: str | None, d: dict[str, Any] | None) -> None:
        for key in ("mean_pairwise_feature_distance", "distinct_samples", "distinct_classes", "n_classes"):
            if d and d.get(key) is not None:
                rows.append(_row(model, reference, key, d[key]))

    for name, s in (result.get("sets") or {}).items():
        if "fd" in s:
            rows.append({**_row(name, split, "fd", s["fd"]), "n": s.get("n")})
        if s.get("kid"):
            rows.append({**_row(name, split, "kid", s["kid"]), "ci_low": None, "ci_high": None, "n": s.get("n")})  # ± std over subsets, no CI
        pr = s.get("precision_recall")
        for key in ("precision", "recall"):
            if pr and pr.get(key) is not None:
                rows.append({**_row(name, split, key, pr[key]), "n": s.get("n")})
        diversity(name, None, s.get("diversity"))
        if s.get("lpips"):
            rows.append(_row(name, split, "lpips", s["lpips"]))
    if "reference" in result:
        diversity(split, None, result["reference"].get("diversity"))
    for name, p in (result.get("interpolation") or {}).items():
        for key in ("step_change_mean", "step_change_max", "max_over_mean", "endpoint_class_fraction"):
            if p.get(key) is not None:
                rows.append(_row(f"interpolation {name}", None, key, p[key]))
    return rows


def evaluation_rows(result: Evaluation | dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of any evaluation result, pixel (an :class:`~posthoc_vq.results.Evaluation`) or perceptual (columns :data:`EVALUATION_COLUMNS`)."""
    return pixel_rows(result) if isinstance(result, Evaluation) else perceptual_rows(result)


def flatten_scalars(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Every number, string, boolean or None of a nested dict under its dotted key (lists are left out)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out |= flatten_scalars(value, name + ".")
        elif value is None or isinstance(value, (bool, int, float, str)):
            out[name] = value
    return out


GEOMETRY_KEYS = ("n_vectors", "dim", "seed", "intrinsic_dimension", "distortion", "classes", "connectivity", "samples")


def geometry_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """``metric, value`` rows of a geometry result (``eval/geometry-*``): every scalar under its dotted name, e.g. ``intrinsic_dimension.twonn``."""
    flat = flatten_scalars({k: result[k] for k in GEOMETRY_KEYS if k in result})
    return [{"metric": k, "value": v} for k, v in flat.items()]


def export_rows(record: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per exported file of ``export.json``: which graph, path, bytes and the check against PyTorch."""
    return [{"file": key, **f} for key, f in record["files"].items()]


def amenability_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (scope, measure): the rank correlation of a geometry measure with the penalty over the pooled
    configurations, per sweep, and over runs as units (too optimistic: seeds counted as independent)."""
    keys = ("n", "rho", "ci_low", "ci_high", "p", "p_holm", "p_method", "n_degenerate", "error")
    scopes = [("pooled", result["pooled"])] + sorted(result["per_sweep"].items()) + [("runs_as_units", result["runs_as_units"])]
    return [{"scope": scope, "measure": name, **{k: c.get(k) for k in keys}} for scope, table in scopes for name, c in table.items()]


def preset_rows(listing: dict[str, Any]) -> list[dict[str, Any]]:
    """``kind, name, files, path`` rows of :func:`posthoc_vq.config.list_configs` (files joined by ';' in CSV)."""
    rows = [{"kind": "preset", "name": p["name"], "files": p["files"], "path": p.get("path")} for p in listing["presets"]]
    return rows + [{"kind": "ablation", "name": a["name"], "files": None, "path": a["path"]} for a in listing["ablations"]]
