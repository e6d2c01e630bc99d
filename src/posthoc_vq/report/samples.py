"""Decoded images for a report: the fixed test images, their reconstructions, interpolation strips, test codes.

Everything here runs a run's models on a few held-out images (plus one pass over the
split to assign codes for the usage figures) and writes nothing into the run directory:
latents are encoded in memory, not through the run's latent cache.

The fixed images are the first test image of each class, in class order (then the next
unused images if there are fewer classes than columns), so every report of runs on the
same dataset shows the same images, with no random choice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from posthoc_vq.evaluation.interpolation import decode_paths, linear_paths
from posthoc_vq.evaluation.reconstruction import decode, split_images
from posthoc_vq.latents import LatentSet, encode_split, from_tokens, load_run_splits, model_latents, to_tokens
from posthoc_vq.quantize.codebooks import list_codebooks, open_codebook
from posthoc_vq.quantize.compressed import list_compressed, open_compressed
from posthoc_vq.report.image_figures import ImageRow
from posthoc_vq.train import load_model, load_run_config

N_IMAGES = 8
INTERPOLATION_STEPS = 9


@dataclass
class RunModels:
    """A run's model, codebooks and weight-quantized models, opened once for all the report's images.

    ``idx`` are the fixed images (:func:`fixed_indices`), ``path`` the interpolation path
    (1, S, *L) between the ``mu`` of the first and last of them; ``codes[name]`` are a
    codebook's codes of every token of the split, ``path_codes[name]`` those of the path's
    tokens (both from one ``predict`` call per codebook: a graph codebook's query costs a
    kNN search over its fitted points).
    """

    run_dir: Path
    model: Any
    meta: dict[str, Any]
    x: torch.Tensor  # (N, C, H, W) images of the split in [0, 1]
    labels: np.ndarray  # (N,) int64
    split: str
    codebooks: list[tuple[str, Any, dict[str, Any]]] = field(default_factory=list)
    weights: list[tuple[str, Any, dict[str, Any]]] = field(default_factory=list)
    idx: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    path: np.ndarray | None = None
    codes: dict[str, np.ndarray] = field(default_factory=dict)
    path_codes: dict[str, np.ndarray] = field(default_factory=dict)
    _latents: dict[tuple[str, int | None], LatentSet] = field(default_factory=dict)

    def latents(self, kind: str = "mu", seed: int | None = None) -> LatentSet:
        """Latents of the whole split (cached in memory), ``mu`` or ``z`` with ``seed``."""
        key = (kind, seed if kind == "z" else None)
        if key not in self._latents:
            self._latents[key] = model_latents(self.model, self.x, self.labels, kind=kind, seed=seed or 0, split=self.split)
        return self._latents[key]

    def codebook_latents(self, meta: dict[str, Any]) -> LatentSet:
        """The split's latents of the kind a codebook was fitted on."""
        return self.latents(meta.get("latents", "mu"), meta.get("latent_seed"))


def open_run_models(run_dir: str | Path, split: str = "test", data_dir: str | None = None, splits=None) -> RunModels:
    """Load the model, every codebook and every packed-weight model of a run, the split's images, and assign codes.

    Raises CheckpointError (from the loaders) when the run has no usable model.
    """
    run_dir = Path(run_dir)
    torch.set_num_threads(min(2, load_run_config(run_dir).train.threads))
    model, meta = load_model(run_dir)
    splits = splits or load_run_splits(run_dir, data_dir)
    images = splits.split(split)
    rm = RunModels(run_dir, model, meta, split_images(splits, split), np.asarray(images.labels, dtype=np.int64), split)
    rm.codebooks = [(name, *open_codebook(run_dir, name)) for name in list_codebooks(run_dir)]
    rm.weights = sorted(((name, *open_compressed(run_dir, name)) for name in list_compressed(run_dir)),
                        key=lambda w: (-w[2].get("weights", {}).get("bits", 0), w[0]))  # INT8 before INT4
    rm.idx = fixed_indices(rm.labels)
    mu = rm.latents("mu").values
    rm.path = linear_paths(mu[rm.idx[:1]], mu[rm.idx[-1:]], INTERPOLATION_STEPS)  # (1, S, *L)
    path_tokens = to_tokens(rm.path[0])  # (S * T, C)
    for name, codebook, cb_meta in rm.codebooks:
        tokens = rm.codebook_latents(cb_meta).tokens()
        codes = codebook.predict(np.concatenate([tokens, path_tokens]))
        rm.codes[name], rm.path_codes[name] = codes[: len(tokens)], codes[len(tokens):]
    return rm


def fixed_indices(labels: np.ndarray, n: int = N_IMAGES) -> np.ndarray:
    """(min(n, N),) int64: the first image of each class in class order, topped up with the next unused images."""
    labels = np.asarray(labels)
    first = [int(np.flatnonzero(labels == c)[0]) for c in np.unique(labels)][:n]
    taken = set(first)
    rest = [i for i in range(len(labels)) if i not in taken][: max(0, n - len(first))]
    return np.asarray(first + rest, dtype=np.int64)


def _decode_codes(rm: RunModels, codebook: Any, codes: np.ndarray, latent_shape: tuple[int, ...]) -> torch.Tensor:
    return decode(rm.model, torch.from_numpy(np.ascontiguousarray(from_tokens(codebook.inverse_transform(codes), latent_shape), dtype=np.float32)))


def reconstruction_rows(rm: RunModels, notes: dict[str, str] | None = None, prefix: str = "") -> list[ImageRow]:
    """Rows continuous | each codebook | each packed-weight model for the fixed images ``rm.idx`` (no ground-truth row).

    Codebooks decode their codes of the latents they were fitted on (``mu``, or ``z`` with their
    seed); a packed-weight model encodes and decodes with its own weights. ``notes`` maps a row
    name (``continuous``, a codebook or a weights name) to text under its label (e.g. its test PSNR).
    """
    notes = notes or {}
    label = lambda name, shown: f"{prefix}{shown}" + (f"\n{notes[name]}" if name in notes else "")  # noqa: E731
    mu = rm.latents("mu")
    rows = [ImageRow(label("continuous", "continuous (mu)"), decode(rm.model, torch.from_numpy(mu.values[rm.idx])))]
    for name, codebook, meta in rm.codebooks:
        latents = rm.codebook_latents(meta)
        codes = rm.codes[name]
        per_image = codes.reshape(len(latents), latents.tokens_per_image, *codes.shape[1:])[rm.idx]  # (n, T[, M])
        rows.append(ImageRow(label(name, name), _decode_codes(rm, codebook, per_image.reshape(-1, *codes.shape[1:]), latents.latent_shape)))
    x = rm.x[rm.idx]
    for name, qmodel, _ in rm.weights:
        rows.append(ImageRow(label(name, f"weights {name}"), decode(qmodel, encode_split(qmodel, x, "mu"))))
    return rows


def interpolation_rows(rm: RunModels, prefix: str = "") -> list[ImageRow]:
    """``rm.path`` decoded continuously, then with every point snapped to each codebook's code: one row each."""
    rows = [ImageRow(f"{prefix}continuous", decode_paths(rm.model, rm.path)[0])]
    shape = rm.path.shape[2:]
    for name, codebook, _ in rm.codebooks:
        rows.append(ImageRow(f"{prefix}{name}", _decode_codes(rm, codebook, rm.path_codes[name], shape)))
    return rows


def test_codes(rm: RunModels, name: str, meta: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(codes, token labels) of every token of the split under codebook ``name``, on the latents it was fitted on."""
    return rm.codes[name], rm.codebook_latents(meta).token_labels()
