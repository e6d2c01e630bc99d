"""Sweep specification: a base preset, fixed settings, a grid of axes, and what to compare.

Example (``configs/ablations/latent-dim.yaml``)::

    name: latent-dim
    base: fashion-mnist
    set: {model.family: tiny, quantize.K: 256}
    axes:
      model.latent_dim: [64, 32, 16, 8, 4]
      seed: [0, 1, 2, 3, 4]
      weights.bits: [32, 8, 4]
      quantize.method: [none, kmeans]
    compare: {axis: model.latent_dim, reference: 64, metrics: [psnr_db, ssim], pair_by: seed}

Keys are dotted paths into the run config (``seed``, ``data.*``, ``model.*``, ``train.*``),
the latent codebook (``quantize.*``; ``quantize.method: none`` means no codebook) or the
weight quantization (``weights.*``; ``weights.bits: 32`` means fp32). Every key, every axis
value and every resulting config is validated before any job starts.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from posthoc_vq.config import (
    QuantizeConfig, RunConfig, WeightsConfig, _Strict, apply_overrides, check_keys, configs_root, load_run_config, read_yaml, validate,
)
from posthoc_vq.errors import ConfigError
from posthoc_vq.names import check_name

METRICS = ("psnr_db", "ssim", "mse", "fd", "kid")  # fd/kid: offline FD/KID of reconstructions (fp32-weight cells)
PERCEPTUAL = ("fd", "kid")
STAGES = {"quantize": QuantizeConfig, "weights": WeightsConfig}


class CompareSpec(_Strict):
    """Which axis is compared, against which arm, on which metrics, with which tests."""

    axis: str
    reference: Any = Field(None, description="reference arm (a value of the axis); empty: every pair of arms")
    metrics: list[str] = Field(default_factory=lambda: ["psnr_db", "ssim"], min_length=1)
    pair_by: str | None = Field("seed", description="axis whose values pair observations across arms (paired t-test)")
    alpha: float = Field(0.05, gt=0.0, lt=1.0)
    correction: Literal["holm", "none"] = "holm"
    min_n: int = Field(3, ge=2, description="fewer observations per arm than this: no significance claim")
    bootstrap: bool = Field(False, description="also report bootstrap CIs of each arm's mean")


class SweepSpec(_Strict):
    """A validated sweep: see the module docstring."""

    name: str
    base: str = "digits"
    set: dict[str, Any] = Field(default_factory=dict)
    axes: dict[str, list[Any]]
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

    @property
    def train_key(self) -> str:
        """Hash of the training config (where the data lives aside): cells with the same key share one trained model."""
        return config_hash(portable(self.run))

    @property
    def cell_id(self) -> str:
        parts = {"run": portable(self.run), "quantize": self.quantize.model_dump(mode="json") if self.quantize else None,
                 "weights": self.weights.model_dump(mode="json")}
        return config_hash(parts)


def portable(run: RunConfig) -> dict[str, Any]:
    """The run config without machine-specific paths."""
    data = run.model_dump(mode="json")
    data["data"].pop("data_dir", None)
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
    """Read and validate a sweep YAML (a path, or a name under ``configs/ablations``).

    Raises ConfigError naming the key for: an unknown key, an empty axis, a reference arm
    that is not among the axis values, a compared or pairing axis that is not an axis, and
    any grid point whose config is invalid.
    """
    p = Path(path)
    if not p.is_file():
        p = configs_root() / "ablations" / f"{path}.yaml"
    if not p.is_file():
        raise ConfigError(f"sweep spec not found: {path} (also looked for {p})")
    spec = validate(read_yaml(p), SweepSpec, source=str(p))
    check_spec(spec, str(p))
    expand(spec, str(p))  # validates every grid point's configs
    return spec


def check_spec(spec: SweepSpec, source: str) -> None:
    if not spec.axes:
        raise ConfigError(f"{source}: 'axes' is empty; give at least one axis, e.g. seed: [0, 1, 2]")
    for key in spec.set:
        _check_key(key, f"{source} (set)")
    for key, values in spec.axes.items():
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


def _stage_config(kind: str, values: dict[str, Any], source: str) -> Any:
    return validate(values, STAGES[kind], source=source)


def expand(spec: SweepSpec, source: str = "sweep") -> list[Cell]:
    """Every grid point as a :class:`Cell`, in axis order (last axis fastest)."""
    keys = list(spec.axes)
    cells = []
    for combo in itertools.product(*(spec.axes[k] for k in keys)):
        axes = dict(zip(keys, combo))
        settings = {**spec.set, **axes}
        run_over: list[str] = []
        stage: dict[str, dict[str, Any]] = {"quantize": {}, "weights": {}}
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
        weights = _stage_config("weights", stage["weights"], where)
        cells.append(Cell(axes, run, quantize, weights))
    return cells
