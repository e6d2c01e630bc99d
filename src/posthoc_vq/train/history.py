"""Per-epoch training curves, saved as JSON and CSV beside the run, and the record of config changes on resume."""

from __future__ import annotations

import csv
import io
from typing import Any

from posthoc_vq.io import atomic_write, read_json, write_json
from posthoc_vq.run import Run

COLUMNS = ("epoch", "lr", "train_loss", "train_recon", "train_kl", "val_loss", "val_recon", "val_kl", "improved", "seconds", "changes")
# a model with a trained quantizer: its commitment loss and the train epoch's code usage (codes used and dead, of M * K,
# perplexity and entropy of the empirical code distribution); written after val_kl when the rows have them
QUANTIZER_COLUMNS = ("train_commitment", "val_commitment", "train_codes_used", "train_codes_dead", "train_perplexity", "train_code_entropy_bits")


def columns(history: list[dict[str, Any]]) -> tuple[str, ...]:
    """The CSV columns of a history: :data:`COLUMNS`, with :data:`QUANTIZER_COLUMNS` after ``val_kl`` when a row has them."""
    if not any("train_codes_used" in row for row in history):
        return COLUMNS
    at = COLUMNS.index("val_kl") + 1
    return COLUMNS[:at] + QUANTIZER_COLUMNS + COLUMNS[at:]


def format_changes(changes: dict[str, dict[str, Any]] | None) -> str:
    """``{'train.lr': {'from': 1.0, 'to': 0.1}}`` as ``train.lr: 1.0 -> 0.1`` (``;``-separated), for the CSV."""
    return "; ".join(f"{key}: {c['from']} -> {c['to']}" for key, c in (changes or {}).items())


def write_history(run: Run, history: list[dict[str, Any]]) -> None:
    """Write ``history.json`` and ``history.csv`` (one row per completed epoch).

    A row may carry ``changes`` (dotted key -> ``{"from", "to"}``): the config values that
    were changed when the run was resumed, first in force in that row's epoch.
    """
    write_json(run.history_json, history)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns(history), extrasaction="ignore")
    writer.writeheader()
    writer.writerows({**row, "changes": format_changes(row.get("changes"))} for row in history)
    with atomic_write(run.history_csv) as tmp:
        tmp.write_text(buf.getvalue())


def record_config_changes(run: Run, original: dict[str, Any], epoch: int, after_epoch: int, changes: dict[str, dict[str, Any]]) -> None:
    """Append one resume's changes to ``config_changes.json``, which keeps the run's original config.

    ``original`` is used only when the file does not exist yet (the first change of the run);
    ``epoch`` is the first epoch trained with the changes, ``after_epoch`` the checkpoint resumed from.
    """
    path = run.config_changes_file
    record = read_json(path, what="record of config changes") if path.exists() else {"original": original, "changes": []}
    record["changes"].append({"epoch": epoch, "resumed_after_epoch": after_epoch, "changes": changes})
    write_json(path, record)
