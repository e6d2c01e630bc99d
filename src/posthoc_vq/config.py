"""Typed run configuration: presets in YAML, dotted overrides, unknown keys are errors.

A run is described by one :class:`RunConfig`. It is assembled from the preset
files of a dataset (``presets/<dataset>/vae.yaml`` and ``train.yaml`` of :func:`configs_root`: the package's
``posthoc_vq/configs``, or ``$POSTHOC_VQ_CONFIGS``),
then from ``--set key.sub=value`` overrides, and validated by pydantic. Any key
that the schema does not know is an error naming the key and the file (or the
override) it came from, with the closest valid key as a hint.
"""

from __future__ import annotations

import atexit
import contextlib
import difflib
import importlib.resources
import json
import math
import os
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from posthoc_vq.errors import ConfigError
from posthoc_vq.names import check_name

PRESET_FILES = ("vae.yaml", "train.yaml")


class _Strict(BaseModel):
    """Base of every config model: unknown keys are errors, no float field accepts inf or nan, and no integer field
    accepts a string (`K: "8"` is an error, not 8; floats still read "1e-3", which YAML leaves a string)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_string_integers(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, str) and info.field_name is not None:
            kinds = typing.get_args(cls.model_fields[info.field_name].annotation) or (cls.model_fields[info.field_name].annotation,)
            if int in kinds and str not in kinds and not any(typing.get_origin(k) is Literal for k in kinds):
                raise ValueError(f"expected an integer, got the string {value!r}: write it without quotes")
        return value


class DataConfig(_Strict):
    """Which dataset, where it lives, and how train/val are split."""

    name: str = "digits"
    data_dir: str | None = None
    val_fraction: float = Field(0.1, gt=0.0, lt=1.0)
    split_seed: int = 0
    image_size: int | None = Field(None, ge=4, description="resize target (celeba, image-folder)")
    max_train_images: int | None = Field(None, ge=1, description="train on a seeded subset (split_seed) of this many train images; val and test are unchanged")
    max_val_images: int | None = Field(None, ge=1, description="keep the first this many val images (a quick look; results say so)")
    max_test_images: int | None = Field(None, ge=1, description="keep the first this many test images (a quick look; results say so)")
    crop: list[int] | None = Field(None, min_length=2, max_length=2, description="[H, W]: centre-crop every image to H x W pixels "
                                   "(photo datasets, multiples of 8; a stated crop, never a resize)")

    @field_validator("crop")
    @classmethod
    def _crop_multiple(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and any(side < 8 or side % 8 for side in v):
            raise ValueError(f"data.crop {v}: each side must be a positive multiple of 8 (one latent token is 8x8 pixels)")
        return v


class VAEConfig(_Strict):
    """Convolutional VAE architecture and loss.

    ``image_size`` and ``in_channels`` come from the dataset when left empty.
    Families: ``conv`` and ``tiny`` (narrow channels) encode an image into one
    ``latent_dim`` vector; ``spatial`` into a (latent_dim, h, w) grid with
    h = w = image_size / 2**len(channels), one latent_dim-vector (token) per position.

    ``quantizer``: ``none`` is the continuous VAE. ``vq`` (``codebook_size`` K codes), ``rvq``
    (``stages`` M residual stages of K codes) and ``fsq`` (finite scalar quantization with
    ``fsq_levels``) train a quantizer jointly with the model (a VQ-VAE: no sampling, no KL term;
    see :mod:`posthoc_vq.models.quantizers`); the spatial family quantizes each grid position.
    ``commitment``, ``ema_decay``, ``dead_code_threshold`` and ``kmeans_init`` set the VQ codebooks.
    """

    family: Literal["conv", "tiny", "spatial", "taef2"] = "conv"
    latent_dim: int = Field(128, ge=1, description="size of a latent vector: the whole latent, or one grid position's channels (spatial)")
    channels: list[int] = Field(default_factory=lambda: [32, 64], min_length=1)
    kernel_size: int = Field(4, ge=2)
    batch_norm: bool = True
    recon_loss: Literal["mse", "bce"] = "mse"
    beta: float = Field(1.0, ge=0.0)
    image_size: int | None = Field(None, ge=2)
    in_channels: int | None = Field(None, ge=1)
    quantizer: Literal["none", "vq", "rvq", "fsq"] = Field("none", description="none: continuous VAE; vq, rvq, fsq: a quantizer trained with the model")
    codebook_size: int | None = Field(None, ge=2, description="K codes (per stage for rvq); vq and rvq only")
    stages: int | None = Field(None, ge=1, description="residual stages M; rvq only")
    fsq_levels: list[int] | None = Field(None, min_length=1, description="levels per FSQ dimension, each >= 2 (e.g. [8, 8, 4, 4] = 1024 codes = 10 bits); fsq only")
    commitment: float = Field(0.25, ge=0.0, description="commitment-loss weight (vq, rvq)")
    ema_decay: float = Field(0.99, gt=0.0, lt=1.0, description="decay of the EMA codebook updates (vq, rvq)")
    dead_code_threshold: float = Field(
        0.25, ge=0.0,
        description="a code whose EMA cluster size falls below this fraction of the uniform share (vectors per batch / K) is restarted from the batch (0: never; vq, rvq)",
    )
    kmeans_init: bool = Field(True, description="initialise the codebooks by k-means on the first training batch (vq, rvq)")

    @model_validator(mode="after")
    def _check_quantizer(self) -> "VAEConfig":
        q = self.quantizer
        needs = {"codebook_size": q in ("vq", "rvq"), "stages": q == "rvq", "fsq_levels": q == "fsq"}
        for key, needed in needs.items():
            given = getattr(self, key) is not None
            if given and not needed:
                uses = {"codebook_size": "vq or rvq", "stages": "rvq", "fsq_levels": "fsq"}[key]
                raise ValueError(f"model.{key} is set, but model.quantizer is '{q}' and only {uses} uses it; remove model.{key} or change model.quantizer")
            if needed and not given:
                example = {"codebook_size": "model.codebook_size=1024", "stages": "model.stages=2", "fsq_levels": "model.fsq_levels=[8,8,4,4]"}[key]
                raise ValueError(f"model.quantizer '{q}' needs model.{key} (for example {example})")
        if self.fsq_levels is not None:
            bad = [level for level in self.fsq_levels if level < 2]
            if bad:
                raise ValueError(f"model.fsq_levels {self.fsq_levels}: every level must be at least 2 (got {bad}); a dimension with one level carries no information")
            if sum(math.log2(level) for level in self.fsq_levels) > 62:
                raise ValueError(f"model.fsq_levels {self.fsq_levels} make more than 2**62 codes; code indices must fit in int64: use fewer or smaller levels")
        return self

    @model_validator(mode="after")
    def _check_geometry(self) -> "VAEConfig":
        if self.image_size is not None:
            factor = 2 ** len(self.channels)
            if self.image_size % factor:
                raise ValueError(
                    f"image_size {self.image_size} is not divisible by 2**len(channels) = {factor}; "
                    "use fewer channel stages or resize the data"
                )
        return self


class TrainConfig(_Strict):
    """Optimiser, schedule, stopping criterion and numerics."""

    epochs: int = Field(30, ge=1, description="maximum epochs")
    batch_size: int = Field(128, ge=1)
    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)
    lr_schedule: Literal["constant", "cosine", "step", "plateau"] = "constant"
    lr_step_size: int = Field(10, ge=1, description="epochs between decays (step schedule)")
    lr_gamma: float = Field(0.5, gt=0.0, le=1.0, description="decay factor (step, plateau)")
    early_stopping: bool = True
    patience: int = Field(3, ge=1, description="epochs without val improvement before stopping")
    min_delta: float = Field(0.0, ge=0.0, description="improvement needed, in val-loss units")
    min_epochs: int = Field(0, ge=0, description="warm-up: epochs 1..min_epochs never count toward patience, so early stopping "
                                                 "ends a run at epoch min_epochs + patience at the earliest (an unstable start is not judged)")
    grad_clip: float | None = Field(None, gt=0.0)
    threads: int = Field(2, ge=1)
    precision: Literal["fp32", "bf16", "auto"] = Field(
        "fp32", description="forward passes in fp32, in bf16 autocast, or auto: bf16 where the device computes bf16 natively "
                            "(CUDA; a CPU with AVX512-BF16 or AMX), else fp32; the precision used is recorded in the run")
    eval_batch_size: int = Field(1000, ge=1)


MAX_SEED = 2**32 - 1  # numpy's and scikit-learn's seeds are 32-bit; torch takes them too


class RunConfig(_Strict):
    """Everything that determines a training run."""

    seed: int = Field(0, ge=0, le=MAX_SEED, description="seed of initialisation, data order and noise (0 to 2**32 - 1)")
    data: DataConfig = Field(default_factory=DataConfig)
    model: VAEConfig = Field(default_factory=VAEConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class QuantizeConfig(_Strict):
    """A post-hoc latent codebook: method, size, which latents, which data it is fitted on."""

    method: Literal["kmeans", "geodesic", "hybrid", "residual", "random-prior", "class-conditional"] = "kmeans"
    K: int = Field(1024, ge=2, description="codebook size (per stage for residual; the total budget split equally over the classes for class-conditional)")
    latents: Literal["mu", "z"] = "mu"
    latent_seed: int = Field(0, ge=0, le=MAX_SEED, description="sampling seed when latents is z")
    fit_on: Literal["train", "train+val", "train+test", "train+val+test"] = "train"
    random_state: int = Field(0, ge=0, le=MAX_SEED)
    max_iter: int | None = Field(None, ge=1, description="Lloyd / k-medoid iterations (method default if empty)")
    n_neighbors: typing.Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        50, description="k of the kNN graph (geodesic, hybrid); 'auto': twice the smallest k giving a connected graph, at most 200"
    )
    symmetry: Literal["union", "mutual"] = "union"
    graph: Literal["exact", "hnsw"] = "exact"
    n_stages: int = Field(2, ge=1, description="residual stages M")
    threads: int = Field(2, ge=1)
    max_fit_vectors: int | None = Field(
        None, ge=1, description="fit on a seeded random sample of at most this many latent vectors (tokens); all are still assigned"
    )
    name: str | None = Field(None, description="codebook name in the run (default from method, K, latents, fit set)")

    @field_validator("name", mode="before")
    @classmethod
    def _confined_name(cls, v: Any) -> Any:
        return v if v is None else check_name(v, "codebook name")

    def default_name(self) -> str:
        """``name`` when set, else ``<method>[-M<stages>]-K<K>-<latents>[-seed<s>]-<fit set>[-n<max_fit_vectors>]`` and a
        suffix for every other setting that changes the codebook and differs from its default
        (``-k<n_neighbors>``, ``-mutual``, ``-hnsw`` for graph methods; ``-it<max_iter>``; ``-rs<random_state>``),
        e.g. ``kmeans-K1024-mu-train``, ``geodesic-K1024-mu-train-k10``.

        The method leads, so codebooks of different methods never share a name, and two configs that
        fit different codebooks never share one either. K is the configured ``K`` (for class-conditional
        the total budget: the codebook holds n_classes * floor(K / n_classes) codes).
        """
        if self.name:
            return self.name
        stages = f"-M{self.n_stages}" if self.method == "residual" else ""
        seed = f"-seed{self.latent_seed}" if self.latents == "z" else ""
        sample = f"-n{self.max_fit_vectors}" if self.max_fit_vectors is not None else ""
        fields = type(self).model_fields
        extra = ""
        if self.method in ("geodesic", "hybrid"):
            extra += f"-k{self.n_neighbors}" if self.n_neighbors != fields["n_neighbors"].default else ""
            extra += f"-{self.symmetry}" if self.symmetry != fields["symmetry"].default else ""
            extra += f"-{self.graph}" if self.graph != fields["graph"].default else ""
        extra += f"-it{self.max_iter}" if self.max_iter is not None and self.method != "random-prior" else ""
        extra += f"-rs{self.random_state}" if self.random_state != fields["random_state"].default else ""
        return f"{self.method}{stages}-K{self.K}-{self.latents}{seed}-{self.fit_on.replace('+', '_')}{sample}{extra}"

    def fitted_settings(self) -> dict[str, Any]:
        """The settings that determine the fitted codebook (all but ``threads`` and ``name``): two codebooks
        with equal settings are the same codebook."""
        return self.model_dump(mode="json", exclude={"threads", "name"})


class QuantizeFile(_Strict):
    """Schema of a ``quantize-*.yaml`` preset file."""

    quantize: QuantizeConfig = Field(default_factory=QuantizeConfig)


class WeightsConfig(_Strict):
    """Post-training weight quantization of a run's networks (``bits`` 32 means: keep fp32).

    ``granularity``: one scale per ``tensor``, per output ``channel``, or per ``group`` of
    ``group_size`` consecutive weights along the input dimension (a layer whose fan-in is
    at most ``group_size`` falls back to per-channel). ``skip``: module names kept in
    float, with ``first`` / ``last`` meaning the first / last quantizable layer.
    """

    bits: Literal[32, 8, 4] = 8
    symmetric: bool = True
    granularity: Literal["tensor", "channel", "group"] | None = Field(None, description="default: channel for 8 bits, group for 4")
    group_size: int = Field(32, ge=2)
    fold_bn: bool = False
    skip: list[str] = Field(default_factory=list)
    float_dtype: Literal["fp32", "fp16"] = Field("fp32", description="storage of biases, norms and skipped layers")
    name: str | None = None

    @field_validator("name", mode="before")
    @classmethod
    def _confined_name(cls, v: Any) -> Any:
        return v if v is None else check_name(v, "weights name")

    def resolved_granularity(self) -> str:
        return self.granularity or ("channel" if self.bits == 8 else "group")

    def default_name(self) -> str:
        if self.name:
            return self.name
        if self.bits == 32:
            return "fp32"
        g = self.resolved_granularity()
        parts = [f"int{self.bits}", f"g{self.group_size}" if g == "group" else g, "sym" if self.symmetric else "asym"]
        if self.fold_bn:
            parts.append("bnfold")
        if self.skip:
            parts.append("skip-" + "_".join(self.skip))
        if self.float_dtype == "fp16":
            parts.append("fp16")
        return "-".join(parts)


class FinetuneConfig(_Strict):
    """Decoder fine-tuning on a post-hoc codebook's quantized latents (``posthoc-vq finetune``; a sweep's ``finetune.*``).

    ``epochs`` 0 means no fine-tuning. ``part``: train the decoder only, or the decoder and the
    codebook's vectors. ``lr`` defaults to the run's ``train.lr``.
    """

    epochs: int = Field(0, ge=0, description="0: no fine-tuning")
    part: Literal["decoder", "decoder+codebook"] = "decoder"
    lr: float | None = Field(None, gt=0)
    patience: int = Field(3, ge=1)
    min_delta: float = Field(0.0, ge=0, description="val-loss gain per image that counts as an improvement")


# ----------------------------------------------------------------------------- loading


CONFIGS_ENV = "POSTHOC_VQ_CONFIGS"
_extracted: dict[str, Path] = {}


def packaged_configs() -> Path:
    """The ``configs/`` folder shipped inside the package (``presets/`` and ``ablations/``), found through importlib.resources.

    A normal install (wheel, editable or source tree) keeps it as a real folder, returned as is. A package
    imported from a zip archive has it extracted once per process to a temporary folder (removed at exit).
    """
    root = importlib.resources.files("posthoc_vq") / "configs"
    if isinstance(root, Path):
        return root
    if "root" not in _extracted:  # pragma: no cover - zip imports only
        stack = contextlib.ExitStack()
        atexit.register(stack.close)
        _extracted["root"] = Path(stack.enter_context(importlib.resources.as_file(root)))
    return _extracted["root"]


def configs_root() -> Path:
    """Folder holding ``presets/`` and ``ablations/``: ``$POSTHOC_VQ_CONFIGS`` if set, else the package's own (:func:`packaged_configs`)."""
    env = os.environ.get(CONFIGS_ENV)
    return Path(env) if env else packaged_configs()


