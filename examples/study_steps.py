"""The timed steps of the example studies: each CLI step (or library call) run in order, its wall time kept by stage."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from posthoc_vq.cli import main as cli
from posthoc_vq.io import write_json
from posthoc_vq.provenance import provenance


class Steps:
    """Runs CLI steps and keeps how long each took, by stage."""

    def __init__(self) -> None:
        self.rows: list[dict] = []
        self.start = time.perf_counter()

    def run(self, stage: str, argv: list[str]) -> None:
        print("$ posthoc-vq " + " ".join(argv), flush=True)
        tic = time.perf_counter()
        if cli(argv) != 0:
            sys.exit(f"step failed: posthoc-vq {' '.join(argv)}")
        self.rows.append({"stage": stage, "command": "posthoc-vq " + " ".join(argv), "seconds": time.perf_counter() - tic})

    def skip(self, stage: str, why: str) -> None:
        self.rows.append({"stage": stage, "command": None, "seconds": 0.0, "reused": why})

    def timed(self, stage: str, fn):
        """Run ``fn()`` (a library call, not a CLI step) as a timed stage; returns its result."""
        tic = time.perf_counter()
        out = fn()
        self.rows.append({"stage": stage, "command": None, "seconds": time.perf_counter() - tic})
        return out

    def report(self, path: Path) -> dict:
        total = time.perf_counter() - self.start
        by_kind: dict[str, float] = {}
        for row in self.rows:
            kind = row["stage"].split(" ", 1)[0]  # train, evaluate, quantize, table
            by_kind[kind] = by_kind.get(kind, 0.0) + row["seconds"]
        print(f"\n{'stage':<48} {'seconds':>9}")
        for row in self.rows:
            print(f"{row['stage']:<48} {row['seconds']:9.1f}" + ("  (reused: " + row["reused"] + ")" if "reused" in row else ""))
        print(f"{'total (wall clock, end to end)':<48} {total:9.1f}  = {total / 60:.1f} min")
        print("by kind: " + ", ".join(f"{k} {v:.0f} s" for k, v in by_kind.items()))
        result = {"total_seconds": total, "by_kind_seconds": by_kind, "steps": self.rows,
                  "complete": not any("reused" in r for r in self.rows), "provenance": provenance()}
        write_json(path, result)
        print(f"wrote {path}")
        return result
