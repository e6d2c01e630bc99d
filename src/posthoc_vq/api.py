"""Bring your own VAE: quantize and evaluate any trained autoencoder, without the CLI or a run directory.

    import posthoc_vq
    from posthoc_vq.autoencoders import FunctionAutoencoder

    model = FunctionAutoencoder(my_encode, my_decode, output_range=(0, 1))  # or a pythae / diffusers model
    fit = posthoc_vq.fit_codebook(model, train_images, method="kmeans", K=1024)
    result = posthoc_vq.evaluate(model, fit, test_images, split="test")
    result.quantized.psnr_db.mean, result.bits_per_image   # a typed Evaluation (posthoc_vq.results)

``model`` is anything :func:`posthoc_vq.autoencoders.as_autoencoder` accepts. Images are
float tensors or arrays (N, C, H, W) in [0, 1], an :class:`~posthoc_vq.data.ImageSet`, or a
stream: any iterable of batches (a torch ``DataLoader``, a list, a generator), each a (B, C, H, W)
float tensor in [0, 1] or an (images, labels) pair. A stream is encoded batch by batch and only
latents and per-image metric values are kept, so a dataset larger than memory fits; per-image
metrics and CIs equal those of the same images as one tensor. A generator is consumed once:
give ``fit_codebook`` and ``evaluate`` each their own (a DataLoader can be iterated again).
``device=`` (default: the device of the model's parameters, CPU if none; 'auto', 'cpu', 'cuda',
'cuda:N', 'mps') is where encoding and decoding run; latents, codes and metrics come back to CPU.
A model with a latent grid (C, h, w) is quantized per position (h * w codes per image).
Also here: :func:`load_run`, :func:`load_codebook` (read a run's model / a saved codebook back),
:meth:`FittedCodebook.as_module` (the codebook as an ``nn.Module``), :func:`compress_weights` /
:func:`load_packed` (INT8/INT4 weights of any ``nn.Module``, and back) and :func:`evaluate_weights`
(run-based). A model whose reconstructions are no better than the mean image gets ``untrained``.
These functions are the core the run-based CLI (``posthoc-vq quantize`` / ``evaluate``) is a
thin layer over: the same model and images give the same numbers and JSON keys.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from posthoc_vq.autoencoders import as_autoencoder
from posthoc_vq.config import QuantizeConfig, validate
from posthoc_vq.data import ImageSet
from posthoc_vq.errors import DatasetError
from posthoc_vq.devices import resolve_device
from posthoc_vq.evaluation.codebook import codebook_result, streamed_result
from posthoc_vq.evaluation.reconstruction import continuous_result, finish, model_header
from posthoc_vq.latents import LatentSet, encode_split, model_latents, stream_latents
from posthoc_vq.results import Evaluation
from posthoc_vq.quantize.codebooks import fit_on_latents
from posthoc_vq.quantize.latent.base import CodebookEstimator, missing_labels_error
from posthoc_vq.quantize.latent.store import estimator_class, save_codebook
from posthoc_vq.quantize.latent.store import load_codebook as load_codebook_folder


@dataclass
class FittedCodebook:
    """What :func:`fit_codebook` returns.

    Attributes
    ----------
    codebook : the fitted estimator (``predict``, ``inverse_transform``, ``codebook_`` (K, C)...).
    latents : the :class:`~posthoc_vq.latents.LatentSet` it was fitted on, (N, *L);
        ``latents.tokens()`` gives the (N * h * w, C) vectors of a latent grid. None for a
        codebook read back with :func:`load_codebook`.
    meta : the JSON-able record a run's codebook file holds (fit set, usage, timing, ...).
    """

    codebook: CodebookEstimator
    latents: LatentSet | None
    meta: dict[str, Any]

    def save(self, folder: str | Path) -> Path:
        """Write the folder ``<folder>/`` (``codebook.safetensors`` + ``codebook.json``, as one unit); :func:`evaluate` accepts it back."""
        return save_codebook(folder, self.codebook, self.meta)

    def as_module(self, *, straight_through: bool = False) -> torch.nn.Module:
        """The codebook as a torch ``nn.Module``: ``forward(z) -> (z_q, indices)``, nearest-code per vector or grid position.

        The codebook is a buffer (``.to(device)``, ``state_dict``); indices equal
        ``self.codebook.predict`` for kmeans, random-prior and residual ((N, M) stage codes)
        codebooks; geodesic, hybrid and class-conditional ones are refused with an error naming
        the method. ``straight_through=True`` passes gradients to ``z`` straight through.

        Examples
        --------
        >>> quantizer = fitted.as_module()                      # doctest: +SKIP
        >>> z_q, indices = quantizer(model.encode(images)[0])   # doctest: +SKIP
        """
        return self.codebook.as_module(straight_through=straight_through)


def as_images(data: Any, labels: Any = None) -> tuple[torch.Tensor, np.ndarray | None]:
    """(N, C, H, W) float32 images in [0, 1] and (N,) labels (or None) from an ImageSet, a tensor or an array."""
    if isinstance(data, ImageSet):
        return data.to_tensor(), np.asarray(data.labels if labels is None else labels, dtype=np.int64)
    if not isinstance(data, (torch.Tensor, np.ndarray)):
        raise DatasetError(f"data must be images (N, C, H, W) as a float tensor or array in [0, 1], or an ImageSet; got {type(data).__name__}")
    x = torch.as_tensor(data)
    if not x.is_floating_point():
        raise DatasetError(f"images must be floats in [0, 1], got dtype {x.dtype}; convert with images.float() / 255 (and lay them out as (N, C, H, W))")
    if x.ndim != 4 or len(x) == 0:
        raise DatasetError(f"images must be a non-empty (N, C, H, W) batch, got shape {tuple(x.shape)}")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        raise DatasetError(f"images must lie in [0, 1], these lie in [{lo:.4g}, {hi:.4g}]; rescale them (a model working in another range declares it as output_range)")
    if labels is not None:
        labels = np.asarray(labels, dtype=np.int64)
        if labels.shape != (len(x),):
            raise DatasetError(f"labels must be ({len(x)},) integers, one per image; got shape {labels.shape}")
    return x.float().contiguous(), labels


def is_stream(data: Any) -> bool:
    """True for an iterable of image batches (DataLoader, list, generator), False for one tensor, array or ImageSet."""
    if isinstance(data, (ImageSet, torch.Tensor, np.ndarray, str, bytes, dict)):
        return False
    return isinstance(data, Iterable)


def _batch_parts(item: Any, index: int) -> tuple[Any, Any]:
    if isinstance(item, (torch.Tensor, np.ndarray)):
        return item, None
    if isinstance(item, (tuple, list)) and 1 <= len(item) <= 2 and isinstance(item[0], (torch.Tensor, np.ndarray)):
        return item[0], (item[1] if len(item) == 2 else None)
    if isinstance(item, dict):
        raise DatasetError(f"batch {index}: a dict batch is not understood; yield images (B, C, H, W) or (images, labels)")
    raise DatasetError(f"batch {index}: expected images (B, C, H, W) as a float tensor, or an (images, labels) pair; got {type(item).__name__}")


def iter_batches(data: Iterable[Any], *, require_labels: str | None = None) -> Iterator[tuple[torch.Tensor, np.ndarray | None]]:
    """Validated (images (B, C, H, W) float32 in [0, 1] on CPU, labels (B,) int64 or None) of each batch of a stream.

    Errors name the batch index: a non-float or out-of-range batch, a shape different from the
    first batch's, labels not one per image, labels in some batches only, no batches at all.
    ``require_labels``: the call to suggest when a batch comes without labels (a class-conditional codebook).
    """
    first_shape, has_labels, n = None, None, 0
    for i, item in enumerate(data):
        images, labels = _batch_parts(item, i)
        x = torch.as_tensor(images)
        if not x.is_floating_point():
            raise DatasetError(f"batch {i}: images must be floats in [0, 1], got dtype {x.dtype}; convert with images.float() / 255")
        if x.ndim != 4 or len(x) == 0:
            raise DatasetError(f"batch {i}: images must be a non-empty (B, C, H, W) batch, got shape {tuple(x.shape)}")
        if first_shape is None:
            first_shape = tuple(x.shape[1:])
        elif tuple(x.shape[1:]) != first_shape:
            raise DatasetError(f"batch {i}: images of shape {tuple(x.shape[1:])} per image, but batch 0 had {first_shape}; every batch must hold images of one shape")
        x = x.detach().cpu().float().contiguous()
        lo, hi = float(x.min()), float(x.max())
        if lo < 0.0 or hi > 1.0:
            raise DatasetError(f"batch {i}: images must lie in [0, 1], these lie in [{lo:.4g}, {hi:.4g}]; rescale them")
        if has_labels is None:
            has_labels = labels is not None
        elif has_labels != (labels is not None):
            raise DatasetError(f"batch {i}: {'has' if labels is not None else 'has no'} labels, but batch 0 {'had' if has_labels else 'had none'}; give labels with every batch or with none")
        if labels is not None:
            labels = np.asarray(labels.detach().cpu() if isinstance(labels, torch.Tensor) else labels)
            if labels.shape != (len(x),) or not np.issubdtype(labels.dtype, np.integer):
                raise DatasetError(f"batch {i}: labels must be ({len(x)},) integers, one per image; got shape {labels.shape}, dtype {labels.dtype}")
            labels = labels.astype(np.int64)
        elif require_labels is not None:
            raise missing_labels_error("class-conditional", require_labels)
        n += len(x)
        yield x, labels
    if n == 0:
        raise DatasetError("the stream of image batches gave no batches (a generator is consumed once: give fit_codebook and evaluate each their own)")


class _Tally:
    """Passes a stream's batches on, summing images (float64) for the mean-image baseline and noting whether labels came."""

    def __init__(self, batches: Iterable[tuple[torch.Tensor, np.ndarray | None]]) -> None:
        self.batches, self.n, self.s1, self.s2, self.labelled = batches, 0, None, None, False

    def __iter__(self) -> Iterator[tuple[torch.Tensor, np.ndarray | None]]:
        for x, y in self.batches:
            xd = x.double()
            self.s1 = xd.sum(0) if self.s1 is None else self.s1 + xd.sum(0)
            self.s2 = (xd**2).sum(0) if self.s2 is None else self.s2 + (xd**2).sum(0)
            self.n += len(x)
            self.labelled = y is not None
            yield x, y

    def mean_image_mse(self) -> float:
        mean = self.s1 / self.n
        return float((self.s2 / self.n - mean**2).mean())


