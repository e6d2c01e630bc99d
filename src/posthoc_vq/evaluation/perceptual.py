"""Perceptual and generative quality of a run (or of one of its codebooks), offline.

One entry point, :func:`perceptual_metrics`, used by ``posthoc-vq evaluate --metrics ...``
and by sweeps. Every distribution metric is computed in the feature space of the
dataset's own classifier (:mod:`posthoc_vq.metrics.features`) against the images of
``split``; nothing is downloaded.

Image sets compared with the split's images (all of equal size by default, since FD is
biased by set size):

* ``reconstruction``: decode(latents) for the continuous model; decode(codebook vector)
  for a codebook;
* ``prior``: the continuous VAE's samples, z ~ N(0, I) (also in a codebook's result, to
  compare against);
* ``codes_empirical`` / ``codes_uniform`` (codebook only): :mod:`.generation`;
* ``train_floor``, ``val_floor``: real images of the other splits (the train floor subsampled to the
  split's size): what a perfect model would get. The feature network was trained on the train
  split, so the val floor, unseen by it, is the cleaner reference.

Metrics (``metrics``): ``fd`` (``FD-<dataset>``), ``kid`` (mean and std over subsets),
``pr`` (k-NN precision/recall), ``diversity`` (also of the split's images), ``interp``
(:mod:`.interpolation`), ``lpips`` (reconstructions; needs ``lpips_weights``).
Written to ``<run>/eval/perceptual-<continuous|codebook>-<split>.json``.

With ``weights=NAME`` every set and path is made by the run's packed weights ``NAME``
(:func:`~posthoc_vq.quantize.compressed.open_compressed`, the dequantized float model) in place
of the fp32 model: its encoder gives the latents, its decoder the images. A codebook keeps the
codes it was fitted with (on the fp32 model's latents): the packed encoder's latents are assigned
to them and the packed decoder decodes them. Written to
``<run>/eval/perceptual-weights-<NAME>[-<codebook>]-<split>.json`` (:meth:`Run.eval_file`).
"""

from __future__ import annotations

import difflib
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch

from posthoc_vq.data import ImageSet, load_dataset
from posthoc_vq.errors import ConfigError
from posthoc_vq.evaluation.generation import codebook_samples, diversity, prior_samples, quantize_latents
from posthoc_vq.evaluation.interpolation import (
    decode_paths, graph_geodesic_paths, interpolation_pairs, linear_paths, path_labels, path_smoothness, quantize_paths,
)
from posthoc_vq.evaluation.reconstruction import decode, run_header, split_images
from posthoc_vq.io import write_json
from posthoc_vq.latents import load_run_splits, model_latents, run_latents
from posthoc_vq.metrics import features as feature_nets
from posthoc_vq.metrics.features import LoadedFeatureNet, default_features_dir, load_feature_net
from posthoc_vq.metrics.frechet import KID_SUBSET_SIZE, KID_SUBSETS, frechet_distance, kernel_distance, require_torchmetrics
from posthoc_vq.metrics.intervals import mean_ci
from posthoc_vq.metrics.lpips import lpips_distance, require_lpips
from posthoc_vq.metrics.precision_recall import DEFAULT_K, manifold_precision_recall
from posthoc_vq.progress import ProgressCallback, report, reporting
from posthoc_vq.provenance import provenance
from posthoc_vq.quantize.codebooks import open_codebook
from posthoc_vq.quantize.compressed import open_compressed, require_trained
from posthoc_vq.quantize.latent.base import predict_codes
from posthoc_vq.run import Run

PIXEL_METRICS: tuple[str, ...] = ("mse", "psnr", "ssim")
PERCEPTUAL_METRICS: tuple[str, ...] = ("fd", "kid", "pr", "diversity", "interp", "lpips")
DEFAULT_PERCEPTUAL: tuple[str, ...] = ("fd", "kid", "pr", "diversity", "interp")
_SET_METRICS = ("fd", "kid", "pr", "diversity")


