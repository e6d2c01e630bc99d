"""Sweep specification: a base preset, fixed settings, a grid of axes, and what to compare.

Example (the packaged spec ``latent-dim``, ``posthoc_vq/configs/ablations/latent-dim.yaml``)::

    name: latent-dim
    base: fashion-mnist
    set: {model.family: tiny, quantize.K: 256}
    axes:
      model.latent_dim: [64, 32, 16, 8, 4]
      seed: [0, 1, 2, 3, 4]
      weights.bits: [32, 8, 4]
      quantize.method: [none, kmeans]
    compare: {axis: model.latent_dim, reference: 64, metrics: [psnr_db, ssim], pair_by: seed}

``per`` gives settings for one value of an axis, for every cell at that value (arm settings
win over it), e.g. per dataset of a ``data.name`` axis::

    per:
      data.name:
        digits: {model.latent_dim: 16, quantize.K: 64}
        cifar-10-jpeg: {model.channels: [32, 64, 128]}

Keys are dotted paths into the run config (``seed``, ``data.*``, ``model.*``, ``train.*``),
the latent codebook (``quantize.*``; ``quantize.method: none`` means no codebook) or the
weight quantization (``weights.*``; ``weights.bits: 32``, the default in a sweep, means fp32). Every key, every axis
value and every resulting config is validated before any job starts.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator

from posthoc_vq.config import (
    FinetuneConfig, QuantizeConfig, RunConfig, WeightsConfig, _Strict, apply_overrides, check_keys, configs_root, known_ablations, load_run_config, read_yaml, validate,
)
from posthoc_vq.errors import ConfigError
from posthoc_vq.names import check_name

# fd/kid: offline FD/KID of reconstructions (every cell); real_bpp_*: a codebook cell's real rate, its test images' own
# bitstream files (bytes x 8 / pixels, header included) under that prior; nominal_bpp: tokens x log2 K per pixel
METRICS = ("psnr_db", "ssim", "mse", "fd", "kid", "real_bpp_empirical", "real_bpp_context", "nominal_bpp")
PERCEPTUAL = ("fd", "kid")
STAGES = {"quantize": QuantizeConfig, "weights": WeightsConfig, "finetune": FinetuneConfig}
ARM_AXIS = "arm"


class CompareSpec(_Strict):
    """Which axis is compared, against which arm, on which metrics, with which tests.

    ``margin`` (metric -> practical margin > 0 in the metric's units) and ``question`` turn the
    verdicts on those metrics into equivalence or non-inferiority claims (see :mod:`posthoc_vq.experiments.claims`).
    """

    axis: str
    reference: Any = Field(None, description="reference arm (a value of the axis); empty: every pair of arms")
    metrics: list[str] = Field(default_factory=lambda: ["psnr_db", "ssim"], min_length=1)
    pair_by: str | None = Field("seed", description="axis whose values pair observations across arms (paired t-test)")
    alpha: float = Field(0.05, gt=0.0, lt=1.0)
    correction: Literal["holm", "none"] = "holm"
    min_n: int = Field(3, ge=2, description="fewer observations per arm than this: no significance claim")
    bootstrap: bool = Field(False, description="also report bootstrap CIs of each arm's mean")
    margin: dict[str, float] = Field(default_factory=dict, description="metric -> practical margin > 0 in its units (e.g. psnr_db: 0.5)")
    question: Literal["difference", "non-inferiority", "equivalence"] = Field(
        "difference", description="what each arm is asked against the reference on the metrics with a margin (see experiments.claims)")

    @field_validator("margin")
    @classmethod
    def _margins_of_compared_metrics(cls, v: dict[str, float], info: ValidationInfo) -> dict[str, float]:
        metrics = info.data.get("metrics", [])
        for key, m in v.items():
            if key not in metrics:
                raise ValueError(f"compare.margin.{key}: '{key}' is not among compare.metrics ({', '.join(metrics)})")
            if not m > 0:
                raise ValueError(f"compare.margin.{key}: the margin must be a finite number > 0 (in the metric's units), got {m}")
        return v

    @field_validator("question")
    @classmethod
    def _question_has_margins(cls, v: str, info: ValidationInfo) -> str:
        if v != "difference" and info.data.get("margin") == {}:  # absent: the margin itself was invalid, already reported
            raise ValueError(f"compare.question '{v}' needs compare.margin for at least one metric, e.g. margin: {{psnr_db: 0.5}}")
        if v == "non-inferiority" and info.data.get("reference") is None:
            raise ValueError("compare.question 'non-inferiority' needs compare.reference: the arm every other arm must not be worse than")
        return v


class ArmSpec(_Strict):
    """A named bundle of settings (a value of the ``arm`` axis): ``set`` always, ``per[axis][value]`` at that value of a tag axis."""

    set: dict[str, Any] = Field(default_factory=dict)
    per: dict[str, dict[str, dict[str, Any]]] = Field(default_factory=dict)


class SweepSpec(_Strict):
    """A validated sweep: see the module docstring."""

    name: str
    arms: dict[str, ArmSpec] = Field(default_factory=dict, description="named bundles of settings, the values of the 'arm' axis")
    base: str = "digits"
    set: dict[str, Any] = Field(default_factory=dict)
    axes: dict[str, list[Any]]
    per: dict[str, dict[str, dict[str, Any]]] = Field(
        default_factory=dict, description="axis -> value -> settings for every cell at that value of the axis (arm settings win)")
    compare: CompareSpec
    split: Literal["val", "test"] = "test"
    threads: int = Field(1, ge=1, description="torch threads per job (T)")
    features: str | None = Field(None, description="feature-network folder for fd/kid (default: the perceptual metrics' default location)")

    @field_validator("name", mode="before")
    @classmethod
    def _confined_name(cls, v: Any) -> str:
        return check_name(v, "sweep name")


@dataclass(frozen=True)
class Cell:
    """One point of the grid: its axis values and the configs they resolve to."""

    axes: dict[str, Any]
    run: RunConfig
    quantize: QuantizeConfig | None  # None: no latent codebook
    weights: WeightsConfig
    finetune: FinetuneConfig | None = None  # None: the codebook is used as fitted

    @property
    def train_key(self) -> str:
        """Hash of the training config (where the data lives aside): cells with the same key share one trained model."""
        return config_hash(portable(self.run))

    @property
    def cell_id(self) -> str:
        parts = {"run": portable(self.run), "quantize": self.quantize.model_dump(mode="json") if self.quantize else None,
                 "weights": self.weights.model_dump(mode="json")}
        if self.finetune is not None:  # absent from the hash otherwise, so existing sweeps keep their cell ids
            parts["finetune"] = self.finetune.model_dump(mode="json")
        return config_hash(parts)


def portable(run: RunConfig) -> dict[str, Any]:
    """The run config without machine-specific paths."""
    data = run.model_dump(mode="json")
    data["data"].pop("data_dir", None)
    if not data["train"]["min_epochs"]:  # absent at its default, so sweeps from before the warm-up keep their keys and cell ids
        del data["train"]["min_epochs"]
    return data


def config_hash(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _split_key(key: str) -> tuple[str, str]:
    head, _, rest = key.partition(".")
    return head, rest


def _check_key(key: str, source: str) -> None:
    """Raise ConfigError when a dotted key names nothing a sweep can set."""
    head, rest = _split_key(key)
    if head in STAGES:
        if not rest:
            raise ConfigError(f"{source}: '{key}' needs a field, e.g. {head}.{next(iter(STAGES[head].model_fields))}")
        check_keys({rest: None}, STAGES[head], source, prefix=f"{head}.")
        return
    nested: Any = None
    for part in reversed(key.split(".")):
        nested = {part: nested}
    check_keys(nested, RunConfig, source)


def load_sweep_spec(path: str | Path) -> SweepSpec:
    """Read and validate a sweep YAML (a path, or the name of a packaged spec: ``posthoc-vq presets`` lists them).

    Raises ConfigError naming the key for: an unknown key, an empty axis, a reference arm
    that is not among the axis values, a compared or pairing axis that is not an axis, and
    any grid point whose config is invalid.
    """
    p = Path(path)
    if not p.is_file():
        p = configs_root() / "ablations" / f"{path}.yaml"
    if not p.is_file():
        known = known_ablations()
        raise ConfigError(f"sweep spec not found: {path} (also looked for {p}); give a YAML file or the name of a packaged spec: "
                          f"{', '.join(known) or '(none)'} (`posthoc-vq presets` lists them)")
    spec = validate(read_yaml(p), SweepSpec, source=str(p))
    check_spec(spec, str(p))
    expand(spec, str(p))  # validates every grid point's configs
    return spec


def check_spec(spec: SweepSpec, source: str) -> None:
    if not spec.axes:
        raise ConfigError(f"{source}: 'axes' is empty; give at least one axis, e.g. seed: [0, 1, 2]")
    for key in spec.set:
        _check_key(key, f"{source} (set)")
    for axis, by_value in spec.per.items():
        _check_per(axis, by_value, spec, f"{source}: per.{axis}", f"{source} (per.{axis}")
    tags = {t for arm in spec.arms.values() for t in arm.per}
    for name, arm in spec.arms.items():
        check_name(name, "arm name")
        for key in arm.set:
            _check_key(key, f"{source} (arms.{name}.set)")
        for tag, by_value in arm.per.items():
            _check_per(tag, by_value, spec, f"{source}: arms.{name}.per.{tag}", f"{source} (arms.{name}.per.{tag}")
    if spec.arms and ARM_AXIS not in spec.axes:
        raise ConfigError(f"{source}: 'arms' are defined but there is no '{ARM_AXIS}' axis listing which of them to run ({', '.join(spec.arms)})")
    for key, values in spec.axes.items():
        if key == ARM_AXIS:
            unknown = [v for v in values if v not in spec.arms]
            if unknown:
                raise ConfigError(f"{source}: axis '{ARM_AXIS}' names arms {unknown} that 'arms' does not define (defined: {', '.join(spec.arms) or 'none'})")
        elif key not in tags:  # a tag axis only selects arm settings
            _check_key(key, f"{source} (axes)")
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{source}: axis '{key}' is empty; list at least one value")
        if len({json.dumps(v, sort_keys=True) for v in values}) != len(values):
            raise ConfigError(f"{source}: axis '{key}' repeats a value: {values}")
    c = spec.compare
    if c.axis not in spec.axes:
        raise ConfigError(f"{source}: compare.axis '{c.axis}' is not an axis of the grid (axes: {', '.join(spec.axes)})")
    if c.reference is not None and c.reference not in spec.axes[c.axis]:
        raise ConfigError(f"{source}: compare.reference {c.reference!r} is not in the grid: axis '{c.axis}' has {spec.axes[c.axis]}")
    if c.pair_by is not None and c.pair_by not in spec.axes:
        raise ConfigError(f"{source}: compare.pair_by '{c.pair_by}' is not an axis of the grid (axes: {', '.join(spec.axes)})")
    for m in c.metrics:
        if m not in METRICS:
            raise ConfigError(f"{source}: compare.metrics: unknown metric '{m}'; known: {', '.join(METRICS)}")


def _check_per(axis: str, by_value: dict[str, dict[str, Any]], spec: SweepSpec, where: str, key_source: str) -> None:
    """Settings per value of an axis: the axis and each value must be in the grid, each key settable."""
    if axis not in spec.axes:
        raise ConfigError(f"{where}: '{axis}' is not an axis of the grid (axes: {', '.join(spec.axes)})")
    known = {str(v) for v in spec.axes[axis]}
    for value, settings in by_value.items():
        if value not in known:
            raise ConfigError(f"{where}.{value}: {value!r} is not a value of axis '{axis}' ({sorted(known)})")
        for key in settings:
            _check_key(key, f"{key_source}.{value})")


def _stage_config(kind: str, values: dict[str, Any], source: str) -> Any:
    return validate(values, STAGES[kind], source=source)


def _tag_axes(spec: SweepSpec) -> set[str]:
    return {t for arm in spec.arms.values() for t in arm.per}


def expand(spec: SweepSpec, source: str = "sweep") -> list[Cell]:
    """Every grid point as a :class:`Cell`, in axis order (last axis fastest)."""
    keys = list(spec.axes)
    cells = []
    for combo in itertools.product(*(spec.axes[k] for k in keys)):
        axes = dict(zip(keys, combo))
        settings = {**spec.set, **{k: v for k, v in axes.items() if k != ARM_AXIS and k not in _tag_axes(spec)}}
        for axis, by_value in spec.per.items():
            settings |= by_value.get(str(axes[axis]), {})
        if ARM_AXIS in axes:
            arm = spec.arms[axes[ARM_AXIS]]
            settings |= arm.set
            for tag, by_value in arm.per.items():
                settings |= by_value.get(str(axes[tag]), {})
        run_over: list[str] = []
        stage: dict[str, dict[str, Any]] = {"quantize": {}, "weights": {}, "finetune": {}}
        seed = None
        for key, value in settings.items():
            head, rest = _split_key(key)
            if head in STAGES:
                stage[head][rest] = value
            elif key == "seed":
                seed = value
            else:
                run_over.append(f"{key}={json.dumps(value)}")
        where = f"{source}, grid point {axes}"
        try:
            run = load_run_config(spec.base, run_over, seed=seed)
        except ConfigError as err:
            raise ConfigError(f"{where}: {err}") from None
        run = run.model_copy(update={"train": run.train.model_copy(update={"threads": spec.threads})})
        method = stage["quantize"].get("method", "none")
        quantize = None if method == "none" else _stage_config("quantize", {**stage["quantize"], "threads": spec.threads}, where)
        weights = _stage_config("weights", {"bits": 32, **stage["weights"]}, where)  # a sweep quantizes weights only when asked
        finetune = _stage_config("finetune", stage["finetune"], where) if stage["finetune"] else None
        if finetune is not None and finetune.epochs == 0:
            finetune = None
        if finetune is not None and quantize is None:
            raise ConfigError(f"{where}: finetune.* is set but quantize.method is none; fine-tuning trains the decoder on a codebook's latents")
        cells.append(Cell(axes, run, quantize, weights, finetune))
    _check_distinct(cells, source)
    return cells


def _check_distinct(cells: list[Cell], source: str) -> None:
    """Two grid points that resolve to the same config would be one cell in the database, and one of them would never
    be done: refused before any work, naming them (two arms with the same settings, a tag whose ``per:`` changes
    nothing, a quantize axis under ``quantize.method: none``...)."""
    seen: dict[str, dict[str, Any]] = {}
    same: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for cell in cells:
        first = seen.setdefault(cell.cell_id, cell.axes)
        if first is not cell.axes:
            same.append((first, cell.axes))
    if same:
        a, b = same[0]
        more = f" (and {len(same) - 1} more pairs)" if len(same) > 1 else ""
        raise ConfigError(f"{source}: grid points {a} and {b} resolve to the same configuration{more}, so they would be one cell; "
                          "make the arms or axis values differ in a setting, or drop one of them")