def fit_codebook(
    model: Any, data: Any, *, method: str = "kmeans", K: int = 1024, latents: str = "mu", latent_seed: int = 0,
    labels: Any = None, fit_on: str = "data", max_fit_vectors: int | None = None, random_state: int = 0,
    batch_size: int = 1000, device: str | torch.device | None = None, **options: Any,
) -> FittedCodebook:
    """Encode ``data`` with ``model`` and fit a codebook on the latents (per position for latent grids).

    Parameters
    ----------
    model : any autoencoder (see :func:`posthoc_vq.autoencoders.as_autoencoder`).
    data : images (N, C, H, W) in [0, 1] (tensor or array), an ImageSet, or a stream of batches
        (a DataLoader, list or generator of (B, C, H, W) tensors or (images, labels) pairs; labels
        then come from the pairs). Only the latents of a stream are kept.
    method : 'kmeans', 'geodesic', 'hybrid', 'residual', 'random-prior' or 'class-conditional'.
    K : codebook size (per stage for residual; for class-conditional the total budget, floor(K / n_classes) codes per class).
    latents : 'mu' (posterior means) or 'z' (samples, drawn with ``latent_seed``).
    labels : (N,) class labels for per-class usage (ImageSet labels by default); required by
        'class-conditional', which fits one codebook per class.
    fit_on : name of the fit set in the record ('test' in a '+'-joined name flags leakage).
    max_fit_vectors : fit on a seeded sample of at most this many vectors; all are assigned.
        For millions of tokens, ~256 * K is plenty for k-means.
    random_state : seed of the estimator and of the sample.
    batch_size : images per ``encode`` call (a stream's batches are split further when larger).
    device : where the images are encoded ('auto', 'cpu', 'cuda', 'cuda:N', 'mps' or a
        ``torch.device``); default the device of the model's parameters (CPU if none: a
        :class:`~posthoc_vq.autoencoders.FunctionAutoencoder` over a GPU model's functions needs
        ``device='cuda'``). The latents come back to CPU for fitting.
    options : other :class:`~posthoc_vq.config.QuantizeConfig` keys: n_neighbors, symmetry,
        graph ('exact' or 'hnsw'), n_stages, max_iter, threads (sets torch's process-wide
        thread count; left alone when not given).

    Returns
    -------
    FittedCodebook : ``.codebook`` (fitted estimator), ``.latents`` (what it saw), ``.meta``.
    """
    q = validate(
        {"method": method, "K": K, "latents": latents, "latent_seed": latent_seed, "max_fit_vectors": max_fit_vectors, "random_state": random_state, **options},
        QuantizeConfig, source="fit_codebook arguments",
    )
    dev = resolve_device(device, model)
    ae = as_autoencoder(model)
    needs_labels = estimator_class(q.method).needs_labels
    if "threads" in options:  # torch's thread count is process-wide: changed only when asked
        torch.set_num_threads(q.threads)
    if is_stream(data):
        if labels is not None:
            raise DatasetError("labels= is for one tensor of images; a stream of batches carries its labels: yield (images, labels) pairs")
        hint = "fit_codebook(model, batches_of_(images, labels), ...)" if needs_labels else None
        seen = stream_latents(ae, iter_batches(data, require_labels=hint), kind=q.latents, seed=q.latent_seed, split=fit_on, batch_size=batch_size, device=dev)
    else:
        x, labels = as_images(data, labels)
        if labels is None and needs_labels:  # model_latents would give every image label 0: one class
            raise missing_labels_error(q.method, "fit_codebook(model, data, labels=labels, ...)")
        seen = model_latents(ae, x, labels, kind=q.latents, seed=q.latent_seed, split=fit_on, batch_size=batch_size, device=dev)
    estimator, meta = fit_on_latents(seen, q)
    meta["quantize"].pop("fit_on", None)  # the fit set is ``fit_on`` above, not a run split
    name = q.model_copy(update={"fit_on": fit_on}).default_name()  # default name with this fit set's name
    meta = {"name": name, "run": None, **meta}
    return FittedCodebook(estimator, seen, meta)


