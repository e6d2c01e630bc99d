"""Decoded sample images for reports, computed by the commands that produce results and stored beside them.

A report never runs a model (see :mod:`posthoc_vq.report`): what its image figures show is
decoded here, when ``posthoc-vq evaluate`` (continuous or ``--codebook``), ``compress-weights``
or a sweep job evaluates, and written into the run (:meth:`posthoc_vq.run.Run.samples_file`):

``eval/samples-continuous-<split>.safetensors``
    ``idx`` (n,) int64 the fixed images (:func:`fixed_indices`), ``labels`` (n,) int64 their classes,
    ``ground_truth`` and ``reconstruction`` (n, C, H, W) in [0, 1], ``interpolation`` (S, C, H, W):
    the straight line between the posterior means of the first and last fixed image, decoded.
``eval/samples-<codebook>-<split>.safetensors``
    ``idx``; ``reconstruction`` (n, C, H, W): the codes of the fixed images' latents (of the kind the
    codebook was fitted on) decoded; ``interpolation`` (S, C, H, W): the same line with every point
    snapped to its code (a class-conditional codebook codes the tokens with their images' classes and
    each point of the line with the class of its nearer end); ``usage_counts`` (M, K) int64 vectors
    per code on the whole split (M = 1 except for residual stages); ``class_counts`` (K, C) int64 vectors of each class per code
    (stage 1); for a codebook that keeps its kNN graph, ``graph_degrees`` (nodes,) and
    ``graph_component_sizes`` (components,) int64, largest first.
``eval/samples-weights-<name>-<split>.safetensors``
    ``idx``; ``reconstruction`` (n, C, H, W): the packed-weight model's own encode and decode.

Each file's metadata names its ``kind``, ``split``, the ``model_sha256`` of the model it was made
with and, for a codebook or packed weights, that artifact's ``artifact_sha256``, so a reader can
tell stale samples (a retrained model, a refitted codebook) from current ones (:func:`is_current`).

The fixed images are the first image of each class in class order (then the next unused
images if there are fewer classes than columns), so every run on the same dataset shows the
same images, with no random choice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.sparse.csgraph import connected_components

from posthoc_vq.data import DatasetSplits
from posthoc_vq.evaluation.interpolation import decode_paths, linear_paths, path_labels
from posthoc_vq.evaluation.reconstruction import decode, split_images
from posthoc_vq.io import save_tensors
from posthoc_vq.latents import LatentSet, encode_split, from_tokens, load_run_splits, run_latents, to_tokens
from posthoc_vq.metrics.codebook import usage_counts
from posthoc_vq.quantize.codebooks import open_codebook
from posthoc_vq.quantize.compressed import open_compressed
from posthoc_vq.quantize.latent.base import predict_codes
from posthoc_vq.run import Run

N_IMAGES = 8
INTERPOLATION_STEPS = 9
#: pixels per image row of the report (fixed images, interpolation strip): photographs get fewer of each (at least 2 images,
#: 3 steps) so that a report of full-size Kodak images is not dozens of extra decodes; 28x28 to 256x256 images keep 8 and 9
SAMPLE_PIXELS = 2**20
FORMAT = "1"


def fixed_indices(labels: np.ndarray, n: int = N_IMAGES) -> np.ndarray:
    """(min(n, N),) int64: the first image of each class in class order, topped up with the next unused images."""
    labels = np.asarray(labels)
    first = [int(np.flatnonzero(labels == c)[0]) for c in np.unique(labels)][:n]
    taken = set(first)
    rest = [i for i in range(len(labels)) if i not in taken][: max(0, n - len(first))]
    return np.asarray(first + rest, dtype=np.int64)


def sample_counts(pixels_per_image: int) -> tuple[int, int]:
    """(fixed images, interpolation steps) of the report's samples for images of ``pixels_per_image`` (:data:`SAMPLE_PIXELS`)."""
    fits = SAMPLE_PIXELS // max(1, int(pixels_per_image))
    return max(2, min(N_IMAGES, fits)), max(3, min(INTERPOLATION_STEPS, fits))


