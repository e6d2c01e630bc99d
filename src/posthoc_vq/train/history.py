"""Per-epoch training curves, saved as JSON and CSV beside the run."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from posthoc_vq.io import atomic_write, write_json

COLUMNS = ("epoch", "lr", "train_loss", "train_recon", "train_kl", "val_loss", "val_recon", "val_kl", "improved", "seconds")


def write_history(run_dir: Path, history: list[dict[str, Any]]) -> None:
    """Write ``history.json`` and ``history.csv`` (one row per completed epoch)."""
    write_json(run_dir / "history.json", history)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(history)
    with atomic_write(run_dir / "history.csv") as tmp:
        tmp.write_text(buf.getvalue())
