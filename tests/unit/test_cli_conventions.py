"""CLI conventions without a trained model: --version, exit codes per error class, --quiet, --output,
deprecated aliases, shell completion; the machine formats' writers; the progress callbacks."""

import csv
import io
import json
import sys
import threading
from importlib.metadata import version

import numpy as np
import pytest
from rich.console import Console

from posthoc_vq import progress
from posthoc_vq.autoencoders.base import ModelContractError
from posthoc_vq.cli import build_parser, main
from posthoc_vq.errors import (
    CheckpointError,
    ConfigError,
    DatasetError,
    ExecutorError,
    LockedError,
    MissingExtraError,
    NotFoundError,
    PosthocVQError,
    TrainingError,
    UntrainedRunError,
    exit_code,
)
from posthoc_vq.quantize.latent.base import ClassLabelError
from posthoc_vq.report.formats import csv_cell, to_csv, to_json, to_markdown

# ----------------------------------------------------------------------------- --version


def test_version_is_the_installed_distribution_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"posthoc-vq {version('posthoc-vq')}\n"


# ----------------------------------------------------------------------------- exit codes


@pytest.mark.parametrize("error, code", [
    (ConfigError("bad key"), 2), (DatasetError("no data"), 2), (NotFoundError("no run"), 2), (UntrainedRunError("zero steps"), 2),
    (MissingExtraError("pip install"), 2), (PosthocVQError("input"), 2), (ModelContractError("contract"), 2), (ClassLabelError("labels"), 2),
    (CheckpointError("damaged"), 1), (TrainingError("nan"), 1), (LockedError("pid 1"), 1), (ExecutorError("no ray"), 1),
    (RuntimeError("a bug"), 1),
])
def test_exit_code_of_every_error_class(error, code):
    assert exit_code(error) == code


def test_main_returns_0_on_success_2_on_usage_or_input_errors_and_1_on_failed_work(tmp_path, monkeypatch, capsys):
    assert main(["presets", "--format", "json"]) == 0
    with pytest.raises(SystemExit) as exit_:  # argparse: a missing argument
        main(["quantize"])
    assert exit_.value.code == 2
    capsys.readouterr()
    assert main(["results", str(tmp_path)]) == 2  # a ConfigError: no results database
    assert "no results database" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "none")]) == 2  # a NotFoundError: the run named does not exist
    assert "run directory not found" in capsys.readouterr().err
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "config.json").write_text("{")
    assert main(["evaluate", str(damaged)]) == 1  # a CheckpointError: the run's own file is damaged
    assert "config.json is damaged" in capsys.readouterr().err.replace("\n", " ")

    import posthoc_vq.train

    def diverge(*args, **kwargs):
        raise TrainingError("loss became nan at epoch 1")

    monkeypatch.setattr(posthoc_vq.train, "train", diverge)
    assert main(["train", "--out", str(tmp_path / "r"), "--no-progress"]) == 1  # a TrainingError: failed work
    assert "error: loss became nan at epoch 1" in capsys.readouterr().err


# ----------------------------------------------------------------------------- --quiet, --output


def test_quiet_prints_nothing_on_success_before_or_after_the_command(capfd):
    assert main(["presets"]) == 0
    assert "preset   digits" in capfd.readouterr().out  # the same command without --quiet does print
    for argv in (["-q", "presets"], ["presets", "--quiet"], ["--quiet", "presets", "--no-progress"]):
        assert main(argv) == 0
        assert capfd.readouterr() == ("", ""), argv
    assert main(["presets", "-q", "--format", "csv"]) == 0  # output asked for with --format still comes
    assert capfd.readouterr().out.startswith("kind,name,files,path\n")
    assert main(["presets"]) == 0 and capfd.readouterr().out  # --quiet does not stick to later calls


def test_output_writes_the_file_atomically_in_the_format_of_its_suffix(tmp_path, capsys):
    assert main(["presets", "-o", str(tmp_path / "p.csv")]) == 0
    assert capsys.readouterr().out == ""
    rows = list(csv.reader((tmp_path / "p.csv").open()))
    assert rows[0] == ["kind", "name", "files", "path"] and all(len(r) == 4 for r in rows)
    assert ["preset", "digits"] == rows[1 + [r[1] for r in rows[1:]].index("digits")][:2]
    assert main(["presets", "--format", "json", "--output", str(tmp_path / "p.dat")]) == 0
    assert json.loads((tmp_path / "p.dat").read_text())["source"] == "package"
    assert main(["presets", "--output", str(tmp_path / "p.txt")]) == 2  # no format and no known suffix: a usage error
    assert "--format csv|json|markdown" in capsys.readouterr().err
    assert not (tmp_path / "p.txt").exists() and not list(tmp_path.glob("*.tmp-*"))


