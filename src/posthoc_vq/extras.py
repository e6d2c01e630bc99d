"""Optional dependencies: import one where it is needed, or fail naming the extra that installs it.

The core install (``pip install posthoc-vq``) trains, quantizes and evaluates. Everything else is
an *extra* (``pyproject.toml``) whose packages are imported only inside the functions that use them,
always through :func:`require`, so a missing one fails with one line that says what to install::

    >>> ort = require("onnxruntime", "export", "ONNX export")  # doctest: +SKIP
    MissingExtraError: ONNX export needs the 'export' extra: pip install 'posthoc-vq[export]' (onnxruntime is not installed)
"""

from __future__ import annotations

import importlib
from types import ModuleType

from posthoc_vq.errors import MissingExtraError

#: extra -> the importable modules it installs (``pyproject.toml``'s optional-dependencies; ``all`` is every one of them)
EXTRAS: dict[str, tuple[str, ...]] = {
    "sweeps": ("ray",),
    "export": ("onnx", "onnxruntime", "onnxscript"),
    "report": ("jinja2",),
    "metrics": ("torchmetrics",),
    "adapters": ("pythae", "diffusers"),
    "tracking": ("mlflow",),
    "codecs": ("imagecodecs",),
}


def install_command(extra: str) -> str:
    """``pip install 'posthoc-vq[EXTRA]'``."""
    return f"pip install 'posthoc-vq[{extra}]'"


def _is_missing(err: ImportError, module: str) -> bool:
    """Whether ``err`` says ``module`` itself (or a package above it) is absent, not that something inside it failed."""
    name = getattr(err, "name", None)
    return bool(name) and (module == name or module.startswith(name + "."))


def require(module: str, extra: str, what: str) -> ModuleType:
    """Import ``module`` (an optional dependency of ``extra``) and return it.

    Parameters
    ----------
    module : dotted module name, e.g. ``"onnxruntime"`` or ``"torchmetrics.image.fid"``.
    extra : the extra of ``pyproject.toml`` that installs it (a key of :data:`EXTRAS`).
    what : what needs it, the start of the message (``"ONNX export"``).

    Raises
    ------
    MissingExtraError
        ``"<what> needs the '<extra>' extra: pip install 'posthoc-vq[<extra>]' (<module> is not installed)"``;
        when the package is installed but fails to import, the reason replaces "is not installed".
    """
    if extra not in EXTRAS:
        raise ValueError(f"unknown extra '{extra}'; known: {', '.join(EXTRAS)}")
    try:
        return importlib.import_module(module)
    except ImportError as err:
        if _is_missing(err, module):
            reason = f"{err.name} is not installed"
        else:
            reason = f"{module} is installed but does not import: {str(err).splitlines()[0] if str(err) else type(err).__name__}"
        raise MissingExtraError(f"{what} needs the '{extra}' extra: {install_command(extra)} ({reason})") from None
