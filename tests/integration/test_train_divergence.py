"""A diverged run is recoverable: resume with a lower train.lr / train.grad_clip, or start over when no checkpoint exists.

The divergence is real (a too-large learning rate), deterministic on CPU with a fixed seed:
train.lr=10 turns the loss into NaN at step 2 of the first epoch it is used in.
"""

import json
import re
import shlex
import shutil
from pathlib import Path

import pytest
import torch

from posthoc_vq.cli import main
from posthoc_vq.config import load_run_config
from posthoc_vq.errors import ConfigError, TrainingError
from posthoc_vq.train import train
from posthoc_vq.train.checkpoint import latest_checkpoint

SMALL = ["model.latent_dim=8", "model.channels=[8,16]", "train.batch_size=64", "train.threads=1", "train.early_stopping=false"]


def config(*extra):
    return load_run_config("digits", SMALL + list(extra))


def cli_args(*overrides):
    return [x for s in SMALL + list(overrides) for x in ("--set", s)]


def suggested_command(message: str) -> list[str]:
    """The arguments after `posthoc-vq train` in the first command the error message tells the user to run."""
    m = re.search(r"posthoc-vq train (--out \S+ --resume(?: --set \S+)+)", message)
    assert m, message
    return ["train", *shlex.split(m.group(1)), "--no-progress"]


@pytest.fixture
def spy(monkeypatch):
    """Record the lr of every optimizer step and the max_norm of every gradient clipping."""
    seen = {"lr": [], "clip": []}
    step, clip = torch.optim.Adam.step, torch.nn.utils.clip_grad_norm_

    def adam_step(self, *args, **kwargs):
        seen["lr"].append(self.param_groups[0]["lr"])
        return step(self, *args, **kwargs)

    def clip_grad(params, max_norm, *args, **kwargs):
        seen["clip"].append(max_norm)
        return clip(params, max_norm, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", adam_step)
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip_grad)
    return seen