def mean_image_baseline(x: torch.Tensor, body: dict[str, Any]) -> dict[str, Any]:
    """Mean per-image MSE of the mean image of ``x`` (N, C, H, W) against each image, beside the model's continuous MSE."""
    mean_image = x.mean(0, keepdim=True, dtype=torch.float64)
    per_image = ((x.double() - mean_image) ** 2).flatten(1).mean(1)
    model_mse = body["continuous"].mse.mean if body.get("continuous") is not None else None
    return {"mse": float(per_image.mean()), "model_mse": None if model_mse is None else float(model_mse), "reference": "mean image of the evaluated images"}


def _codebook_and_meta(codebook: Any) -> tuple[CodebookEstimator, dict[str, Any]]:
    if isinstance(codebook, FittedCodebook):
        return codebook.codebook, codebook.meta
    if isinstance(codebook, CodebookEstimator):
        return codebook, {"method": codebook.method, "n_codes": codebook.n_codes}
    if isinstance(codebook, (str, Path)):
        estimator, meta = load_codebook_folder(codebook)
        folder = Path(codebook).parent if Path(codebook).suffix in (".json", ".safetensors") else Path(codebook)
        return estimator, {"name": folder.name, **meta}
    raise TypeError(f"codebook must be a FittedCodebook, a fitted estimator or a saved codebook's path, got {type(codebook).__name__}")