def _root_note() -> str:
    env = os.environ.get(CONFIGS_ENV)
    return f" (from ${CONFIGS_ENV}={env})" if env else ""


def known_presets() -> list[str]:
    """Names of the dataset presets: the folders under ``presets/`` of :func:`configs_root`, sorted."""
    folder = configs_root() / "presets"
    return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


def preset_files(preset: str) -> list[str]:
    """The YAML files of the preset ``preset`` (a name, looked up under :func:`configs_root` only, never in the
    working folder): ``vae.yaml``, ``train.yaml`` first, then the quantize presets, sorted."""
    folder = configs_root() / "presets" / preset
    if not folder.is_dir():
        preset_dir(preset)  # the unknown-preset error, listing the known ones
    names = sorted(p.name for p in folder.iterdir() if p.is_file() and p.suffix in (".yaml", ".yml"))
    return [n for n in PRESET_FILES if n in names] + [n for n in names if n not in PRESET_FILES]


def known_quantize_presets() -> list[str]:
    """Names ``<dataset>/quantize-*`` that ``load_quantize_config`` accepts."""
    return [f"{d}/{Path(f).stem}" for d in known_presets() for f in preset_files(d) if f.startswith("quantize-")]


def known_ablations() -> list[str]:
    """Names of the sweep specs under ``ablations/`` of :func:`configs_root` (``posthoc-vq ablate NAME``), sorted."""
    folder = configs_root() / "ablations"
    return sorted(p.stem for p in folder.iterdir() if p.is_file() and p.suffix == ".yaml") if folder.is_dir() else []