def code_counts(codes: np.ndarray, labels: np.ndarray, n_codes: int) -> tuple[np.ndarray, np.ndarray]:
    """((M, K) vectors per code per stage, (K, C) vectors of each class per code of stage 1) of ``codes`` (N,) or (N, M)."""
    codes = np.asarray(codes, dtype=np.int64)
    stages = codes[:, None] if codes.ndim == 1 else codes
    counts = np.stack([usage_counts(stages[:, m], n_codes) for m in range(stages.shape[1])])
    labels = np.asarray(labels, dtype=np.int64)
    class_counts = np.zeros((n_codes, int(labels.max()) + 1 if labels.size else 1), dtype=np.int64)
    np.add.at(class_counts, (stages[:, 0], labels), 1)
    return counts, class_counts


def graph_structure(estimator: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """(node degrees, connected component sizes largest first) of an estimator's kNN graph, or None if it keeps none."""
    graph = getattr(estimator, "graph_", None)
    if graph is None:
        return None
    adj = graph.adjacency.tocsr()
    degrees = np.diff(adj.indptr).astype(np.int64)
    _, labels = connected_components(adj, directed=False)
    return degrees, np.sort(np.bincount(labels))[::-1].astype(np.int64)


def continuous_samples(model: Any, x: torch.Tensor, labels: np.ndarray, idx: np.ndarray, steps: int = INTERPOLATION_STEPS) -> dict[str, torch.Tensor]:
    """Ground truth, reconstruction and the interpolation strip of the fixed images ``idx`` of ``x`` (N, C, H, W)."""
    mu = encode_split(model, x[idx], "mu").numpy()
    path = linear_paths(mu[:1], mu[-1:], steps)  # (1, S, *L)
    return {
        "idx": torch.from_numpy(idx), "labels": torch.from_numpy(np.asarray(labels, dtype=np.int64)[idx]),
        "ground_truth": x[idx].contiguous(), "reconstruction": decode(model, torch.from_numpy(mu)), "interpolation": decode_paths(model, path)[0],
    }


def _decode_codes(model: Any, codebook: Any, codes: np.ndarray, latent_shape: tuple[int, ...]) -> torch.Tensor:
    return decode(model, torch.from_numpy(np.ascontiguousarray(from_tokens(codebook.inverse_transform(codes), latent_shape), dtype=np.float32)))


def codebook_samples(model: Any, codebook: Any, latents: LatentSet, x_fixed: torch.Tensor, idx: np.ndarray,
                     steps: int = INTERPOLATION_STEPS) -> dict[str, torch.Tensor]:
    """A codebook's rows of the report: the fixed images through it, the snapped interpolation strip, code counts, graph structure.

    ``latents`` are the whole split's latents of the kind the codebook was fitted on, with their labels; ``x_fixed`` the
    fixed images (n, C, H, W), images ``idx`` of the split.
    """
    mu = latents.values[idx] if latents.kind == "mu" else encode_split(model, x_fixed, "mu").numpy()  # not encoded twice
    path = linear_paths(mu[:1], mu[-1:], steps)  # (1, S, *L): the continuous strip's path
    tokens, path_tokens = latents.tokens(), to_tokens(path[0])
    ends = latents.labels[idx]
    path_token_labels = np.repeat(path_labels(ends[:1], ends[-1:], steps)[0], latents.tokens_per_image)  # each step's tokens: its nearer end's class
    # one query: a graph codebook's costs a kNN search
    codes = predict_codes(codebook, np.concatenate([tokens, path_tokens]), np.concatenate([latents.token_labels(), path_token_labels]))
    codes, path_codes = codes[: len(tokens)], codes[len(tokens):]
    per_image = codes.reshape(len(latents), latents.tokens_per_image, *codes.shape[1:])[idx]  # (n, T[, M])
    counts, class_counts = code_counts(codes, latents.token_labels(), int(codebook.n_codes))
    out = {
        "idx": torch.from_numpy(idx),
        "reconstruction": _decode_codes(model, codebook, per_image.reshape(-1, *codes.shape[1:]), latents.latent_shape),
        "interpolation": _decode_codes(model, codebook, path_codes, path.shape[2:]),
        "usage_counts": torch.from_numpy(counts), "class_counts": torch.from_numpy(class_counts),
    }
    graph = graph_structure(codebook)
    if graph is not None:
        out["graph_degrees"], out["graph_component_sizes"] = (torch.from_numpy(np.ascontiguousarray(a)) for a in graph)
    return out


def weights_samples(qmodel: Any, x_fixed: torch.Tensor, idx: np.ndarray) -> dict[str, torch.Tensor]:
    """The fixed images encoded and decoded by a packed-weight model (its own encoder and decoder)."""
    return {"idx": torch.from_numpy(idx), "reconstruction": decode(qmodel, encode_split(qmodel, x_fixed, "mu"))}


def write_samples(run_dir: str | Path | Run, split: str = "test", *, codebook: str | None = None, weights: str | None = None,
                  data_dir: str | None = None, splits: DatasetSplits | None = None) -> Path:
    """Decode and store the report samples of the continuous model, of codebook ``codebook`` or of packed weights ``weights``.

    Returns the written file (:meth:`Run.samples_file`); the run's writer lock is held while writing.
    """
    if codebook is not None and weights is not None:
        raise ValueError("samples are of the continuous model, one codebook or one packed-weights artifact, not a combination")
    run = Run.open(run_dir)
    path = run.samples_file(split, codebook=codebook, weights=weights)
    with run.lock("evaluate"):
        model, meta = run.load_model()
        torch.set_num_threads(run.config().train.threads)
        splits = splits or load_run_splits(run.root, data_dir)
        labels = np.asarray(splits.split(split).labels, dtype=np.int64)
        x = split_images(splits, split)
        n_images, steps = sample_counts(x.shape[-2] * x.shape[-1])
        idx = fixed_indices(labels, n_images)
        info = {"format": FORMAT, "split": split, "model_sha256": meta["sha256"], "n_images": str(len(idx)), "steps": str(steps)}
        with torch.no_grad():
            if codebook is not None:
                estimator, cb_meta = open_codebook(run, codebook)
                latents = run_latents(run.root, split, cb_meta.get("latents", "mu"), seed=cb_meta.get("latent_seed") or 0, splits=splits, model=model)
                tensors = codebook_samples(model, estimator, latents, x[idx], idx, steps)
                info |= {"kind": "codebook", "codebook": codebook, "artifact_sha256": cb_meta["sha256"], "method": str(cb_meta.get("method"))}
            elif weights is not None:
                qmodel, record = open_compressed(run, weights)
                tensors = weights_samples(qmodel, x[idx], idx)
                info |= {"kind": "weights", "weights": weights, "artifact_sha256": record["sha256"], "bits": str(record["weights"]["bits"])}
            else:
                tensors = continuous_samples(model, x, labels, idx, steps)
                info |= {"kind": "continuous"}
        save_tensors(path, tensors, metadata=info)
    return path


def expected_sha256(run: Run, *, codebook: str | None = None, weights: str | None = None) -> tuple[str | None, str | None]:
    """(model sha256, artifact sha256) the samples of this model / codebook / weights must carry, from the records; None where absent."""
    from posthoc_vq.io import read_json

    model = read_json(run.model_record_file, what="model record").get("sha256") if run.model_record_file.exists() else None
    record = run.codebook_files(codebook)[1] if codebook is not None else run.weights_files(weights)[1] if weights is not None else None
    artifact = read_json(record, what="artifact record").get("sha256") if record is not None and record.exists() else None
    return model, artifact


def is_current(run_dir: str | Path | Run, split: str = "test", *, codebook: str | None = None, weights: str | None = None) -> bool:
    """Whether the stored samples exist and were made with the run's current model (and codebook or weights)."""
    from safetensors import safe_open

    run = Run.open(run_dir)
    path = run.samples_file(split, codebook=codebook, weights=weights)
    if not path.exists():
        return False
    try:
        with safe_open(str(path), framework="pt") as f:
            info = f.metadata() or {}
    except Exception:  # damaged: not current
        return False
    model, artifact = expected_sha256(run, codebook=codebook, weights=weights)
    if info.get("model_sha256") != model:
        return False
    return (codebook is None and weights is None) or info.get("artifact_sha256") == artifact


def ensure_samples(run_dir: str | Path | Run, split: str = "test", *, codebook: str | None = None, weights: str | None = None,
                   data_dir: str | None = None, splits: DatasetSplits | None = None) -> Path:
    """:func:`write_samples` unless current samples are already stored (for resumable jobs such as a sweep's)."""
    run = Run.open(run_dir)
    if is_current(run, split, codebook=codebook, weights=weights):
        return run.samples_file(split, codebook=codebook, weights=weights)
    return write_samples(run, split, codebook=codebook, weights=weights, data_dir=data_dir, splits=splits)