def evaluate(
    model: Any, codebook: Any, data: Any, *, labels: Any = None, split: str = "data", dataset: str | None = None,
    out: str | Path | None = None, batch_size: int = 1000, device: str | torch.device | None = None,
) -> Evaluation:
    """Evaluate ``model`` on images ``data``, continuous and (if ``codebook`` is given) quantized.

    Parameters
    ----------
    model : any autoencoder (see :func:`posthoc_vq.autoencoders.as_autoencoder`).
    codebook : a :class:`FittedCodebook`, a fitted estimator, a saved codebook's folder
        (``runs/x/codebooks/kmeans-K1024-mu-train``), or None for the continuous model only.
    data : images (N, C, H, W) in [0, 1] (tensor or array) or an ImageSet: the ground truth; or a
        stream of batches as in :func:`fit_codebook` (each batch is encoded, decoded and scored,
        then dropped: per-image metrics and CIs equal the one-tensor ones).
    labels : (N,) class labels for per-class usage; required by a class-conditional codebook (each
        image is coded with its class's codebook).
    split : name of these images in the result (``usage[split]``).
    dataset : dataset name recorded in the result.
    out : write the JSON result here too.
    device : where encoding and decoding run (see :func:`fit_codebook`); recorded as ``device``.

    Returns
    -------
    Evaluation : the result the CLI writes (``posthoc-vq evaluate [--codebook]``), typed (:mod:`posthoc_vq.results`): absolute quality of
    continuous and quantized outputs with 95% CIs, the quantization penalty, per-image PSNR
    change, latent MSE, token usage, bits per image, audit warnings; with ``run`` None and the
    model described by its adapter.

    Untrained-model check: the training state of your own model is unknown, so the result holds
    ``mean_image_baseline`` = {``mse``: mean per-image MSE of the mean image of ``data`` against
    each image, ``model_mse``: mean per-image MSE of the continuous reconstructions decode(mu)};
    when ``model_mse >= mse`` (the model reconstructs no better than predicting the average image)
    the warnings hold ``untrained``.

    Raises
    ------
    OutputRangeError : the decoder leaves its declared output range.
    LatentShapeError : the codebook's vectors are not the size of the model's latent tokens.
    """
    dev = resolve_device(device, model)
    ae = as_autoencoder(model)
    estimator, meta = _codebook_and_meta(codebook) if codebook is not None else (None, {})
    seed = (meta.get("quantize") or {}).get("random_state") if codebook is not None else None
    if is_stream(data):
        if labels is not None:
            raise DatasetError("labels= is for one tensor of images; a stream of batches carries its labels: yield (images, labels) pairs")
        hint = "evaluate(model, codebook, batches_of_(images, labels), ...)" if estimator is not None and estimator.needs_labels else None
        tally = _Tally(iter_batches(data, require_labels=hint))
        body, lat = streamed_result(ae, estimator, meta, tally, split, kind=meta.get("latents", "mu"), seed=meta.get("latent_seed") or 0,
                                    batch_size=batch_size, device=dev)
        result = {**model_header(ae, split, lat.latent_shape, dataset), **body}
        model_mse = body["continuous"].mse.mean if body.get("continuous") is not None else None
        result["mean_image_baseline"] = {"mse": tally.mean_image_mse(), "model_mse": None if model_mse is None else float(model_mse),
                                         "reference": "mean image of the evaluated images"}
    else:
        x, labels = as_images(data, labels)
        if estimator is None:
            z = encode_split(ae, x, "mu", batch_size=batch_size, device=dev)
            body, shape = continuous_result(ae, x, batch_size, z=z, device=dev), tuple(z.shape[1:])
        else:
            if labels is None and estimator.needs_labels:
                raise missing_labels_error(estimator.method, "evaluate(model, codebook, data, labels=labels, ...)")
            kind = meta.get("latents", "mu")
            lat = model_latents(ae, x, labels, kind=kind, seed=meta.get("latent_seed") or 0, split=split, batch_size=batch_size, device=dev)
            body = codebook_result(ae, estimator, meta, x, lat, split, device=dev)
            shape = lat.latent_shape
        result = {**model_header(ae, split, shape, dataset), **body}
        result["mean_image_baseline"] = mean_image_baseline(x, body)
    result["device"] = str(dev)
    return finish(result, seed, Path(out) if out is not None else None)


