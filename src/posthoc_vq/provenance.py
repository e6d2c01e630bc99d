"""What produced a result: versions, git commit, machine, command line, time."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from posthoc_vq.waitpolicy import wait_policy_record

PACKAGES = ("posthoc-vq", "torch", "numpy", "scipy", "scikit-learn", "faiss-cpu", "safetensors", "pydantic")


def git_commit(path: str | Path | None = None) -> str | None:
    """Commit of the source tree (with '-dirty' when it has uncommitted changes), or None outside git."""
    cwd = Path(path) if path else Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd, capture_output=True, text=True, timeout=10)
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def provenance(seed: int | None = None, **extra: Any) -> dict[str, Any]:
    """Record of the code, environment and command behind a result."""
    return {
        "seed": seed,
        "git_commit": git_commit(),
        "versions": package_versions(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch_threads": torch.get_num_threads(),
        "wait_policy": wait_policy_record(),
        "command": sys.argv,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        **extra,
    }