def list_configs() -> dict[str, Any]:
    """What ``posthoc-vq presets`` prints: the configs folder, each preset with its files, each ablation spec with its file."""
    root = configs_root()
    return {
        "root": str(root),
        "source": CONFIGS_ENV if os.environ.get(CONFIGS_ENV) else "package",
        "presets": [{"name": name, "path": str(root / "presets" / name), "files": preset_files(name)} for name in known_presets()],
        "ablations": [{"name": name, "path": str(root / "ablations" / f"{name}.yaml")} for name in known_ablations()],
    }


def preset_dir(preset: str | os.PathLike) -> Path:
    """Resolve a preset name (``fashion-mnist``) or a folder path to its folder."""
    path = Path(preset)
    if path.is_dir():
        return path
    candidate = configs_root() / "presets" / str(preset)
    if candidate.is_dir():
        return candidate
    known = known_presets()
    close = difflib.get_close_matches(str(preset), known, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise ConfigError(
        f"unknown preset '{preset}'{hint}: no folder {candidate}{_root_note()}. Known presets: {', '.join(known) or '(none)'}; "
        "`posthoc-vq presets` lists them"
    )


class StrictYAMLError(yaml.YAMLError):
    """A YAML document that parses but is not acceptable as config: a duplicate key or a non-finite number."""

    def __init__(self, message: str, non_finite: bool = False):
        super().__init__(message)
        self.non_finite = non_finite


_FLOAT_TAG, _MERGE_TAG = "tag:yaml.org,2002:float", "tag:yaml.org,2002:merge"
MAX_YAML_DEPTH = 50  # levels of nesting in a config document (configs use a handful)
MAX_YAML_VALUES = 100_000  # values a config document may expand to, aliases counted at every use


class StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses duplicate mapping keys (at any depth) and ``.inf``/``.nan`` numbers.

    Errors name the dotted key and the line. Keys brought in by a ``<<`` merge may be
    overridden, as in YAML; only keys written twice in the same mapping are duplicates.
    """

    def construct_document(self, node):
        self._paths: dict[int, str] = {}
        size = self._record_paths(node, "", {}, 0)
        if size > MAX_YAML_VALUES:
            raise StrictYAMLError(f"the document expands to more than {MAX_YAML_VALUES:,} values (anchors and aliases repeat their "
                                  "contents); a config is a few dozen keys: write the values out instead of through aliases")
        return super().construct_document(node)

    def _record_paths(self, node, prefix: str, sizes: dict[int, int], depth: int) -> int:
        """Record each node's dotted path; returns how many values the node expands to (an alias counts its whole
        contents again, as the parsed data will hold them), computed once per node."""
        if id(node) in sizes:  # an alias: already walked
            return sizes[id(node)]
        if depth > MAX_YAML_DEPTH:
            raise StrictYAMLError(f"line {node.start_mark.line + 1}: nested more than {MAX_YAML_DEPTH} levels deep; a config is a few levels of keys")
        sizes[id(node)] = 1
        total = 1
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if key_node.tag == _MERGE_TAG:
                    child = prefix
                else:
                    name = key_node.value if isinstance(key_node, yaml.ScalarNode) else "?"
                    child = f"{prefix}.{name}" if prefix else str(name)
                self._paths.setdefault(id(value_node), child)
                total += 1 + self._record_paths(value_node, child, sizes, depth + 1)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                child = f"{prefix}[{i}]"
                self._paths.setdefault(id(item), child)
                total += self._record_paths(item, child, sizes, depth + 1)
        sizes[id(node)] = min(total, MAX_YAML_VALUES + 1)  # capped: a bomb's counts stay small integers
        return sizes[id(node)]

    def _where(self, node) -> str:
        path = getattr(self, "_paths", {}).get(id(node))
        return f"'{path}' (line {node.start_mark.line + 1})" if path else f"line {node.start_mark.line + 1}"

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            first: dict[Any, Any] = {}
            for key_node, _ in node.value:
                if key_node.tag == _MERGE_TAG:
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    earlier = first.get(key)
                except TypeError:  # unhashable key: SafeLoader reports it
                    continue
                if earlier is not None:
                    parent = getattr(self, "_paths", {}).get(id(node))
                    dotted = f"{parent}.{key}" if parent else str(key)
                    raise StrictYAMLError(
                        f"duplicate key '{dotted}' (line {key_node.start_mark.line + 1}; first given on line {earlier.start_mark.line + 1}): "
                        "each key may appear only once in a mapping; delete one of them"
                    )
                first[key] = key_node
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_float(self, node):
        value = super().construct_yaml_float(node)
        if not math.isfinite(value):
            raise StrictYAMLError(
                f"{self._where(node)} is {node.value}, a non-finite number; config values must be finite: give a finite value", non_finite=True
            )
        return value


StrictLoader.add_constructor(_FLOAT_TAG, StrictLoader.construct_yaml_float)


def load_yaml(text: str) -> Any:
    """Parse YAML text with :class:`StrictLoader` (raises ``yaml.YAMLError``, :class:`StrictYAMLError` included)."""
    try:
        return yaml.load(text, Loader=StrictLoader)  # noqa: S506 - StrictLoader is a SafeLoader
    except RecursionError:  # the parser itself recurses per level, before any depth check can run
        raise StrictYAMLError(f"nested more than {MAX_YAML_DEPTH} levels deep (the parser ran out of stack); a config is a few levels of keys") from None


def read_yaml_text(path: Path) -> str:
    """The text of a YAML file; a missing, binary or non-UTF-8 file is a :class:`ConfigError` naming it."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"{path} is a folder, not a YAML config file") from None
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err.strerror or err}") from None
    if b"\x00" in raw:
        raise ConfigError(
            f"{path}: binary data (it contains NUL bytes), not a YAML text file; check that the path points at the config, "
            "or save the file again as UTF-8 YAML text"
        )
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise ConfigError(
            f"{path}: not UTF-8 text (byte 0x{raw[err.start]:02x} on line {line} at offset {err.start}); "
            "config files must be UTF-8: save the file again with UTF-8 encoding"
        ) from None


