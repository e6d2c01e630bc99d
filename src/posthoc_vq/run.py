"""The one owner of a run directory: its layout, names, lock, atomic artifacts and typed readers.

Every path inside a run is made here and only here; other modules ask a :class:`Run` for a
path, a lock, an artifact folder or a validated record and never join path parts themselves.

Layout::

    config.json                      fully resolved RunConfig (the one in force after a resume that changed it)
    config_changes.json              the original config and every change made on resume, with its epoch
    provenance.json                  seed, versions, git commit, command (provenance-resume.json on resume)
    model.safetensors / model.json   the usable model (best validation epoch) and its record (sha256)
    history.json / history.csv       per-epoch curves
    train_summary.json               converged?, stop reason, epochs, steps, time, compute (wall seconds, optimizer steps, images seen)
    pretrained.json                  an imported pretrained model (posthoc-vq import): its source, licence and original files' sha256
    LICENSE-model.txt                the licence of an imported model, with its copyright notice
    finetune.json                    a fine-tuned run (posthoc-vq finetune): its source run and codebook, the part trained, settings
    checkpoints/latest.json          points at the newest complete resume checkpoint
    checkpoints/epoch-NNNN/          model.safetensors, optimizer.safetensors, state.json
    latents/<kind>-<split>[-seedS].{safetensors,json}   cached latents, tied to model.json's sha256
    codebooks/<name>/                codebook.safetensors + codebook.json, published as one folder
    weights/<name>/                  weights.safetensors (the packed file that ships) + weights.json
    eval/continuous-<split>.json     evaluation results (see :meth:`Run.eval_file`)
    eval/<codebook>-<split>.json
    eval/weights-<w>[@<codebook>]-<split>.json
    eval/perceptual-<codebook|continuous|weights-<w>[@<codebook>]>-<split>.json
    eval/samples-<codebook|continuous|weights-<w>>-<split>.safetensors   decoded sample images for reports
    eval/geometry-<split>.json / .png   latent geometry (posthoc-vq geometry) and its figure
    export/                          ONNX files
    report/                          tables, figures, report.md / report.html
    .lock                            the writer lock (see :mod:`posthoc_vq.locking`)

Names of codebooks, packed weights and sweeps match :data:`NAME_PATTERN`; anything else (``..``,
``/``, an absolute path, ``.``, empty) is refused before any work. Every path is checked to lie
inside its run, also those read from files (``latest.json``).

An artifact (a codebook, packed weights) is written into ``<kind>/.tmp-<name>-<pid>/`` and
published with one rename, so a reader sees the old artifact, the new one, or none, never a
mismatched pair. Writers hold the run's lock (:meth:`Run.lock`); whoever takes it removes the
``*.tmp-*`` leftovers of writers that were killed.
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Literal

from posthoc_vq.errors import CheckpointError, ConfigError, NotFoundError
from posthoc_vq.io import sha256_file
from posthoc_vq.locking import folder_lock, holds_lock
from posthoc_vq.names import NAME_PATTERN, check_name, is_name  # noqa: F401 - NAME_PATTERN re-exported: run.NAME_PATTERN
from posthoc_vq.records import (
    CheckpointPointer,
    History,
    ModelRecord,
    TrainSummary,
    read_dict,
    read_record,
)

RESERVED_CODEBOOK_NAMES = ("continuous", "geometry")  # eval/geometry-<split>.json is the latent geometry (Run.geometry_file)
RESERVED_CODEBOOK_PREFIXES = ("weights-", "perceptual-", "samples-")

CONFIG, CONFIG_CHANGES = "config.json", "config_changes.json"
PROVENANCE, PROVENANCE_RESUME = "provenance.json", "provenance-resume.json"
MODEL, MODEL_RECORD = "model.safetensors", "model.json"
HISTORY_JSON, HISTORY_CSV, SUMMARY = "history.json", "history.csv", "train_summary.json"
CHECKPOINTS, LATEST, CHECKPOINT_STATE = "checkpoints", "latest.json", "state.json"
CHECKPOINT_MODEL, CHECKPOINT_OPTIMIZER = "model.safetensors", "optimizer.safetensors"
LATENTS, CODEBOOKS, WEIGHTS, EVAL, EXPORT, REPORT = "latents", "codebooks", "weights", "eval", "export", "report"
CODEBOOK_TENSORS, CODEBOOK_RECORD = "codebook.safetensors", "codebook.json"
WEIGHTS_TENSORS, WEIGHTS_RECORD = "weights.safetensors", "weights.json"
SPLITS = ("train", "val", "test")
FINETUNE = "finetune.json"
PRETRAINED, MODEL_LICENCE = "pretrained.json", "LICENSE-model.txt"

ArtifactKind = Literal["codebooks", "weights"]


def check_codebook_name(name: Any) -> str:
    """A codebook name: :func:`check_name`, and not one the ``eval/`` file names reserve."""
    check_name(name, "codebook name")
    if name in RESERVED_CODEBOOK_NAMES or name.startswith(RESERVED_CODEBOOK_PREFIXES):
        raise ConfigError(f"invalid codebook name {name!r}: {', '.join(map(repr, RESERVED_CODEBOOK_NAMES))} and the prefixes {', '.join(RESERVED_CODEBOOK_PREFIXES)} name other results")
    return name


def _split_name(split: str) -> str:
    parts = split.split("+")
    if not parts or any(p not in SPLITS for p in parts):
        raise ConfigError(f"unknown split '{split}'; use train, val, test or a union such as train+test")
    return split


class Run:
    """A run directory. ``Run.open`` for one that exists, ``Run.create`` for a new one."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"Run({str(self.root)!r})"

    def __fspath__(self) -> str:
        return str(self.root)

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(cls, path: str | os.PathLike | "Run") -> "Run":
        """An existing run (a folder with ``config.json``); otherwise a CheckpointError saying what to do."""
        if isinstance(path, Run):
            return path
        run = cls(path)
        if not run.root.is_dir():
            raise NotFoundError(f"run directory not found: {run.root}; train one with `posthoc-vq train --out {run.root}`")
        if not run.config_file.exists():
            raise NotFoundError(f"{run.root} is not a run directory (no {CONFIG}); train one with `posthoc-vq train --out {run.root}`")
        return run

    @classmethod
    def create(cls, path: str | os.PathLike) -> "Run":
        """A run folder to train into (created, possibly empty)."""
        run = cls(path)
        if run.root.exists() and not run.root.is_dir():
            raise ConfigError(f"--out {run.root} is a file, not a folder; choose another --out")
        run.root.mkdir(parents=True, exist_ok=True)
        return run

    def exists(self) -> bool:
        return self.config_file.exists()

    # ------------------------------------------------------------------ confinement, lock, artifacts

    def inside(self, path: str | os.PathLike) -> Path:
        """``path`` if it resolves to a place inside this run, else a CheckpointError."""
        p = Path(path)
        root = self.root.resolve()
        resolved = (p if p.is_absolute() else Path.cwd() / p).resolve()
        if resolved != root and root not in resolved.parents:
            raise CheckpointError(f"{p} lies outside the run directory {self.root}; refusing to read or write it")
        return p

    def _path(self, *parts: str) -> Path:
        return self.inside(self.root.joinpath(*parts))

    @contextmanager
    def lock(self, command: str) -> Iterator["Run"]:
        """Hold this run's writer lock; stale temp files of killed writers are removed on entry."""
        first = not holds_lock(self.root)
        with folder_lock(self.root, command, what="run"):
            if first:
                self.remove_stale_temp_files()
            yield self

    def require_lock(self) -> None:
        if not holds_lock(self.root):
            raise RuntimeError(f"writing into {self.root} without its lock (a bug: wrap the write in `with run.lock(...)`)")

    def remove_stale_temp_files(self) -> list[Path]:
        """Delete ``*.tmp-*`` files and folders left by killed writers (call only under the lock)."""
        removed = []
        for p in self.root.rglob("*"):
            if ".tmp-" in p.name and (p.is_file() or p.is_dir()):
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
                removed.append(p)
        return removed

    def new_artifact(self, kind: ArtifactKind, name: str) -> Path:
        """The folder to publish artifact ``name`` into (name checked, writer lock required).

        Write it with :func:`posthoc_vq.io.atomic_folder` (the artifact savers do), so it appears as one unit.
        """
        self.require_lock()
        return self.artifact_dir(kind, name)

    # ------------------------------------------------------------------ files of a training run

    @property
    def config_file(self) -> Path:
        return self.root / CONFIG

    @property
    def config_changes_file(self) -> Path:
        return self._path(CONFIG_CHANGES)

    def provenance_file(self, resumed: bool = False) -> Path:
        return self._path(PROVENANCE_RESUME if resumed else PROVENANCE)

    @property
    def model_file(self) -> Path:
        return self._path(MODEL)

    @property
    def model_record_file(self) -> Path:
        return self._path(MODEL_RECORD)

    @property
    def history_json(self) -> Path:
        return self._path(HISTORY_JSON)

    @property
    def history_csv(self) -> Path:
        return self._path(HISTORY_CSV)

    @property
    def summary_file(self) -> Path:
        return self._path(SUMMARY)

    @property
    def finetune_file(self) -> Path:
        return self._path(FINETUNE)

    @property
    def pretrained_file(self) -> Path:
        return self._path(PRETRAINED)

    @property
    def model_licence_file(self) -> Path:
        return self._path(MODEL_LICENCE)

    @property
    def checkpoints_dir(self) -> Path:
        return self._path(CHECKPOINTS)

    @property
    def latest_file(self) -> Path:
        return self._path(CHECKPOINTS, LATEST)

    def checkpoint_dir(self, epoch: int) -> Path:
        return self._path(CHECKPOINTS, f"epoch-{int(epoch):04d}")

    def checkpoint_dirs(self) -> list[Path]:
        return sorted(self.checkpoints_dir.glob("epoch-[0-9][0-9][0-9][0-9]*")) if self.checkpoints_dir.is_dir() else []

    def latest_checkpoint(self) -> Path | None:
        """Folder of the newest complete checkpoint named by ``latest.json`` (checked to lie in this run), or None."""
        if not self.latest_file.exists():
            return None
        pointer = read_record(self.latest_file, CheckpointPointer, "checkpoint pointer")
        folder = self._path(CHECKPOINTS, pointer.checkpoint)
        if not (folder / CHECKPOINT_STATE).exists():
            raise CheckpointError(f"{self.latest_file} points at {folder}, which is missing or incomplete; delete {self.latest_file} to restart training")
        return folder

    # ------------------------------------------------------------------ latents, artifacts, results

    def latent_files(self, kind: str, split: str, seed: int | None = None) -> tuple[Path, Path]:
        """(tensors, record) of the cached latents of one split."""
        if kind not in ("mu", "z"):
            raise ConfigError(f"latents must be 'mu' or 'z', got '{kind}'")
        stem = f"{kind}-{_split_name(split)}" + (f"-seed{int(seed or 0)}" if kind == "z" else "")
        return self._path(LATENTS, stem + ".safetensors"), self._path(LATENTS, stem + ".json")

    def artifact_dir(self, kind: ArtifactKind, name: str) -> Path:
        (check_codebook_name if kind == CODEBOOKS else lambda n: check_name(n, "weights name"))(name)
        return self._path(kind, name)

    def codebook_files(self, name: str) -> tuple[Path, Path]:
        """(tensors, record) of codebook ``name``."""
        folder = self.artifact_dir(CODEBOOKS, name)
        return folder / CODEBOOK_TENSORS, folder / CODEBOOK_RECORD

    def weights_files(self, name: str) -> tuple[Path, Path]:
        """(packed tensors, record) of packed-weights artifact ``name``."""
        folder = self.artifact_dir(WEIGHTS, name)
        return folder / WEIGHTS_TENSORS, folder / WEIGHTS_RECORD

    def _names(self, kind: ArtifactKind, record: str) -> list[str]:
        folder = self.root / kind
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir() if p.is_dir() and is_name(p.name) and (p / record).exists())

    def codebook_names(self) -> list[str]:
        return self._names(CODEBOOKS, CODEBOOK_RECORD)

    def weights_names(self) -> list[str]:
        return self._names(WEIGHTS, WEIGHTS_RECORD)

    def eval_file(self, split: str, *, codebook: str | None = None, weights: str | None = None, kind: Literal["pixel", "perceptual", "samples"] = "pixel") -> Path:
        """Where an evaluation result lives.

        ``pixel``: ``continuous-<split>``, ``<codebook>-<split>``, ``weights-<w>[@<codebook>]-<split>`` (.json);
        ``perceptual``: ``perceptual-<codebook|continuous>-<split>.json``, ``perceptual-weights-<w>[@<codebook>]-<split>.json``;
        ('@' is in no name, so packed weights ``a-b`` and weights ``a`` with codebook ``b`` never share a file).
        ``samples``: ``samples-<codebook|continuous|weights-<w>>-<split>.safetensors`` (decoded images for reports).
        """
        _split_name(split)
        if codebook is not None:
            check_codebook_name(codebook)
        if weights is not None:
            check_name(weights, "weights name")
        if kind == "perceptual":  # no codebook name starts with 'weights-', so the fp32 and packed-weight files never collide
            what = f"weights-{weights}{'@' + codebook if codebook else ''}" if weights is not None else codebook or "continuous"
            return self._path(EVAL, f"perceptual-{what}-{split}.json")
        if kind == "samples":  # no codebook name starts with 'weights-', so the two never collide
            what = f"weights-{weights}" if weights is not None else codebook or "continuous"
            return self._path(EVAL, f"samples-{what}-{split}.safetensors")
        if weights is not None:
            return self._path(EVAL, f"weights-{weights}{'@' + codebook if codebook else ''}-{split}.json")
        return self._path(EVAL, f"{codebook or 'continuous'}-{split}.json")

    def codebook_eval_files(self, split: str) -> dict[str, Path]:
        """{codebook name: its pixel evaluation on ``split``} for every codebook evaluated on it."""
        return {n: p for n in self.codebook_names() if (p := self.eval_file(split, codebook=n)).exists()}

    def weights_eval_files(self, split: str) -> list[Path]:
        """Pixel evaluations of packed weights on ``split`` (with or without a codebook)."""
        folder = self.root / EVAL
        return sorted(folder.glob(f"weights-*-{split}.json")) if folder.is_dir() else []

    def geometry_file(self, split: str) -> Path:
        """Latent geometry of ``split`` (intrinsic dimension, distortion curve, classes, connectivity): ``eval/geometry-<split>.json``."""
        return self._path(EVAL, f"geometry-{_split_name(split)}.json")

    def geometry_figure(self, split: str) -> Path:
        """The figure of :meth:`geometry_file`: ``eval/geometry-<split>.png``."""
        return self._path(EVAL, f"geometry-{_split_name(split)}.png")

    @property
    def export_dir(self) -> Path:
        return self._path(EXPORT)

    @property
    def report_dir(self) -> Path:
        return self._path(REPORT)

    # ------------------------------------------------------------------ typed readers

    def config(self):
        """The resolved :class:`~posthoc_vq.config.RunConfig` saved in ``config.json``."""
        from posthoc_vq.config import RunConfig, validate
        from posthoc_vq.io import read_json

        data = read_json(self.config_file, what="run config")
        if not isinstance(data, dict):
            raise CheckpointError(f"{self.config_file} is not a valid run config: expected a JSON object, got {type(data).__name__}; restore it or retrain")
        try:
            return validate(data, RunConfig, source=str(self.config_file))
        except ConfigError as err:  # a run's own file, not the user's input: a damaged artifact, as a damaged model.json (exit 1)
            raise CheckpointError(f"{err}; restore {self.config_file} or retrain the run") from None

    def model_record(self) -> dict[str, Any]:
        """``model.json`` checked against :class:`~posthoc_vq.records.ModelRecord` (its sha256 is required)."""
        if not self.model_record_file.exists():
            raise NotFoundError(f"{self.model_record_file} not found: the run has no model yet (has it finished an epoch?); train it with `posthoc-vq train --resume --out {self.root}`")
        return read_dict(self.model_record_file, ModelRecord, "model record")

    def verified_model_sha256(self) -> str:
        """sha256 of ``model.safetensors``, checked against ``model.json`` (missing or modified weights are an error)."""
        expected = self.model_record()["sha256"]
        if not self.model_file.exists():
            raise CheckpointError(f"{self.model_file} not found but {self.model_record_file} records it; restore it or retrain the run")
        actual = _cached_sha256(self.model_file)
        if actual != expected:
            raise CheckpointError(
                f"{self.model_file} is corrupt or was modified: sha256 {actual[:12]}... does not match the recorded {expected[:12]}... in "
                f"{self.model_record_file}; restore it or retrain the run"
            )
        return actual

    def load_model(self):
        """(model in eval mode, model record) of the run; damaged or mismatched files raise CheckpointError."""
        from posthoc_vq.config import VAEConfig, validate
        from posthoc_vq.io import load_tensors
        from posthoc_vq.models import build_vae, load_state_checked

        meta = self.model_record()
        config = validate(meta["model"], VAEConfig, source=str(self.model_record_file))
        saved = self.config() if self.config_file.exists() else None  # read once for both checks below
        if saved is not None and meta.get("data") is not None:  # the data it was trained with (runs since these were kept)
            now = saved.data.model_dump(mode="json")
            changed = [f"data.{k}: {now.get(k)!r} there, {v!r} in training" for k, v in meta["data"].items() if k != "data_dir" and now.get(k) != v]
            if changed:
                raise CheckpointError(f"{self.config_file} was edited after training: its data settings differ from those the model was "
                                      f"trained with ({', '.join(changed)}; {self.model_record_file}); restore config.json")
        if saved is not None and (edited := saved.model) != config:  # the model is built from model.json: say so
            diff = ", ".join(f"{k}: {getattr(edited, k)!r} there, {getattr(config, k)!r} in the model" for k in VAEConfig.model_fields
                             if getattr(edited, k) != getattr(config, k))
            raise CheckpointError(f"{self.config_file} was edited after training: its model settings differ from the trained model's "
                                  f"({diff}; {self.model_record_file}); restore config.json, or train a new run with the new settings")
        model = build_vae(config)
        state = load_tensors(self.model_file, sha256=meta["sha256"])
        load_state_checked(model, state, self.model_file)
        model.eval()
        return model, meta

    def summary(self) -> dict[str, Any] | None:
        """``train_summary.json`` (None while training has not finished)."""
        return read_dict(self.summary_file, TrainSummary, "training summary") if self.summary_file.exists() else None

    def history(self) -> list[dict[str, Any]] | None:
        return read_dict(self.history_json, History, "training history") if self.history_json.exists() else None

    def provenance(self) -> dict[str, Any] | None:
        from posthoc_vq.records import Provenance

        p = self.provenance_file()
        return read_dict(p, Provenance, "provenance") if p.exists() else None

    def samples_file(self, split: str, *, codebook: str | None = None, weights: str | None = None) -> Path:
        """Decoded sample images for reports: :meth:`eval_file` with ``kind='samples'``."""
        return self.eval_file(split, codebook=codebook, weights=weights, kind="samples")


