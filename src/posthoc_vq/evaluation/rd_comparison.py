"""Rate-distortion comparison of coded evaluations against the standard codecs: curves, BD-rate with CIs.

Inputs are plain results: evaluations with a ``rate`` block (``evaluate --codebook``, or a trained quantizer's
``evaluate``; see :mod:`posthoc_vq.evaluation.bitstreams`) and a ladder of the standard codecs
(:func:`~posthoc_vq.evaluation.standard_codecs.codec_ladder`), all on the same images in the same order.

* :func:`posthoc_series` groups the evaluations into curves: one per codebook method (post-hoc k-means at several K,
  residual at several stages, ...), points in rate order, the rate being each image's own file (bytes x 8 / pixels,
  header included) under the best prior the results share (context on token grids, else empirical).
* :func:`bd_rows`: BD-rate and BD-PSNR (:func:`~posthoc_vq.codec.bdrate.bd_bootstrap`, PCHIP, and Akima where both
  curves have 4 points) of every curve of 2 or more points against every standard codec, and of the standard codecs
  against each other, with paired bootstrap 95% CIs over images. A pair whose curves overlap too little says so. Each
  curve's container (one file for the split) is compared too, on mean curves (one rate per point: no per-image CI).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from posthoc_vq.codec.bdrate import MIN_POINTS, bd_bootstrap, bd_compare
from posthoc_vq.errors import ConfigError
from posthoc_vq.results import Evaluation


def _prior(results: list[Evaluation]) -> str:
    shared = set.intersection(*(set(r.rate.priors) for r in results))
    return "context" if "context" in shared else "empirical"


def posthoc_series(results: list[Evaluation]) -> dict[str, dict[str, Any]]:
    """Curves of evaluations with a rate, by method: per-image real bpp and PSNR (n_images, n_points), their means, and labels."""
    groups: dict[str, list[Evaluation]] = {}
    for r in results:
        if r.rate is not None and r.rate.per_image_psnr_db is not None:
            key = f"trained {r.model.quantizer}" if r.codebook is None and r.model.quantizer else (r.method or "?")
            groups.setdefault(key, []).append(r)
    out = {}
    for key, rs in sorted(groups.items()):
        prior = _prior(rs)
        pixels = rs[0].rate.pixels_per_image
        bpp = np.stack([np.asarray(r.rate.priors[prior].per_image_bits["real"], dtype=np.float64) / pixels for r in rs], 1)
        psnr = np.stack([np.asarray(r.rate.per_image_psnr_db, dtype=np.float64) for r in rs], 1)
        order = np.argsort(bpp.mean(0), kind="stable")
        rs, bpp, psnr = [rs[i] for i in order], bpp[:, order], psnr[:, order]
        out[key] = {
            "prior": prior, "names": [r.codebook or "trained" for r in rs], "per_image": {"bpp": bpp, "psnr_db": psnr},
            "bpp": bpp.mean(0).tolist(), "psnr_db": psnr.mean(0).tolist(),
            "container_bpp": [r.rate.priors[prior].container_bpp for r in rs],
            "nominal_bpp": [r.rate.nominal_bpp for r in rs],
        }
    return out


def bd_rows(series: dict[str, dict[str, Any]], ladder: dict[str, Any], *, n_boot: int = 1000, seed: int = 0) -> list[dict[str, Any]]:
    """BD rows: each curve of 2+ points against each standard codec, and the standard codecs against each other."""
    standard = {c: (np.asarray(s["per_image"]["bpp"], dtype=np.float64), np.asarray(s["per_image"]["psnr_db"], dtype=np.float64))
                for c, s in ladder["codecs"].items()}
    tests = {f"post-hoc {k}" if not k.startswith("trained") else k: (s["per_image"]["bpp"], s["per_image"]["psnr_db"]) for k, s in series.items()}
    rows = []
    for test, (rt, qt) in tests.items():
        for anchor, (ra, qa) in standard.items():
            rows += _pair(test, anchor, ra, qa, rt, qt, n_boot, seed)
    for key, s in series.items():  # the container: one file for the split, so one rate per point and no per-image CI
        if len(s["bpp"]) < 2:
            continue
        for anchor, (ra, qa) in standard.items():
            r = _mean_curves(ra.mean(0), qa.mean(0), np.asarray(s["container_bpp"]), np.asarray(s["psnr_db"]))
            rows.append({"test": f"{'post-hoc ' if not key.startswith('trained') else ''}{key} (container)", "anchor": anchor, **r,
                         "note": "one container file for the split: mean curves, no per-image bootstrap"})
    names = list(standard)
    for i, anchor in enumerate(names):
        for test in names[i + 1 :]:
            rows += _pair(test, anchor, *standard[anchor], *standard[test], n_boot, seed)
    return rows


def _pair(test: str, anchor: str, ra, qa, rt, qt, n_boot: int, seed: int) -> list[dict[str, Any]]:
    if rt.shape[1] < 2:
        return [{"test": test, "anchor": anchor, "method": "pchip", "comparable": False, "bd_rate_percent": None, "bd_psnr_db": None,
                 "reason": "a single operating point: BD needs a curve of 2 or more"}]
    rows = []
    for method in ("pchip", "akima"):
        if min(rt.shape[1], ra.shape[1]) < MIN_POINTS[method]:
            continue
        try:
            r = bd_bootstrap(ra, qa, rt, qt, method=method, n_boot=n_boot, seed=seed)
        except ConfigError as err:  # a curve that is not monotone in the mean: say so
            r = {"method": method, "comparable": False, "bd_rate_percent": None, "bd_psnr_db": None, "reason": str(err)}
        rows.append({"test": test, "anchor": anchor, **r})
    return rows


def _mean_curves(ra, qa, rt, qt) -> dict[str, Any]:
    try:
        return bd_compare(ra, qa, rt, qt, method="pchip")
    except ConfigError as err:
        return {"method": "pchip", "comparable": False, "bd_rate_percent": None, "bd_psnr_db": None, "reason": str(err)}


def public(series: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The curves without their per-image arrays (for JSON)."""
    return {k: {kk: vv for kk, vv in s.items() if kk != "per_image"} for k, s in series.items()}