def read_yaml(path: Path) -> dict[str, Any]:
    """Read one YAML mapping strictly; every problem is a :class:`ConfigError` naming the file.

    Refused: a missing, binary or non-UTF-8 file, an empty one, a YAML syntax error, a key given twice
    in one mapping (at any depth), a non-finite number (``.inf``, ``-.inf``, ``.nan``),
    and a top level that is not a mapping.
    """
    text = read_yaml_text(path)
    try:
        data = load_yaml(text)
    except StrictYAMLError as err:
        raise ConfigError(f"{path}: {err}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML: {err}") from None
    if data is None:  # an empty file (or only comments) would silently mean "all defaults"
        raise ConfigError(f"{path} is empty (no keys, only comments or nothing); give its settings, or delete the file")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys at the top level")
    return data


def check_keys(data: dict[str, Any], schema: type[BaseModel], source: str, prefix: str = "") -> None:
    """Raise :class:`ConfigError` for the first key in ``data`` that ``schema`` does not define."""
    fields = schema.model_fields
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if key not in fields:
            hint = difflib.get_close_matches(str(key), list(fields), n=1)
            did = f" (did you mean '{prefix}{hint[0]}'?)" if hint else ""
            valid = ", ".join(sorted(fields))
            raise ConfigError(f"unknown config key '{dotted}' in {source}{did}. Valid keys here: {valid}")
        annotation = fields[key].annotation
        sub = _submodel(annotation)
        if sub is not None and isinstance(value, dict) and typing.get_origin(annotation) is dict:  # a mapping of name -> submodel
            for name, item in value.items():
                if isinstance(item, dict):
                    check_keys(item, sub, source, prefix=f"{dotted}.{name}.")
        elif sub is not None and isinstance(value, dict):
            check_keys(value, sub, source, prefix=f"{dotted}.")