def train_feature_net(dataset: str, out_dir: str | Path | None = None, *, data_dir: str | None = None, **options: Any) -> LoadedFeatureNet:
    """``posthoc-vq features train``: the feature network of ``dataset``, trained on its train split (loaded here with the
    feature nets' own split, :data:`~posthoc_vq.metrics.features.SPLIT_VAL_FRACTION` and ``SPLIT_SEED``, recorded in its
    JSON) and saved in ``out_dir``. ``options``: those of :func:`posthoc_vq.metrics.features.train_feature_net`."""
    split = {"val_fraction": feature_nets.SPLIT_VAL_FRACTION, "split_seed": feature_nets.SPLIT_SEED}
    splits = load_dataset(dataset, data_dir, **split)
    return feature_nets.train_feature_net(dataset, out_dir, splits=splits, split=split, **options)


def parse_metrics(text: str | Iterable[str]) -> list[str]:
    """Metric names from ``'psnr,ssim,fd'`` (or a list); an unknown name is a ConfigError with a suggestion."""
    names = [m.strip().lower() for m in (text.split(",") if isinstance(text, str) else text) if m.strip()]
    known = PIXEL_METRICS + PERCEPTUAL_METRICS
    for m in names:
        if m not in known:
            close = difflib.get_close_matches(m, known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"unknown metric '{m}'{hint}; choose from {', '.join(known)}")
    if not names:
        raise ConfigError(f"no metrics given; choose from {', '.join(known)}")
    return list(dict.fromkeys(names))


def _set_metrics(fnet: LoadedFeatureNet, real: tuple[torch.Tensor, torch.Tensor], images: torch.Tensor, metrics: list[str],
                 settings: dict[str, Any], description: str) -> dict[str, Any]:
    feats, pred = fnet.embed(images)
    out: dict[str, Any] = {"description": description, "n": len(images)}
    if "fd" in metrics:
        out["fd"] = frechet_distance(real[0], feats)
    if "kid" in metrics:
        out["kid"] = kernel_distance(real[0], feats, subsets=settings["kid_subsets"], subset_size=settings["kid_subset_size"], seed=settings["seed"])
    if "pr" in metrics:
        out["precision_recall"] = manifold_precision_recall(real[0], feats, k=settings["pr_k"])
    if "diversity" in metrics:
        out["diversity"] = diversity(feats, pred, fnet.net.config.n_classes, seed=settings["seed"])
    return out


