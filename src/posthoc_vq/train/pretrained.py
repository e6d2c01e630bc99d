"""Pretrained autoencoders as runs: ``posthoc-vq import taef2 --weights DIR --out RUN``.

An imported run is an ordinary run directory, so every command works on it (quantize, evaluate,
compress, table, report, compress-weights, export, finetune, geometry). It holds:

* ``config.json``: the resolved :class:`~posthoc_vq.config.RunConfig`. The model section is the
  network's fixed config (family ``taef2``); the data section names the data it is fitted and
  tested on (``bsds500-kodak`` by default: codebooks are fitted on BSDS500, evaluated on Kodak);
  ``train`` holds the settings a decoder fine-tune uses;
* ``model.safetensors`` / ``model.json``: the weights converted to float32 safetensors, their
  sha256, and ``pretrained`` (source, licence, the sha256 of each original file) in place of
  ``epoch`` and ``trained_steps``, which are None: the model was not trained here;
* ``pretrained.json``: the same record; ``LICENSE-model.txt``: the source's licence, copied with its copyright notice;
* ``provenance.json``: versions, git commit and command, as for a trained run.

There is no ``history.json`` and no ``train_summary.json``: the audit reads ``trained_steps``
None (unknown, not zero), so an imported model is never called untrained or unconverged.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from posthoc_vq.autoencoders.taef2 import SOURCE, WEIGHT_FILES, load_taef2
from posthoc_vq.config import DataConfig, RunConfig, TrainConfig
from posthoc_vq.errors import ConfigError, NotFoundError
from posthoc_vq.io import sha256_file, write_json, write_text
from posthoc_vq.provenance import provenance
from posthoc_vq.run import Run
from posthoc_vq.train.checkpoint import save_model

PRETRAINED = ("taef2",)
#: fine-tune and evaluation settings of an imported photo model: small batches (a 768x512 image's activations
#: take about 100 MB per layer), a learning rate for adapting, not training from scratch
PHOTO_TRAIN = {"batch_size": 4, "eval_batch_size": 4, "lr": 1e-4, "epochs": 5, "patience": 2}


def import_pretrained(name: str, weights: str | os.PathLike, out: str | os.PathLike, *, data: DataConfig | None = None,
                      train: dict[str, Any] | None = None) -> Run:
    """Create run ``out`` from pretrained model ``name`` (one of :data:`PRETRAINED`) whose files are in ``weights``.

    ``data``: the data the run's commands use (default ``bsds500-kodak``); ``train``: overrides of
    the fine-tune settings (:data:`PHOTO_TRAIN`). A folder that already holds a run is refused.
    """
    if name not in PRETRAINED:
        raise ConfigError(f"unknown pretrained model {name!r}; choose one of: {', '.join(PRETRAINED)}")
    folder = Path(weights)
    if not folder.is_dir():
        raise NotFoundError(f"--weights {folder} is not a folder; pass the folder holding {' and '.join(WEIGHT_FILES.values())}")
    model = load_taef2(folder)  # every key and shape checked before anything is written
    files = {part: {"file": f, "sha256": sha256_file(folder / f), "bytes": (folder / f).stat().st_size} for part, f in WEIGHT_FILES.items()}
    licence = folder / "LICENSE"
    record = {**SOURCE, "files": files, "weights_folder": str(folder.resolve()), "converted": "float16 -> float32 on CPU (exact)"}
    config = RunConfig(seed=0, data=data or DataConfig(name="bsds500-kodak"), model=model.config,
                       train=TrainConfig(**{**PHOTO_TRAIN, **(train or {})}))
    run = Run.create(out)
    with run.lock("import"):
        if run.exists():
            raise ConfigError(f"{run.root} already holds a run; choose another --out (or delete it to import again)")
        write_json(run.pretrained_file, record)
        if licence.is_file():
            write_text(run.model_licence_file, licence.read_text())
        save_model(run, model, {"epoch": None, "trained_steps": None, "pretrained": record})
        write_json(run.provenance_file(), provenance(seed=config.seed, pretrained=record))
        write_json(run.config_file, config.to_dict())  # last: a folder is a run once config.json exists
    return run