# ---------------------------------------------------------------------------- runs, codebooks and packed weights


@dataclass
class LoadedRun:
    """What :func:`load_run` returns.

    Attributes
    ----------
    model : the run's trained VAE (a :class:`torch.nn.Module`, eval mode, on CPU).
    config : the run's resolved :class:`~posthoc_vq.config.RunConfig`.
    record : the model record (architecture, sha256, epochs trained, parameter count, ...).
    path : the run directory.
    """

    model: torch.nn.Module
    config: Any
    record: dict[str, Any]
    path: Path


def load_run(path: str | Path) -> LoadedRun:
    """Load a run directory written by ``posthoc-vq train`` (or :func:`posthoc_vq.train.train`).

    Parameters
    ----------
    path : the run directory.

    Returns
    -------
    LoadedRun : ``.model`` (checksum-verified, eval mode), ``.config``, ``.record``, ``.path``.

    Raises
    ------
    NotFoundError : no run there; CheckpointError : the model file is damaged.

    Examples
    --------
    >>> run = posthoc_vq.load_run("runs/digits")                         # doctest: +SKIP
    >>> fit = posthoc_vq.fit_codebook(run.model, images, K=64)           # doctest: +SKIP
    """
    from posthoc_vq.run import Run

    run = Run.open(path)
    model, record = run.load_model()
    return LoadedRun(model, run.config(), record, run.root)


def load_codebook(run_or_folder: str | Path | LoadedRun, name: str | None = None) -> FittedCodebook:
    """A saved codebook back as a :class:`FittedCodebook` (with ``latents`` None).

    Parameters
    ----------
    run_or_folder : a run directory (or :class:`LoadedRun`) together with ``name``, or a saved
        codebook's folder (``runs/x/codebooks/kmeans-K1024-mu-train``, or one written by
        :meth:`FittedCodebook.save`).
    name : the codebook's name in the run (``posthoc-vq quantize`` prints it); may be left out
        when the run holds exactly one codebook.

    Examples
    --------
    >>> fit = posthoc_vq.load_codebook("runs/digits", "kmeans-K64-mu-train")    # doctest: +SKIP
    >>> fit.as_module()(z)                                                     # doctest: +SKIP
    """
    from posthoc_vq.errors import NotFoundError
    from posthoc_vq.quantize.codebooks import open_codebook
    from posthoc_vq.run import Run

    root = Path(run_or_folder.path if isinstance(run_or_folder, LoadedRun) else run_or_folder)
    if (root / "codebook.json").exists() and name is None:
        estimator, meta = load_codebook_folder(root)
        return FittedCodebook(estimator, None, {"name": root.name, **meta})
    run = Run.open(root)
    if name is None:
        names = run.codebook_names()
        if len(names) != 1:
            raise NotFoundError(f"{run.root} holds {len(names)} codebooks ({', '.join(names) or 'none'}): name one, load_codebook(run, name)")
        name = names[0]
    estimator, meta = open_codebook(run, name)
    return FittedCodebook(estimator, None, {"name": name, **meta})