# ----------------------------------------------------------------------------- one meaning per flag, old spellings


def test_renamed_flags_keep_their_old_spelling_as_a_hidden_alias_that_warns(capsys):
    args = build_parser().parse_args(["quantize", "RUN", "--stages", "2", "--neighbors", "auto"])
    assert args.n_stages == 2 and args.n_neighbors == "auto"
    err = capsys.readouterr().err
    assert "--stages is deprecated; use --n-stages" in err and "--neighbors is deprecated; use --n-neighbors" in err
    new = build_parser().parse_args(["quantize", "RUN", "--n-stages", "3", "--n-neighbors", "7"])
    assert (new.n_stages, new.n_neighbors) == (3, 7) and capsys.readouterr().err == ""
    assert build_parser().parse_args(["evaluate", "RUN", "--json"]).format == "json"
    assert "--json is deprecated; use --format json" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["quantize", "--help"])
    shown = capsys.readouterr().out
    assert "--n-stages" in shown and "--n-neighbors" in shown and "--stages" not in shown.replace("--n-stages", "")


def test_every_command_takes_the_same_common_flags():
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    for name, sub in commands.items():
        if name in ("data", "features"):  # their subcommands take them
            sub = next(iter(sub._subparsers._group_actions[0].choices.values()))
        flags = {s for a in sub._actions for s in a.option_strings}
        assert {"-q", "--quiet", "--no-progress"} <= flags, name
        if "--format" in flags:
            assert {"-o", "--output"} <= flags, name
        assert "--json" not in flags or name == "evaluate", name  # the one old spelling, hidden
    for name in ("results", "table", "compress-table", "evaluate", "geometry", "amenability", "presets", "compress-weights", "export"):
        fmt = next(a for a in commands[name]._actions if "--format" in a.option_strings)
        assert {"csv", "json", "markdown"} <= set(fmt.choices), name


# ----------------------------------------------------------------------------- shell completion


def test_a_missing_argcomplete_never_breaks_the_cli(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "argcomplete", None)  # not installed
    assert main(["presets", "--format", "json"]) == 0  # a normal start never imports it
    capsys.readouterr()
    monkeypatch.setenv("_ARGCOMPLETE", "1")  # a shell asking for completions: none, and a quiet exit
    with pytest.raises(SystemExit) as exit_:
        main([])
    assert exit_.value.code == 1 and capsys.readouterr() == ("", "")


def _completions(monkeypatch, line: str) -> list[str]:
    import argcomplete

    monkeypatch.setenv("_ARGCOMPLETE", "1")
    monkeypatch.setenv("COMP_LINE", line)
    monkeypatch.setenv("COMP_POINT", str(len(line)))
    monkeypatch.setenv("_ARGCOMPLETE_IFS", "\v")
    class Finder(argcomplete.CompletionFinder):  # what argcomplete.autocomplete is, with its debug output kept off fd 9 (pytest's)
        def _init_debug_stream(self):
            argcomplete.io.debug_stream = io.StringIO()

    out = io.StringIO()
    Finder()(build_parser(), exit_method=lambda code: None, output_stream=out)
    return out.getvalue().split("\v")


def test_shell_completion_completes_commands_and_their_current_flags(monkeypatch):
    assert "results" in [c.strip() for c in _completions(monkeypatch, "posthoc-vq res")]
    flags = [c.strip() for c in _completions(monkeypatch, "posthoc-vq quantize RUN --n-")]
    assert "--n-stages" in flags and "--n-neighbors" in flags
    assert not any(c.strip() == "--stages" for c in _completions(monkeypatch, "posthoc-vq quantize RUN --st"))  # hidden alias


# ----------------------------------------------------------------------------- formats