def _submodel(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge; ``update`` wins."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_override(item: str) -> tuple[list[str], Any]:
    """Parse ``train.epochs=5`` into (['train', 'epochs'], 5); the value is read as YAML."""
    if "=" not in item:
        raise ConfigError(f"override '{item}' must look like key.sub=value (for example train.epochs=5)")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override '{item}' has an empty key")
    try:
        value = load_yaml(raw) if raw.strip() else None
    except StrictYAMLError as err:
        if err.non_finite:
            raise ConfigError(f"--set {item}: {key} is {raw.strip()}, a non-finite number; config values must be finite: give a finite value") from None
        raise ConfigError(f"--set {item}: {err}") from None
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str] | tuple[str, ...], schema: type[BaseModel]) -> dict[str, Any]:
    """Apply dotted overrides; each key is checked against ``schema`` before it is set."""
    out = json.loads(json.dumps(data))  # deep copy of plain data
    for item in overrides:
        parts, value = parse_override(item)
        nested: Any = value
        for part in reversed(parts):
            nested = {part: nested}
        check_keys(nested, schema, source=f"--set {item}")
        out = deep_merge(out, nested)
    return out


def validate(data: dict[str, Any], schema: type[BaseModel], source: str) -> Any:
    """Validate plain data against ``schema``; errors name the dotted key and ``source``."""
    check_keys(data, schema, source)
    try:
        return schema.model_validate(data)
    except ValidationError as err:
        lines = []
        for e in err.errors():
            loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
            hint = "; inf and nan are not allowed: give a finite number" if e["type"] == "finite_number" else ""
            lines.append(f"  {loc}: {e['msg']} (got {e.get('input')!r}){hint}")
        raise ConfigError(f"invalid config from {source}:\n" + "\n".join(lines)) from None


