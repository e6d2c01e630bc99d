"""Nothing stale is shown as current (issue 26, item 1): after the model changes, every artifact derived from the
earlier model is refused by name, with the command that makes it again, or left out of a table with a note."""

import json
import warnings

import pytest

from posthoc_vq.cli import main
from posthoc_vq.derivation import ProvenanceUnknownWarning, ReplacedArtifactWarning
from posthoc_vq.quantize.codebooks import open_codebook
from posthoc_vq.report.codebook_table import StaleResultWarning, load_results

SMALL = ["--preset", "digits", "--set", "model.channels=[8,16]", "--set", "model.latent_dim=4", "--set", "train.early_stopping=false"]


def _cli(*argv, code=0):
    assert main([*argv, "--no-progress"] if argv[0] in ("train", "report", "finetune") else list(argv)) == code, argv


def _error(capsys) -> str:
    return " ".join(capsys.readouterr().err.split())


def test_the_staleness_sequence_ends_in_a_clear_error_or_a_left_out_row_at_every_step(tmp_path, capsys):
    run = str(tmp_path / "r")
    _cli("train", *SMALL, "--set", "train.epochs=3", "--out", run)
    _cli("quantize", run, "--method", "kmeans", "--K", "8", "--name", "cb")
    _cli("compress-weights", run, "--bits", "4", "--name", "w4")
    _cli("evaluate", run)
    _cli("evaluate", run, "--codebook", "cb")
    _cli("table", run)
    capsys.readouterr()
    _cli("train", *SMALL, "--set", "train.epochs=6", "--out", run, "--resume")  # the model changes
    capsys.readouterr()

    _cli("evaluate", run, "--weights", "w4", code=1)
    assert f"packed weights 'w4' ({run}/weights/w4/weights.json) was made from another version of the run's model" in _error(capsys)
    for argv in (("evaluate", run, "--codebook", "cb"), ("compress-weights", run, "--bits", "8", "--codebook", "cb"),
                 ("finetune", run, "--codebook", "cb", "--out", str(tmp_path / "ft"), "--epochs", "1")):
        _cli(*argv, code=1)
        err = _error(capsys)
        assert f"codebook 'cb' ({run}/codebooks/cb/codebook.json) was made from another version" in err, argv
        assert f"posthoc-vq quantize {run} --method kmeans --K 8" in err
    _cli("table", run, code=1)  # the continuous evaluation measured the old model
    err = _error(capsys)
    assert f"the continuous evaluation ({run}/eval/continuous-test.json) was made from another version" in err and f"posthoc-vq evaluate {run} --split test" in err

    _cli("evaluate", run)  # evaluated again: the table shows the current model and leaves the stale codebook row out
    with pytest.warns(StaleResultWarning, match=r"is stale \(it measured another version of the run's model\) and is left out"):
        cont, books = load_results(run)
    assert books == [] and cont.model.sha256 == json.loads((tmp_path / "r" / "model.json").read_text())["sha256"]

    _cli("quantize", run, "--method", "kmeans", "--K", "8", "--name", "cb")  # fitted again on the current model
    _cli("evaluate", run, "--codebook", "cb")
    with pytest.warns(ReplacedArtifactWarning, match=f"codebook 'cb' of {run} replaced the one of that name .* with other contents"):
        _cli("quantize", run, "--method", "kmeans", "--K", "16", "--name", "cb")  # the same name over an evaluated codebook
    with pytest.warns(StaleResultWarning, match="was fitted again since"):
        assert load_results(run)[1] == []  # its K=8 evaluation is not shown as the K=16 codebook's


def test_a_codebook_from_before_the_checksums_is_read_with_a_warning(tmp_path):
    run = tmp_path / "r"
    _cli("train", *SMALL, "--set", "train.epochs=1", "--out", str(run))
    _cli("quantize", str(run), "--method", "kmeans", "--K", "8", "--name", "old")
    record = run / "codebooks" / "old" / "codebook.json"
    data = json.loads(record.read_text())
    del data["model_sha256"]
    record.write_text(json.dumps(data))
    with pytest.warns(ProvenanceUnknownWarning, match="records no checksum of the run's model .* provenance unknown"):
        open_codebook(run, "old")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a current codebook opens without a word
        _cli("quantize", str(run), "--method", "kmeans", "--K", "8", "--name", "new")
        open_codebook(run, "new")


def test_an_edited_config_json_is_refused_not_ignored(tmp_path, capsys):
    run = tmp_path / "r"
    _cli("train", *SMALL, "--set", "train.epochs=1", "--out", str(run))
    config = json.loads((run / "config.json").read_text())
    config["model"]["latent_dim"] = 8
    (run / "config.json").write_text(json.dumps(config))
    for argv in (("evaluate", str(run)), ("compress-weights", str(run), "--bits", "8"), ("quantize", str(run), "--method", "kmeans", "--K", "8")):
        _cli(*argv, code=1)
        assert f"{run}/config.json was edited after training: its model settings differ from the trained model's (latent_dim: 8 there, 4 in the model" in _error(capsys)
    config["model"]["latent_dim"] = 4
    config["data"]["name"] = "mnist"  # evaluating on another dataset than the one it learned: refused, not used
    (run / "config.json").write_text(json.dumps(config))
    _cli("evaluate", str(run), code=1)
    assert "its data settings differ from those the model was trained with (data.name: 'mnist' there, 'digits' in training" in _error(capsys)


def test_a_codebook_holding_nan_is_named_as_broken_not_blamed_on_the_decoder(tmp_path, capsys):
    from posthoc_vq.io import load_tensors, save_tensors

    run = tmp_path / "r"
    _cli("train", *SMALL, "--set", "train.epochs=1", "--out", str(run))
    _cli("quantize", str(run), "--method", "kmeans", "--K", "8", "--name", "cb")
    tensors, record = run / "codebooks" / "cb" / "codebook.safetensors", run / "codebooks" / "cb" / "codebook.json"
    state = load_tensors(tensors)
    key = next(k for k, v in state.items() if v.is_floating_point())
    state[key][0, 0] = float("nan")
    meta = json.loads(record.read_text())
    meta["sha256"] = save_tensors(tensors, state)  # a consistent pair, as a diverged fine-tune would have written
    record.write_text(json.dumps(meta))
    capsys.readouterr()
    _cli("evaluate", str(run), "--codebook", "cb", code=1)
    assert f"{tensors} holds non-finite values (NaN or inf) in {key}: the codebook is broken" in _error(capsys)


def test_equal_contents_give_equal_files_so_a_repack_keeps_its_evaluations(tmp_path):
    import torch

    from posthoc_vq.io import save_tensors

    tensors = {f"t{i}": torch.arange(i + 1.0) for i in range(12)}
    metadata = {f"k{i}": str(i) for i in range(12)}
    assert len({save_tensors(tmp_path / f"{i}.safetensors", tensors, metadata) for i in range(4)}) == 1  # safetensors' header order varies
    run = tmp_path / "r"
    _cli("train", *SMALL, "--set", "train.epochs=1", "--out", str(run))
    _cli("compress-weights", str(run), "--bits", "8", "--name", "w8")
    _cli("evaluate", str(run), "--weights", "w8")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same model packed again: the same file, nothing to say, its evaluation still current
        _cli("compress-weights", str(run), "--bits", "8", "--name", "w8")
        _cli("evaluate", str(run), "--weights", "w8")
