"""The sweep's results database: SQLite in WAL mode, one row per grid cell.

Only the process driving the sweep writes. A cell becomes ``done`` in one transaction
that also stores its metrics, so a kill at any moment leaves either the finished row or
none: a half-written result never counts as done. A re-run skips ``done`` cells and
retries ``pending``, ``running`` (interrupted) and ``failed`` ones. ``cell_id`` (a hash
of the cell's full config) is the primary key, so a cell can never appear twice.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterable

from posthoc_vq.errors import CheckpointError, ConfigError
from posthoc_vq.records import SweepCellAxes, SweepCellMetrics, check_record
from posthoc_vq.run import Sweep

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    cell_id    TEXT PRIMARY KEY,
    train_key  TEXT NOT NULL,
    axes       TEXT NOT NULL,
    status     TEXT NOT NULL CHECK (status IN ('pending', 'running', 'done', 'failed')),
    attempts   INTEGER NOT NULL DEFAULT 0,
    started    REAL,
    finished   REAL,
    seconds    REAL,
    metrics    TEXT,
    artifacts  TEXT,
    error      TEXT
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status);
"""


class ResultStore:
    """Rows of a sweep's grid cells in ``<sweep>/results.sqlite``."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.executescript(SCHEMA)

    @classmethod
    def open_existing(cls, sweep_dir: str | Path) -> "ResultStore":
        path = Sweep(sweep_dir).db_file
        if not path.exists():
            raise ConfigError(f"no results database at {path}; run `posthoc-vq ablate SPEC --out {sweep_dir}` first")
        return cls(path)

    def close(self) -> None:
        self.conn.close()

    def register(self, cells: Iterable[tuple[str, str, dict[str, Any]]]) -> None:
        """Add ``(cell_id, train_key, axes)`` rows as pending; existing rows are left as they are."""
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.executemany(
                "INSERT OR IGNORE INTO jobs (cell_id, train_key, axes, status) VALUES (?, ?, ?, 'pending')",
                [(cid, key, json.dumps(axes, sort_keys=True)) for cid, key, axes in cells],
            )

    def todo(self) -> set[str]:
        """Cell ids that are not done (pending, interrupted or failed)."""
        return {r[0] for r in self.conn.execute("SELECT cell_id FROM jobs WHERE status != 'done'")}

    def mark_running(self, cell_ids: Iterable[str]) -> None:
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.executemany(
                "UPDATE jobs SET status='running', attempts=attempts+1, started=?, error=NULL WHERE cell_id=? AND status!='done'",
                [(time.time(), cid) for cid in cell_ids],
            )

    def finish(self, cell_id: str, metrics: dict[str, Any], artifacts: dict[str, Any], seconds: float) -> None:
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.execute(
                "UPDATE jobs SET status='done', finished=?, seconds=?, metrics=?, artifacts=?, error=NULL WHERE cell_id=?",
                (time.time(), seconds, json.dumps(metrics), json.dumps(artifacts), cell_id),
            )

    def fail(self, cell_ids: Iterable[str], error: str) -> None:
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.executemany("UPDATE jobs SET status='failed', finished=?, error=? WHERE cell_id=?", [(time.time(), error[-4000:], c) for c in cell_ids])

    def rows(self, status: str | None = None) -> list[dict[str, Any]]:
        """All rows (or those with ``status``) as dicts with ``axes``/``metrics``/``artifacts`` decoded."""
        query = "SELECT cell_id, train_key, axes, status, attempts, started, finished, seconds, metrics, artifacts, error FROM jobs"
        args: tuple = ()
        if status:
            query, args = query + " WHERE status=?", (status,)
        out = []
        for r in self.conn.execute(query + " ORDER BY rowid", args):
            row = dict(zip(("cell_id", "train_key", "axes", "status", "attempts", "started", "finished", "seconds", "metrics", "artifacts", "error"), r))
            for key in ("axes", "metrics", "artifacts"):
                try:
                    row[key] = json.loads(row[key]) if row[key] else None
                except json.JSONDecodeError:
                    raise CheckpointError(f"{self.path}: cell {row['cell_id']} has damaged {key} (not JSON); delete the row or the database to re-run it") from None
            check_record(row["axes"], SweepCellAxes, f"{self.path} (cell {row['cell_id']} axes)", "sweep record")
            if row["status"] == "done":
                check_record(row["metrics"], SweepCellMetrics, f"{self.path} (cell {row['cell_id']} metrics)", "sweep record")
            out.append(row)
        return out


def filter_rows(rows: list[dict[str, Any]], where: list[str]) -> list[dict[str, Any]]:
    """Keep rows whose axes (or status) match every ``key=value`` condition (values read as JSON when they parse)."""
    conditions = []
    for item in where:
        if "=" not in item:
            raise ConfigError(f"--where '{item}' must look like key=value, e.g. model.latent_dim=16 or status=done")
        key, raw = item.split("=", 1)
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        conditions.append((key.strip(), value))
    known = set().union(*(r["axes"].keys() for r in rows)) | {"status"} if rows else {"status"}
    for key, _ in conditions:
        if key not in known:
            raise ConfigError(f"--where: unknown key '{key}'; the sweep's axes are {', '.join(sorted(known))}")
    return [r for r in rows if all((r["status"] if k == "status" else r["axes"].get(k)) == v for k, v in conditions)]