def test_csv_cells_are_numbers_or_empty_and_every_row_has_every_column():
    assert [csv_cell(v) for v in (None, float("nan"), True, 3, 0.1, [1, "a"], "x,y")] == ["", "", "true", "3", "0.1", "1;a", "x,y"]
    rows = [{"a": 1.5, "b": None}, {"a": 2, "c": "w, with comma"}]
    parsed = list(csv.reader(io.StringIO(to_csv(rows))))
    assert parsed == [["a", "b", "c"], ["1.5", "", ""], ["2", "", "w, with comma"]]
    assert float(to_csv([{"x": 1 / 3}]).splitlines()[1]) == 1 / 3  # round-trips exactly
    md = to_markdown(rows).splitlines()
    assert len({line.count("|") for line in md}) == 1 and md[2] == "| 1.5 |  |  |"
    assert json.loads(to_json({"v": float("inf"), "w": [np.float32(0.5), np.int64(2)]})) == {"v": None, "w": [0.5, 2]}


# ----------------------------------------------------------------------------- progress callbacks


def test_report_reaches_only_the_installed_callback_of_this_thread():
    seen = []
    progress.report("nothing listens", 1, 2)  # a no-op
    with progress.reporting(lambda *a: seen.append(a)):
        progress.report("task", 1, 4)
        other = threading.Thread(target=progress.report, args=("other thread", 1, 1))
        other.start()
        other.join()
        with progress.reporting(None):  # None keeps the current callback
            progress.report("task", 2, 4)
    progress.report("after", 1, 1)
    assert seen == [("task", 1, 4), ("task", 2, 4)]


def test_progress_bars_draw_on_a_terminal_and_stay_off_elsewhere():
    with progress.progress_bars(True, console=Console(file=io.StringIO())) as callback:  # not a terminal: no bars, not even a newline
        assert callback is None
    with progress.progress_bars(False, console=Console(file=io.StringIO(), force_terminal=True)) as callback:
        assert callback is None
    screen = io.StringIO()
    with progress.progress_bars(True, console=Console(file=screen, force_terminal=True, width=100)) as callback:
        callback("k-means iterations", 3, 10)
        callback("k-means iterations", 10, 10)
        callback("k-means iterations", 1, 10)  # the same step again starts its bar over
    assert "k-means iterations" in screen.getvalue() and "1/10" in screen.getvalue()


def test_silence_turns_off_the_bars_library_code_draws_itself():
    from posthoc_vq.data.progress import make_progress

    assert not make_progress(enabled=True).disable
    with progress.silence():
        assert make_progress(enabled=True).disable
    assert not make_progress(enabled=True).disable


def test_fits_and_searches_report_their_progress():
    from posthoc_vq.quantize.latent.geodesic import GeodesicKMedoids
    from posthoc_vq.quantize.latent.kmeans import KMeans
    from posthoc_vq.quantize.latent.knn import knn_exact, knn_query

    Z = np.random.default_rng(0).standard_normal((600, 4)).astype(np.float32)

    def reports(call) -> dict[str, list[tuple[int, int]]]:
        seen: dict[str, list[tuple[int, int]]] = {}
        with progress.reporting(lambda task, done, total: seen.setdefault(task, []).append((done, total))):
            call()
        return seen

    km = KMeans(8, random_state=0, max_iter=50)
    iters = reports(lambda: km.fit(Z))["k-means iterations"]
    assert iters[-1] == (km.n_iter_, km.n_iter_) and all(d <= t for d, t in iters) and iters[0] == (0, 50)
    assert reports(lambda: km.predict(Z))["nearest-code assignment"][-1] == (600, 600)
    blocks = reports(lambda: knn_exact(Z, 5, chunk_size=64))["kNN graph blocks"]
    assert [d for d, _ in blocks] == list(range(1, len(blocks) + 1)) and blocks[-1][0] == blocks[-1][1] > 1
    queries = reports(lambda: knn_query(Z, Z[:200], 3, chunk_size=64))["kNN query blocks"]
    assert queries[-1][0] == queries[-1][1] > 1
    geo = GeodesicKMedoids(6, n_neighbors=8, random_state=0)
    medoids = reports(lambda: geo.fit(Z))["geodesic medoid iterations"]
    assert medoids[-1] == (geo.n_iter_, geo.n_iter_)
    assert "kNN query blocks" in reports(lambda: geo.predict(Z[:100]))  # geodesic assignment of new points