@dataclass
class PackedWeights:
    """What :func:`compress_weights` returns: a network's weights as integer codes plus scales.

    Attributes
    ----------
    network : the :class:`~posthoc_vq.quantize.weights.network.QuantizedNetwork` (codes, scales,
        float rest, per-layer errors in ``network.errors``).
    model_config : the architecture stored in the file header ({} for a model not built by posthoc-vq).
    path, sha256, bytes : the written file (None until saved).
    """

    network: Any
    model_config: dict[str, Any]
    path: Path | None = None
    sha256: str | None = None
    bytes: int | None = None

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The dequantized float32 state dict (what :func:`load_packed` loads)."""
        return self.network.state_dict()

    def save(self, path: str | Path) -> Path:
        """Write the packed safetensors file; sets ``path``, ``sha256`` and ``bytes``."""
        from posthoc_vq.quantize.weights.artifact import save_packed

        saved = save_packed(path, self.network, self.model_config)
        self.path, self.sha256, self.bytes = Path(path), saved["sha256"], saved["bytes"]
        return self.path


def compress_weights(model: torch.nn.Module, bits: int = 8, *, out: str | Path | None = None, **options: Any) -> PackedWeights:
    """Quantize the weights of any :class:`torch.nn.Module` (Linear and Conv layers) to ``bits`` integers.

    Parameters
    ----------
    model : the network; it is not modified (BatchNorm folding works on a copy).
    bits : 8 or 4 (32 keeps fp32).
    out : also write the packed file here (a ``.safetensors`` file).
    options : other :class:`~posthoc_vq.config.WeightsConfig` keys: ``granularity``
        ('tensor', 'channel', 'group'), ``group_size``, ``symmetric``, ``fold_bn``, ``skip``
        (module names, or 'first' / 'last'), ``float_dtype`` ('fp32' or 'fp16').

    Returns
    -------
    PackedWeights : ``.state_dict()`` dequantized, ``.network.errors`` per layer, ``.save(path)``.

    Examples
    --------
    >>> net = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    >>> packed = compress_weights(net, bits=4, out=tmp / "net.safetensors")   # doctest: +SKIP
    >>> restored = load_packed(tmp / "net.safetensors", into=net)             # doctest: +SKIP
    """
    from posthoc_vq.config import WeightsConfig
    from posthoc_vq.quantize.weights.network import quantize_network

    config = validate({"bits": bits, **options}, WeightsConfig, source="compress_weights arguments")
    model_config = model.config.model_dump(mode="json") if hasattr(getattr(model, "config", None), "model_dump") else {}
    packed = PackedWeights(quantize_network(model, config), model_config)
    if out is not None:
        packed.save(out)
    return packed


def load_packed(path: str | Path, *, into: torch.nn.Module | None = None) -> torch.nn.Module:
    """Load a packed-weight file (from :func:`compress_weights` or ``posthoc-vq compress-weights``).

    Parameters
    ----------
    path : the packed ``.safetensors`` file (a run's ``weights/<name>/weights.safetensors``).
    into : the module to load the dequantized weights into (its layer names and shapes must be
        those the file was packed from; BatchNorm layers folded at packing time are replaced by
        ``nn.Identity`` in it). Left out, the posthoc-vq VAE described by the file's header is built.

    Returns
    -------
    The module with the dequantized float weights, in eval mode (``into`` itself when given).

    Raises
    ------
    NotFoundError : no such file. CheckpointError : the file is damaged, or its keys or shapes
        do not fit ``into`` (the message names the first mismatching key).

    Examples
    --------
    >>> net = load_packed("runs/digits/weights/int8-channel/weights.safetensors", into=model)   # doctest: +SKIP
    """
    from posthoc_vq.errors import CheckpointError, NotFoundError
    from posthoc_vq.io import load_tensors
    from posthoc_vq.quantize.weights import artifact
    from posthoc_vq.quantize.weights.network import rebuild_folded

    path = Path(path)
    if into is None:
        return artifact.load_packed(path)[0]
    if not path.exists():
        raise NotFoundError(f"packed weights not found: {path}")
    tensors = load_tensors(path)
    header = artifact.read_header(path)
    state = artifact.unpack_state(path, tensors, header["layers"])
    module = rebuild_folded(into, header["folded_bn"])
    expected = module.state_dict()
    for key in expected:
        if key not in state:
            raise CheckpointError(f"{path} does not fit {type(into).__name__}: the module has '{key}', the file does not (was it packed from another architecture?)")
        if state[key].shape != expected[key].shape:
            raise CheckpointError(f"{path} does not fit {type(into).__name__}: '{key}' is {list(state[key].shape)} in the file, {list(expected[key].shape)} in the module")
    extra = [k for k in state if k not in expected]
    if extra:
        raise CheckpointError(f"{path} does not fit {type(into).__name__}: the file has '{extra[0]}', the module does not" + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""))
    module.load_state_dict(state)
    return module.eval()


def evaluate_weights(run: str | Path | LoadedRun, name: str, *, split: str = "test", codebook: str | None = None, data_dir: str | None = None,
                     device: str | torch.device | None = None) -> Evaluation:
    """Evaluate a run's packed weights ``name`` (``posthoc-vq evaluate RUN --weights NAME``), against its fp32 model and ground truth.

    Run-based: the packed file is the one ``posthoc-vq compress-weights RUN`` wrote. Writes and returns
    ``eval/weights-<name>[-<codebook>]-<split>.json`` (sizes, per-layer errors, quality of both
    models with 95% CIs, the per-image PSNR change, audit warnings). ``device``: where both models
    encode and decode (default CPU); codes are assigned and metrics computed on CPU.

    Examples
    --------
    >>> main(["compress-weights", "runs/digits", "--bits", "8"])                  # doctest: +SKIP
    >>> posthoc_vq.evaluate_weights("runs/digits", "int8-channel").size["compression_factor"]   # doctest: +SKIP
    """
    from posthoc_vq.evaluation.weights import evaluate_weights as run_based

    return run_based(run.path if isinstance(run, LoadedRun) else run, name, split=split, data_dir=data_dir, codebook=codebook, device=device)


# ---------------------------------------------------------------------- the codec: bitstreams and the standard codecs
def compress(run: str | Path | LoadedRun, codebook: str, images: Any, *, prior: str = "empirical", container: bool = False) -> list[bytes]:
    """Bitstream files (bytes) of images (N, C, H, W) in [0, 1] with a run's codebook (``"trained"``: its own trained quantizer).

    One file per image, or one container for all (``container=True``); ``prior``: uniform, empirical or context
    (token grids). The format: :mod:`posthoc_vq.codec.bitstream`. :func:`decompress` reverses it exactly.
    """
    from posthoc_vq.evaluation.bitstreams import compress_images

    x, _ = as_images(images)
    return compress_images(_run_path(run), codebook, x, prior=prior, container=container)


def decompress(run: str | Path | LoadedRun, files: Any) -> list[tuple[Any, np.ndarray, torch.Tensor]]:
    """(header, codes (N, h, w, M), images (N, C, H, W) in [0, 1]) of each bitstream (bytes or a path), with the run's
    codebook its header names (checked by sha256); the images are those ``evaluate --codebook`` decodes."""
    from posthoc_vq.evaluation.bitstreams import decompress_files

    return decompress_files(_run_path(run), [files] if isinstance(files, (bytes, str, Path)) else list(files))


def _run_path(run: str | Path | LoadedRun) -> Path:
    return Path(run.path) if isinstance(run, LoadedRun) else Path(run)


def compare_codecs(target: str | Path, *, split: str = "test", out: str | Path | None = None, codecs: list[str] | None = None,
                   n_images: int | None = None, n_boot: int = 1000, data_dir: str | None = None, progress: Any = None,
                   with_runs: list[str | Path] = (), ladder: dict[str, Any] | None = None,
                   qualities: dict[str, list[int]] | None = None) -> dict[str, Any]:
    """``posthoc-vq codecs``: the standard codecs' quality ladders on a run's (or a dataset's) split, beside the run's coded evaluations.

    ``target``: a run directory (its dataset's split; its evaluations of that split that hold a real rate, post-hoc codebooks
    and a trained quantizer's own codes, join the comparison when they cover the same images) or a dataset name.
    ``with_runs``: more runs of the same dataset whose evaluations join (e.g. a trained VQ run beside post-hoc codebooks).
    ``ladder``: a standard-codec ladder already measured on the same images (it is measured otherwise).
    ``qualities``: codec -> its quality ladder (default :data:`~posthoc_vq.codec.standard.DEFAULT_QUALITIES`).
    Writes ``OUT/codecs-<split>.json`` (everything, with per-image values), ``codecs-<split>.md`` (the points and the BD table)
    and ``codecs-<split>.png`` (the RD figure); returns the JSON.
    """
    from posthoc_vq.data import load_dataset
    from posthoc_vq.evaluation.rd_comparison import bd_rows, posthoc_series, public
    from posthoc_vq.evaluation.reconstruction import split_images
    from posthoc_vq.evaluation.standard_codecs import codec_ladder
    from posthoc_vq.io import write_json
    from posthoc_vq.latents import load_run_splits
    from posthoc_vq.progress import reporting
    from posthoc_vq.provenance import provenance
    from posthoc_vq.records import read_evaluation
    from posthoc_vq.report.codec_figure import bd_markdown, codec_rd_figure, standard_points
    from posthoc_vq.run import Run

    path = Path(target)
    is_run = path.is_dir() and (path / "config.json").exists()
    if is_run:
        run = Run.open(path)
        splits, dataset = load_run_splits(run.root, data_dir), run.config().data.name
        out = Path(out) if out else run.report_dir
    else:
        dataset, splits = str(target), load_dataset(str(target), data_dir)
        out = Path(out) if out else Path("runs") / "codecs" / dataset
    x = split_images(splits, split)
    x = x[:n_images] if n_images else x
    if ladder is None:
        with reporting(progress):
            ladder = codec_ladder(x, codecs, qualities, progress=progress)
    files = []
    for r in ([run] if is_run else []) + [Run.open(w) for w in with_runs]:
        files += [r.eval_file(split)] + list(r.codebook_eval_files(split).values())
    results = [r for r in (read_evaluation(f) for f in files if f.exists())
               if r.rate is not None and r.rate.n_images == len(x) and r.rate.per_image_psnr_db is not None]
    series = posthoc_series(results)
    rows = bd_rows(series, ladder, n_boot=n_boot)
    standard = standard_points(ladder)
    result = {"target": str(target), "dataset": dataset, "split": split, "n_images": len(x), "standard": standard, "posthoc": public(series),
              "bd": rows, "ladder": ladder, "provenance": provenance()}
    out.mkdir(parents=True, exist_ok=True)
    paths = {k: out / f"codecs-{split}.{k}" for k in ("json", "md", "png")}
    write_json(paths["json"], result)
    title = f"{dataset} {split} ({len(x):,} images): coded codebooks vs standard codecs"
    cont = next((r.continuous.psnr_db.mean for r in results if r.codebook is None and r.continuous is not None), None)
    codec_rd_figure(public(series), standard, paths["png"], title=title, continuous_psnr_db=None if series.get("trained") else cont)
    lines = [f"# {title}", "", "Rates are real: each image's own file, bytes x 8 / pixels, header included.", ""]
    for c, s in standard.items():
        lines.append(f"- {c}: " + ", ".join(f"q{q} {b:.3f} bpp {p:.2f} dB" for q, b, p in zip(s["qualities"], s["bpp"], s["psnr_db"])))
    for k, s in public(series).items():
        lines.append(f"- {k} ({s['prior']} prior): " + ", ".join(f"{n} {b:.3f} bpp {p:.2f} dB" for n, b, p in zip(s["names"], s["bpp"], s["psnr_db"])))
    paths["md"].write_text("\n".join(lines) + "\n\n" + bd_markdown(rows))
    result["paths"] = {k: str(v) for k, v in paths.items()}
    return result


# ---------------------------------------------------------------------------- sweeps
def ablate(spec: str | Path, out: str | Path | None = None, **options: Any) -> dict[str, Any]:
    """``posthoc-vq ablate``: run (or resume) a sweep, then write its claims (``claims.json`` and ``claims.md``).

    ``spec``: a packaged spec's name (``posthoc-vs-joint``) or a YAML/JSON path; ``out``: the sweep folder (default
    ``runs/sweeps/<name>``). ``options``: those of :func:`posthoc_vq.experiments.run_sweep` (``executor``, ``workers``,
    ``address``, ``data_dir``, ``progress``, ``console``, ``only``, ``device``) and ``tracking``
    (:class:`posthoc_vq.pipeline.Tracking`). Returns the claims with the cell counts.
    """
    from posthoc_vq import pipeline
    from posthoc_vq.experiments import load_sweep_spec, run_sweep
    from posthoc_vq.experiments.store import ResultStore
    from posthoc_vq.report.claims import write_claims
    from posthoc_vq.run import Sweep

    tracking = options.pop("tracking", pipeline.NO_TRACKING)
    tracking.check()
    loaded = load_sweep_spec(spec)
    out = Path(out) if out is not None else Path("runs") / "sweeps" / loaded.name
    claims = run_sweep(spec, out, **options)
    write_claims(out, claims, loaded)
    if tracking.kind is not None:
        try:
            store = ResultStore(Sweep(out).db_file)
            try:
                done = store.rows("done")
            finally:
                store.close()
        except Exception:  # noqa: BLE001 - tracking never fails the command: log_sweep says it could not read the database
            done = None
        pipeline.log_sweep(tracking, out, claims, done)
    return claims