def load_run_config(preset: str | os.PathLike = "digits", overrides: list[str] | tuple[str, ...] = (), seed: int | None = None) -> RunConfig:
    """Build the :class:`RunConfig` of a preset plus overrides.

    Parameters
    ----------
    preset : preset name (``posthoc-vq presets``) or a folder holding ``vae.yaml``/``train.yaml``.
    overrides : dotted ``key=value`` strings, applied after the preset files.
    seed : if given, replaces ``seed``.
    """
    folder = preset_dir(preset)
    merged: dict[str, Any] = {}
    for name in PRESET_FILES:
        path = folder / name
        if path.exists():
            data = read_yaml(path)
            check_keys(data, RunConfig, source=str(path))
            merged = deep_merge(merged, data)
    merged = apply_overrides(merged, list(overrides), RunConfig)
    if seed is not None:
        merged["seed"] = seed
    return validate(merged, RunConfig, source=f"preset {folder} with overrides {list(overrides)}")


def load_quantize_config(preset: str | os.PathLike | None = None, overrides: list[str] | tuple[str, ...] = ()) -> QuantizeConfig:
    """Build a :class:`QuantizeConfig` from a ``quantize-*.yaml`` file (name or path) plus ``quantize.*`` overrides.

    ``preset`` is a file path, or ``<dataset>/quantize-euclidean`` style name (``posthoc-vq presets`` lists them).
    """
    data: dict[str, Any] = {}
    source = "defaults"
    if preset is not None:
        path = Path(preset)
        if not path.is_file():
            path = configs_root() / "presets" / f"{preset}.yaml"
        if not path.is_file():
            known = known_quantize_presets()
            close = difflib.get_close_matches(str(preset), known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"quantize preset not found: {preset}{hint} (looked for {path}{_root_note()}); give a YAML file or one of: "
                              f"{', '.join(known) or '(none)'}")
        data = read_yaml(path)
        check_keys(data, QuantizeFile, source=str(path))
        source = str(path)
    data = apply_overrides(data, list(overrides), QuantizeFile)
    return validate(data, QuantizeFile, source=f"{source} with overrides {list(overrides)}").quantize