def perceptual_metrics(
    run_dir: str | Path,
    *,
    codebook: str | None = None,
    weights: str | None = None,
    split: str = "test",
    metrics: Iterable[str] = DEFAULT_PERCEPTUAL,
    features: str | Path | None = None,
    data_dir: str | None = None,
    n_samples: int | None = None,
    n_pairs: int = 100,
    steps: int = 16,
    seed: int = 0,
    kid_subsets: int = KID_SUBSETS,
    kid_subset_size: int = KID_SUBSET_SIZE,
    pr_k: int = DEFAULT_K,
    lpips_weights: str | Path | None = None,
    progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Perceptual, generative and interpolation metrics of a run, of its codebook ``codebook``, of its packed weights ``weights``, or both.

    Parameters
    ----------
    run_dir : trained run directory.
    codebook : name of a codebook under ``<run>/codebooks`` (None: the continuous model).
    weights : name of packed weights under ``<run>/weights`` (None: the fp32 model); their dequantized
        model encodes and decodes everything, with or without ``codebook``.
    split : reference images ('test' by default).
    metrics : subset of :data:`PERCEPTUAL_METRICS` (pixel metrics in the list are ignored here).
    features : feature-network folder (default :func:`default_features_dir` of the run's dataset).
    n_samples : images per generated set (default: as many as the split has).
    n_pairs, steps : interpolation pairs and points per path.
    seed : seeds samples, pairs, KID subsets and the diversity subsample.
    lpips_weights : local AlexNet weights for ``lpips``.
    progress : an optional callback (:mod:`posthoc_vq.progress`) told how many sample sets are measured.

    Returns
    -------
    JSON-able dict (also written to ``Run.eval_file(split, codebook=, weights=, kind='perceptual')``):
    run header, ``weights`` and ``bits`` (32 for the fp32 model), ``feature_net``, ``settings``, ``sets`` (per image set: fd, kid, precision_recall,
    diversity, lpips), ``reference`` (diversity of the split's images), ``interpolation`` (per path kind).
    """
    tic = time.perf_counter()
    wanted = [m for m in parse_metrics(metrics) if m in PERCEPTUAL_METRICS]
    if not wanted:
        raise ConfigError(f"no perceptual metric in {list(metrics)}; choose from {', '.join(PERCEPTUAL_METRICS)}")
    if "fd" in wanted or "kid" in wanted:  # fail before any work when torchmetrics is not installed
        require_torchmetrics()
    run = Run.open(run_dir)
    path = run.eval_file(split, codebook=codebook, weights=weights, kind="perceptual")
    with run.lock("evaluate"), reporting(progress):
        config = run.config()
        dataset = config.data.name
        fnet = load_feature_net(features if features is not None else default_features_dir(dataset), dataset=dataset)
        if "lpips" in wanted:  # fail before any work when LPIPS cannot run
            require_lpips(lpips_weights)
        fp32, meta = run.load_model()
        model, record = fp32, None
        if weights is not None:  # a bad name fails before any work
            require_trained(run.root, meta)
            model, record = open_compressed(run, weights)
        torch.set_num_threads(config.train.threads)
        splits = load_run_splits(run_dir, data_dir)
        x = split_images(splits, split)
        fnet.check_images(x, f"{dataset} {split} images")
        cb, cb_meta = open_codebook(run_dir, codebook) if codebook else (None, None)
        kind, latent_seed = (cb_meta["latents"], cb_meta.get("latent_seed") or 0) if cb_meta else ("mu", 0)
        if weights is None:
            latents = run_latents(run_dir, split, kind, seed=latent_seed, splits=splits, model=model)
        else:  # the packed encoder's own latents: the run's latent cache holds the fp32 model's
            latents = model_latents(model, x, splits.split(split).labels, kind=kind, seed=latent_seed, split=split)
        n = n_samples or len(x)
        kid_subset_size = min(kid_subset_size, max(2, len(x) // 2))  # subsets smaller than the sets, so their spread means something
        settings = {"seed": seed, "n_samples": n, "kid_subsets": kid_subsets, "kid_subset_size": kid_subset_size, "pr_k": pr_k,
                    "n_pairs": n_pairs, "steps": steps}
        set_metrics = [m for m in wanted if m in _SET_METRICS]

        want_sets = bool(set_metrics) or "lpips" in wanted
        jobs = _image_sets(run_dir, model, fp32, cb, cb_meta, latents, splits, split, n, seed, bool(set_metrics)) if want_sets else []

        result: dict[str, Any] = {
            **run_header(run, config, meta, split),
            "codebook": codebook,
            "weights": weights,
            "bits": record["weights"]["bits"] if record else 32,
            "method": cb_meta["method"] if cb_meta else None,
            "K": cb_meta["n_codes"] if cb_meta else None,
            "fit_on": cb_meta["fit_on"] if cb_meta else None,
            "latents": kind,
            "metrics": wanted,
            "metric_names": {"fd": fnet.name, "kid": f"KID-{dataset}"},
            "feature_net": {"path": str(fnet.path), "dataset": fnet.meta["dataset"], "test_accuracy": fnet.meta["test_accuracy"],
                            "num_features": fnet.net.num_features, "sha256": fnet.meta["sha256"]},
            "settings": settings,
            "sets": {},
        }
        stages = len(jobs) + ("interp" in wanted) + ("diversity" in wanted)
        label, done = f"perceptual {' + '.join(filter(None, (weights, codebook))) or 'continuous'}", 0
        report(label, done, stages)
        real = fnet.embed(x)
        if "diversity" in wanted:
            result["reference"] = {"diversity": diversity(*real, fnet.net.config.n_classes, seed=seed)}
            done += 1
            report(label, done, stages)
        for name, description, make in jobs:
            images = make()
            entry = _set_metrics(fnet, real, images, set_metrics, settings, description)
            if name == "reconstruction" and "lpips" in wanted:
                entry["lpips"] = mean_ci(lpips_distance(x, images, lpips_weights).numpy()).to_dict()
            result["sets"][name] = entry
            done += 1
            report(label, done, stages)
        if "interp" in wanted:
            result["interpolation"] = _interpolation(model, cb, fnet, latents.values, latents.labels, n_pairs, steps, seed)
            done += 1
            report(label, done, stages)
        result["warnings"] = _split_warnings(config.data, fnet.meta.get("split"))
        result["seconds"] = time.perf_counter() - tic
        result["provenance"] = provenance(seed=seed)
        write_json(path, result)
        return result


def _image_sets(run_dir: Path, model, fp32, cb, cb_meta, latents, splits, split: str, n: int, seed: int,
                samples: bool) -> list[tuple[str, str, Callable[[], torch.Tensor]]]:
    """(name, description, () -> images (N, C, H, W)) of every image set to compare with the split's images.

    ``model`` makes the images (the fp32 model or packed weights); ``fp32`` the codebook's fit latents (cached per run).
    """
    kind, shape = latents.kind, tuple(latents.values.shape[1:])  # (D,) or a grid (C, h, w)
    if cb is None:
        z = torch.from_numpy(latents.values)
        jobs = [("reconstruction", f"decode({kind}) of the {split} images", lambda: decode(model, z))]
    else:
        zq = torch.from_numpy(quantize_latents(cb, latents.values, latents.labels))
        jobs = [("reconstruction", f"decode(codebook vector of {kind}) of the {split} images", lambda: decode(model, zq))]
    if not samples:
        return jobs
    who = "continuous VAE" if model is fp32 else "packed-weights VAE"
    jobs.append(("prior", f"{who} samples, z ~ N(0, I)", lambda: prior_samples(model, n, shape, seed)))
    if cb is not None:
        fit = run_latents(run_dir, cb_meta["fit_on"], kind, seed=latents.seed or 0, splits=splits, model=fp32)  # the codes' frequencies as fitted
        fit_codes = predict_codes(cb, fit.tokens(), fit.token_labels())
        for mode, what in (("empirical", f"codes drawn from their frequencies on the fit set ({cb_meta['fit_on']})"),
                           ("uniform", "codes drawn uniformly")):
            jobs.append((f"codes_{mode}", what, lambda mode=mode: codebook_samples(model, cb, fit_codes, n, mode, shape, seed)[0]))
    for other in (s for s in ("train", "val") if s != split and len(splits.split(s)) > 1):
        images = splits.split(other)
        pick = np.sort(np.random.default_rng(seed).choice(len(images), size=min(n, len(images)), replace=False))
        floor = ImageSet(images.images[pick], images.labels[pick])
        jobs.append((f"{other}_floor", f"{len(pick)} {other} images (a floor: real data against real data)", floor.to_tensor))
    return jobs


def _split_warnings(data, fnet_split: dict[str, Any] | None) -> list[dict[str, str]]:
    """A warning when the feature network was trained on other splits than the run's (it may have seen held-out images)."""
    run_split = {"val_fraction": data.val_fraction, "split_seed": data.split_seed}
    if fnet_split is None or fnet_split == run_split:
        return []
    return [{"code": "feature_net_splits", "message": (
        f"the feature network was trained on splits {fnet_split} but the run uses {run_split}; for datasets without an official "
        "test split its training images may include this run's held-out images")}]


def _interpolation(model, cb, fnet: LoadedFeatureNet, z: np.ndarray, labels: np.ndarray, n_pairs: int, steps: int, seed: int) -> dict[str, Any]:
    pairs = interpolation_pairs(labels, n_pairs, seed)
    z_a, z_b = z[pairs[:, 0]], z[pairs[:, 1]]
    paths = {"linear": linear_paths(z_a, z_b, steps)}
    info: dict[str, Any] = {}
    if cb is not None:
        point_labels = path_labels(labels[pairs[:, 0]], labels[pairs[:, 1]], steps)  # (P, S): the nearer end's class
        paths["linear_quantized"] = quantize_paths(cb, paths["linear"], point_labels)
        if hasattr(cb, "graph_") and hasattr(cb, "fit_points_") and z.ndim == 2:
            paths["graph_geodesic"], info["graph_geodesic"] = graph_geodesic_paths(cb.fit_points_, cb.graph_.adjacency, z_a, z_b, steps)
            paths["graph_geodesic_quantized"] = quantize_paths(cb, paths["graph_geodesic"], point_labels)
    out = {}
    for name, p in paths.items():
        images = decode_paths(model, p)
        _, pred = fnet.embed(images.flatten(0, 1))
        out[name] = path_smoothness(images, pred.view(images.shape[:2])) | info.get(name, {})
    return out