def test_nan_after_a_checkpoint_resumes_with_lower_lr_and_grad_clip_as_the_message_says(tmp_path, capsys, spy):
    run = tmp_path / "r"
    assert main(["train", "--out", str(run), "--no-progress", *cli_args("train.epochs=1")]) == 0
    # push it over the edge: continue with a far too large lr, allowed on resume, and it diverges in epoch 2
    code = main(["train", "--out", str(run), "--resume", "--no-progress", "--set", "train.epochs=4", "--set", "train.lr=10"])
    assert code == 1  # failed work (a TrainingError), not a usage error
    message = capsys.readouterr().err
    assert re.search(r"error: loss became (nan|inf) at epoch 2, step 2 of 21", message), message
    kept = re.search(r"The last good checkpoint is kept in (\S+);", message)
    assert kept and kept.group(1).endswith("epoch-0001") and Path(kept.group(1)).is_dir(), message
    args = suggested_command(message)
    assert args[1:] == ["--out", str(run), "--resume", "--set", "train.lr=1", "--set", "train.grad_clip=1", "--no-progress"]

    spy["lr"].clear()
    assert main(args) == 0  # doing what the message says works
    history = json.loads((run / "history.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2, 3, 4]
    assert all(r["val_loss"] == r["val_loss"] for r in history)  # finite: no NaN
    # the change is recorded at the epoch it takes effect, against what the checkpoint was trained with (the preset's lr,
    # not the failed attempt's 10)
    assert "changes" not in history[0] and "changes" not in history[2]
    assert history[1]["changes"] == {
        "train.epochs": {"from": 1, "to": 4},
        "train.grad_clip": {"from": None, "to": 1.0},
        "train.lr": {"from": 0.002, "to": 1.0},
    }
    assert [r["lr"] for r in history] == [0.002, 1.0, 1.0, 1.0]
    csv = (run / "history.csv").read_text().splitlines()
    assert csv[0].endswith(",changes") and "train.lr: 0.002 -> 1.0" in csv[2] and csv[3].endswith(",")
    # the optimizer restored from the checkpoint really steps with the new lr, and gradients are clipped
    assert len(spy["lr"]) == 3 * 21 and set(spy["lr"]) == {1.0}
    assert len(spy["clip"]) == 3 * 21 and set(spy["clip"]) == {1.0}
    newest = latest_checkpoint(run)
    assert newest.name == "epoch-0004"
    state = json.loads((newest / "state.json").read_text())
    assert state["optimizer"]["param_groups"][0]["lr"] == 1.0
    # config.json is the config now in force; the original and every change are kept beside it
    saved = json.loads((run / "config.json").read_text())
    assert (saved["train"]["lr"], saved["train"]["grad_clip"], saved["train"]["epochs"]) == (1.0, 1.0, 4)
    record = json.loads((run / "config_changes.json").read_text())
    assert (record["original"]["train"]["lr"], record["original"]["train"]["grad_clip"]) == (0.002, None)
    assert [(c["epoch"], c["resumed_after_epoch"], c["changes"]["train.lr"]["to"]) for c in record["changes"]] == [(2, 1, 10.0), (2, 1, 1.0)]
    assert json.loads((run / "train_summary.json").read_text())["epochs"] == 4


def test_nan_in_the_first_epoch_says_to_start_over_and_that_works(tmp_path):
    run = tmp_path / "r"
    with pytest.raises(TrainingError) as err:
        train(config("train.epochs=2", "train.lr=10"), run, progress=False)
    message = str(err.value)
    assert re.search(r"loss became (nan|inf) at epoch 1, step 2 of 21", message), message
    # no checkpoint exists, and the message names none: it says to start over
    assert latest_checkpoint(run) is None and "kept in" not in message and "checkpoints" not in message
    assert "No checkpoint was saved yet" in message and "train again from scratch" in message
    assert f"after removing {run} or with another --out" in message and "--set train.lr=1 --set train.grad_clip=1" in message

    # 1. another --out with the suggested settings
    other = tmp_path / "other"
    assert main(["train", "--out", str(other), "--no-progress", *cli_args("train.epochs=2", "train.lr=1", "train.grad_clip=1")]) == 0
    # 2. removing the run directory, then the same command with the suggested settings
    shutil.rmtree(run)
    assert main(["train", "--out", str(run), "--no-progress", *cli_args("train.epochs=2", "train.lr=1", "train.grad_clip=1")]) == 0
    assert [r["epoch"] for r in json.loads((run / "history.json").read_text())] == [1, 2]


def test_nan_in_the_first_epoch_then_resume_with_the_suggested_settings_starts_over(tmp_path, spy):
    run = tmp_path / "r"
    with pytest.raises(TrainingError) as err:
        train(config("train.epochs=2", "train.lr=10"), run, progress=False)
    args = suggested_command(str(err.value))
    assert args[1:] == ["--out", str(run), "--resume", "--set", "train.lr=1", "--set", "train.grad_clip=1", "--no-progress"]
    spy["lr"].clear()
    assert main(args) == 0
    history = json.loads((run / "history.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2] and [r["lr"] for r in history] == [1.0, 1.0]
    assert set(spy["lr"]) == {1.0} and set(spy["clip"]) == {1.0}
    assert json.loads((run / "config.json").read_text())["train"]["lr"] == 1.0
    assert not (run / "config_changes.json").exists()  # nothing was trained before: a fresh start, not a change
    fresh = tmp_path / "fresh"
    train(config("train.epochs=2", "train.lr=1", "train.grad_clip=1"), fresh, progress=False)
    assert [r["val_loss"] for r in history] == [r["val_loss"] for r in json.loads((fresh / "history.json").read_text())]


def test_other_config_changes_on_resume_are_still_refused(tmp_path):
    run = tmp_path / "r"
    train(config("train.epochs=1"), run, progress=False)
    before = (run / "config.json").read_text()
    for change in ("model.latent_dim=4", "train.batch_size=32", "train.weight_decay=0.1", "seed=3"):
        key = change.split("=")[0]
        with pytest.raises(ConfigError, match=rf"different config \({re.escape(key)}\); only train.epochs, train.grad_clip, train.lr, train.min_epochs, train.patience may change.*another --out"):
            train(config("train.epochs=2", change), run, resume=True, progress=False)
    assert (run / "config.json").read_text() == before and not (run / "config_changes.json").exists()


def test_lr_change_on_resume_rescales_a_schedule(tmp_path, spy):
    run = tmp_path / "r"
    train(config("train.epochs=2", "train.lr_schedule=step", "train.lr_step_size=1", "train.lr_gamma=0.5", "train.lr=0.004"), run, progress=False)
    spy["lr"].clear()
    train(config("train.epochs=4", "train.lr_schedule=step", "train.lr_step_size=1", "train.lr_gamma=0.5", "train.lr=0.002"), run, resume=True, progress=False)
    history = json.loads((run / "history.json").read_text())
    # the step schedule keeps its position (2 decays) and is rescaled to the new base lr
    assert [r["lr"] for r in history] == pytest.approx([0.004, 0.002, 0.0005, 0.00025])
    assert sorted(set(spy["lr"]), reverse=True) == pytest.approx([0.0005, 0.00025])
