"""Experiment trackers: where a command reports its config, curves, results and files besides the run directory.

The library knows only the :class:`Tracker` protocol (``log_params``, ``log_metrics(step=)``,
``log_artifact``, ``set_tags``, ``end``) and calls whatever tracker it is given; the default,
:class:`NullTracker`, does nothing. ``--track mlflow`` on the CLI makes an :class:`MlflowTracker`
(the ``[tracking]`` extra) wrapped in :class:`SafeTracker`, so tracking never breaks the work: a
tracker that fails prints one warning on stderr and goes quiet, and the command still succeeds.

MLflow: the tracking URI is ``MLFLOW_TRACKING_URI``, else a local file store ``./mlruns`` (MLflow 3
keeps that store in "maintenance mode" and refuses it unless ``MLFLOW_ALLOW_FILE_STORE=true``, which is
set for a file store unless you set it yourself; a ``sqlite:///`` store needs the full ``mlflow``); the
experiment is ``MLFLOW_EXPERIMENT_NAME``, else the one the command names (the preset or dataset
for ``train``, the sweep's name for ``ablate``). Runs are made with MLflow's client, not its fluent
API, so nothing global (an "active run") is left behind in a process that uses MLflow itself.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlparse

from posthoc_vq.extras import require

TRACKERS = ("mlflow",)
MAX_PARAM_CHARS = 6000  # MLflow's limit on one param value (500 in old versions; longer values are cut with a marker)


@runtime_checkable
class Tracker(Protocol):
    """What the library calls to report a run; every method may be a no-op."""

    def log_params(self, params: Mapping[str, Any]) -> None: ...

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None: ...

    def log_artifact(self, path: str | Path) -> None: ...

    def set_tags(self, tags: Mapping[str, Any]) -> None: ...

    def end(self, status: str = "FINISHED") -> None: ...


class NullTracker:
    """The default tracker: reports nothing."""

    def log_params(self, params: Mapping[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        pass

    def log_artifact(self, path: str | Path) -> None:
        pass

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        pass

    def end(self, status: str = "FINISHED") -> None:
        pass


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts as dotted keys: ``{"model": {"latent_dim": 8}}`` -> ``{"model.latent_dim": 8}``."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out |= flatten(value, f"{name}.")
        else:
            out[name] = value
    return out


def numeric(data: Mapping[str, Any]) -> dict[str, float]:
    """The finite numbers (and booleans, as 0/1) among ``data``'s flattened values, as floats: what a tracker can plot."""
    out = {}
    for key, value in flatten(data).items():
        if isinstance(value, bool):
            out[key] = float(value)
        elif isinstance(value, (int, float)) and math.isfinite(value):
            out[key] = float(value)
    return out


def _warn_stderr(message: str) -> None:
    print(f"warning (tracking): {message}", file=sys.stderr)


class SafeTracker:
    """Wraps a tracker so that it never raises: the first failure prints one warning and turns it off."""

    def __init__(self, inner: Tracker, warn: Callable[[str], None] = _warn_stderr, name: str = "tracker"):
        self.inner, self.warn, self.name, self.failed = inner, warn, name, False

    def _call(self, method: str, *args: Any, **kwargs: Any) -> None:
        if self.failed:
            return
        try:
            getattr(self.inner, method)(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - tracking must never break the work
            self.failed = True
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            self.warn(f"{self.name} {method} failed, tracking is off for the rest of this command: {type(err).__name__}: {first}")

    def log_params(self, params: Mapping[str, Any]) -> None:
        self._call("log_params", params)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self._call("log_metrics", metrics, step=step)

    def log_artifact(self, path: str | Path) -> None:
        if Path(path).is_file():
            self._call("log_artifact", path)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self._call("set_tags", tags)

    def end(self, status: str = "FINISHED") -> None:
        self._call("end", status)

    @property
    def run_id(self) -> str | None:
        return getattr(self.inner, "run_id", None)


def mlflow_tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI``, else the file store ``./mlruns`` as a ``file://`` URI."""
    return os.environ.get("MLFLOW_TRACKING_URI") or (Path.cwd() / "mlruns").as_uri()


class MlflowTracker:
    """One MLflow run, made with :class:`mlflow.tracking.MlflowClient` (``parent_run_id``: a child run of that one)."""

    def __init__(self, experiment: str, run_name: str, *, parent_run_id: str | None = None, tags: Mapping[str, Any] | None = None):
        require("mlflow", "tracking", "Experiment tracking (--track mlflow)")
        from mlflow.tracking import MlflowClient

        uri = mlflow_tracking_uri()
        if urlparse(uri).scheme in ("", "file"):  # MLflow 3 keeps its file store only on request ("maintenance mode"); ./mlruns is ours
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = MlflowClient(tracking_uri=uri)
        experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME") or experiment
        found = self.client.get_experiment_by_name(experiment)
        self.experiment_id = found.experiment_id if found is not None else self.client.create_experiment(experiment)
        all_tags = {"posthoc_vq": "1", **{k: str(v) for k, v in (tags or {}).items()}}
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        self.run_id = self.client.create_run(self.experiment_id, run_name=run_name, tags=all_tags).info.run_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, _param_value(v)) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow's batch limit on params
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step or 0) for k, v in metrics.items()]
        for i in range(0, len(items), 1000):
            self.client.log_batch(self.run_id, metrics=items[i : i + 1000])

    def log_artifact(self, path: str | Path) -> None:
        self.client.log_artifact(self.run_id, str(path))

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, str(value))

    def end(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=status)


def _param_value(value: Any) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= MAX_PARAM_CHARS else text[: MAX_PARAM_CHARS - 3] + "..."


def check_tracker(kind: str | None) -> None:
    """Fail at once (before any work) when the tracker asked for cannot be used: an unknown name, or its extra missing."""
    if kind is None:
        return
    if kind not in TRACKERS:
        raise ValueError(f"unknown tracker '{kind}'; known: {', '.join(TRACKERS)}")
    require("mlflow", "tracking", "Experiment tracking (--track mlflow)")


def open_tracker(kind: str | None, experiment: str, run_name: str, *, parent_run_id: str | None = None,
                 tags: Mapping[str, Any] | None = None, warn: Callable[[str], None] = _warn_stderr) -> Tracker:
    """A :class:`SafeTracker` around the tracker ``kind`` names, or a :class:`NullTracker` for None or when
    the tracker cannot be reached (then with a warning). A missing extra raises (see :func:`check_tracker`)."""
    if kind is None:
        return NullTracker()
    check_tracker(kind)
    try:
        inner = MlflowTracker(experiment, run_name, parent_run_id=parent_run_id, tags=tags)
    except Exception as err:  # noqa: BLE001 - an unreachable tracking server must not stop the work
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        warn(f"could not start an MLflow run at {mlflow_tracking_uri()} ({type(err).__name__}: {first}); continuing without tracking")
        return NullTracker()
    return SafeTracker(inner, warn, name="MLflow")