SWEEP_SPEC, SWEEP_PROVENANCE, SWEEP_DB = "spec.json", "provenance.json", "results.sqlite"
SWEEP_CLAIMS_JSON, SWEEP_CLAIMS_MD, SWEEP_RUNS = "claims.json", "claims.md", "runs"


class Sweep:
    """A sweep folder (``posthoc-vq ablate --out``)::

        spec.json            the validated spec, resolved (base, set, axes, compare)
        provenance.json      versions, git commit, command
        results.sqlite       one row per grid cell (experiments/store.py)
        runs/<train_key>/    one run directory per training config (a :class:`Run`)
        runs/<train_key>-ft-<key>/  a decoder fine-tune of it on one codebook (``finetune.*`` cells)
        claims.json/.md      arm summaries, ANOVAs and verdicts
        .lock                the sweep driver's writer lock
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"Sweep({str(self.root)!r})"

    def exists(self) -> bool:
        return self.spec_file.exists() and self.db_file.exists()

    def _path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    @property
    def spec_file(self) -> Path:
        return self._path(SWEEP_SPEC)

    @property
    def provenance_file(self) -> Path:
        return self._path(SWEEP_PROVENANCE)

    @property
    def db_file(self) -> Path:
        return self._path(SWEEP_DB)

    @property
    def claims_json(self) -> Path:
        return self._path(SWEEP_CLAIMS_JSON)

    @property
    def claims_md(self) -> Path:
        return self._path(SWEEP_CLAIMS_MD)

    def run(self, train_key: str) -> Run:
        """The run directory of one training config (its key is checked like a name)."""
        return Run(self._path(SWEEP_RUNS, check_name(train_key, "training key")))

    @staticmethod
    def finetune_run(run: Run | str | os.PathLike, key: str) -> Run:
        """The run directory, beside sweep run ``run``, of a decoder fine-tune of it (``key``: hash of codebook and fine-tune settings)."""
        root = Path(run.root if isinstance(run, Run) else run)
        return Run(root.with_name(check_name(f"{root.name}-ft-{key}", "fine-tune run name")))

    @contextmanager
    def lock(self, command: str) -> Iterator["Sweep"]:
        """Hold the sweep's writer lock (one driver per sweep folder)."""
        with folder_lock(self.root, command, what="sweep"):
            yield self


_sha_cache: dict[tuple[str, int, int], str] = {}


def _cached_sha256(path: Path) -> str:
    """sha256 of a file, remembered per (path, size, mtime) within the process."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _sha_cache:
        _sha_cache[key] = sha256_file(path)
    return _sha_cache[key]
