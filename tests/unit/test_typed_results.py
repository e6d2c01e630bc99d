"""Results are typed where they cross modules: the evaluations return posthoc_vq.results models, and no function of the
evaluation, the audit, the report, the sweep jobs or the API takes or returns an evaluation as a bare dict."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import typing

import pytest

from posthoc_vq.results import Comparison, CompressionRow, Evaluation, ImageQuality

PACKAGES = ("posthoc_vq.evaluation", "posthoc_vq.report")
MODULES = ("posthoc_vq.audit", "posthoc_vq.experiments.job", "posthoc_vq.api", "posthoc_vq.cli", "posthoc_vq.pipeline")
#: parameter names that carry an evaluation result (or a list of them) wherever they appear
RESULT_NAMES = {"result", "results", "cont", "books", "evaluation", "codebook_evals", "weight_evals", "continuous", "block", "inner"}
#: still dicts, and said so: the perceptual evaluation (FD/KID sets), the latent-geometry and amenability analyses, and the
#: sweep figure's rows of stored cell metrics (a database's rows, not an evaluation)
NOT_YET_TYPED = {
    "posthoc_vq.report.result_rows.perceptual_rows", "posthoc_vq.report.result_rows.evaluation_rows", "posthoc_vq.pipeline.track_evaluation",
    "posthoc_vq.report.result_rows.geometry_rows", "posthoc_vq.report.geometry_figure.draw_geometry",
    "posthoc_vq.report.result_rows.amenability_rows", "posthoc_vq.report.amenability_figure.draw_amenability",
    "posthoc_vq.report.figures.sweep_panel_series",
}


def modules():
    names = list(MODULES)
    for package in PACKAGES:
        pkg = importlib.import_module(package)
        names += [f"{package}.{m.name}" for m in pkgutil.iter_modules(pkg.__path__)]
    return [importlib.import_module(n) for n in names]


def functions():
    for module in modules():
        for name, fn in vars(module).items():
            if inspect.isfunction(fn) and fn.__module__ == module.__name__:
                yield module, name, fn


def is_bare_dict(annotation) -> bool:
    """``dict[str, Any]`` (or a list / optional of it), the shape an untyped result had."""
    if annotation is dict:
        return True
    origin = typing.get_origin(annotation)
    if origin is dict:
        return True
    return any(is_bare_dict(a) for a in typing.get_args(annotation)) if origin in (list, typing.Union, __import__("types").UnionType) else False


def test_no_evaluation_crosses_a_module_as_a_dict():
    offenders = []
    for module, name, fn in functions():
        hints = typing.get_type_hints(fn)
        for param in inspect.signature(fn).parameters:
            if param in RESULT_NAMES and param in hints and is_bare_dict(hints[param]) and f"{module.__name__}.{name}" not in NOT_YET_TYPED:
                offenders.append(f"{module.__name__}.{name}({param}: {hints[param]})")
    assert offenders == []


@pytest.mark.parametrize("path,returns", [
    ("posthoc_vq.evaluation.reconstruction.evaluate_continuous", Evaluation),
    ("posthoc_vq.evaluation.codebook.evaluate_codebook", Evaluation),
    ("posthoc_vq.evaluation.weights.evaluate_weights", Evaluation),
    ("posthoc_vq.evaluation.reconstruction.finish", Evaluation),
    ("posthoc_vq.evaluation.reconstruction.image_quality", ImageQuality),
    ("posthoc_vq.evaluation.reconstruction.compare_outputs", Comparison),
    ("posthoc_vq.evaluation.compression.compression_rows", list[CompressionRow]),
    ("posthoc_vq.api.evaluate", Evaluation),
    ("posthoc_vq.api.evaluate_weights", Evaluation),
    ("posthoc_vq.report.codebook_table.load_results", tuple[Evaluation, list[Evaluation]]),
    ("posthoc_vq.report.compression_table.rows_from_evaluations", list[CompressionRow]),
])
def test_evaluations_return_typed_results(path, returns):
    module, _, name = path.rpartition(".")
    fn = getattr(importlib.import_module(module), name)
    assert typing.get_type_hints(fn)["return"] == returns


def test_the_audit_reads_typed_results():
    from posthoc_vq.audit import audit

    hints = typing.get_type_hints(audit)
    assert not is_bare_dict(hints["result"]) and Evaluation in typing.get_args(hints["result"])
