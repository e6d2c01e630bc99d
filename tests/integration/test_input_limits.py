"""Counts and documents that multiply work or memory are bounded: each hostile value is one line and an exit code
before any work, never a traceback, a hang or an out-of-memory kill (issue 26, item 4)."""

import shutil

import pytest

from posthoc_vq.cli import main
from posthoc_vq.config import MAX_SEED, MAX_YAML_DEPTH, MAX_YAML_VALUES, StrictYAMLError, load_yaml
from posthoc_vq.errors import ConfigError
from posthoc_vq.experiments.spec import load_sweep_spec

SPEC = "name: hostile\nbase: digits\nset:\n  model.channels: VALUE\naxes: {seed: [0]}\ncompare: {axis: seed}\n"


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and err, err
    return " ".join(err.split())


def _bomb(levels: int = 8) -> str:
    lines = ["x0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"] + [f"x{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, levels + 1)]
    return "anchors:\n" + "\n".join("  " + line for line in lines) + "\n"


def test_a_yaml_nested_past_the_limit_is_refused_at_any_depth_the_parser_reaches():
    assert load_yaml("a: " + "[" * MAX_YAML_DEPTH + "]" * MAX_YAML_DEPTH) is not None  # at the limit: parsed
    with pytest.raises(StrictYAMLError, match=f"nested more than {MAX_YAML_DEPTH} levels deep"):
        load_yaml("a: " + "[" * (MAX_YAML_DEPTH + 2) + "]" * (MAX_YAML_DEPTH + 2))
    with pytest.raises(StrictYAMLError, match="nested more than .* levels deep"):  # so deep that the parser itself recurses out
        load_yaml("a: " + "[" * 100_000 + "]" * 100_000)


def test_an_alias_bomb_is_refused_by_what_it_would_expand_to():
    assert len(load_yaml(_bomb(3))["anchors"]["x3"]) == 10  # 10**4 values: fine
    with pytest.raises(StrictYAMLError, match=f"expands to more than {MAX_YAML_VALUES:,} values"):
        load_yaml(_bomb(8))  # 10**9 values if expanded


@pytest.mark.parametrize("value, message", [
    ("*a8", "expands to more than"),
    ("[" * 100_000 + "]" * 100_000, "nested more than"),
])
def test_hostile_yaml_under_a_valid_key_of_a_sweep_spec_is_one_line_and_exit_2(tmp_path, capsys, value, message):
    path = tmp_path / "hostile.yaml"
    path.write_text((_bomb(8) if value.startswith("*") else "") + SPEC.replace("VALUE", value))  # anchors before their use
    assert main(["ablate", str(path), "--out", str(tmp_path / "s"), "--no-progress"]) == 2
    assert message in _one_line_error(capsys) and not (tmp_path / "s").exists()


def test_seeds_are_32_bit_everywhere(tmp_path, capsys):
    for argv in (["train", "--preset", "digits", "--seed", "99999999999999999999", "--out", str(tmp_path / "r")],
                 ["quantize", str(tmp_path / "r"), "--seed", "-1"]):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2 and f"seeds are integers from 0 to {MAX_SEED}" in _one_line_error(capsys)
    with pytest.raises(ConfigError, match="seed"):  # a sweep's seed axis is validated with the grid, before any work
        path = tmp_path / "seeds.yaml"
        path.write_text(SPEC.replace("VALUE", "[8, 16]").replace("seed: [0]", f"seed: [0, {2**40}]"))
        load_sweep_spec(path)
    assert not (tmp_path / "r").exists()


def test_bounded_counts_and_a_codebook_too_large_for_memory(make_digits_run, tmp_path, capsys):
    run = make_digits_run(epochs=1)
    for value in ("-5", "1000000000"):
        with pytest.raises(SystemExit) as exit_:
            main(["evaluate", str(run), "--samples", value])
        assert exit_.value.code == 2 and "--samples" in _one_line_error(capsys)
    # 10**8 codes of 8 dimensions would be 3 GiB of float32: refused, and nothing saved
    assert main(["quantize", str(run), "--method", "random-prior", "--K", "100000000"]) == 2
    assert "over the 2 GiB limit; lower K" in _one_line_error(capsys) and not (run / "codebooks").exists()


def test_a_codebook_record_of_the_wrong_shape_is_one_line_in_the_report(make_digits_run, tmp_path, capsys):
    run = make_digits_run(epochs=1)
    assert main(["quantize", str(run), "--method", "kmeans", "--K", "8"]) == 0
    damaged = tmp_path / "damaged"
    shutil.copytree(run, damaged)
    (record,) = damaged.glob("codebooks/*/codebook.json")
    record.write_text("[]")
    capsys.readouterr()
    assert main(["report", str(damaged), "--out", str(tmp_path / "report"), "--no-progress"]) == 1  # a damaged artifact: failed work
    assert f"{record} is not a valid codebook record" in _one_line_error(capsys)


def test_an_integer_written_as_a_string_and_an_empty_file_are_errors(tmp_path):
    from posthoc_vq.config import load_run_config, read_yaml

    with pytest.raises(ConfigError, match=r"grid point \{'seed': 0\}:\n  K: .*expected an integer, got the string '8': write it without quotes"):
        path = tmp_path / "strings.yaml"
        path.write_text(SPEC.replace("VALUE", "[8, 16]").replace("axes:", "  quantize.method: kmeans\n  quantize.K: \"8\"\naxes:"))
        load_sweep_spec(path)
    assert load_run_config("digits", ["train.lr=1e-3"]).train.lr == 1e-3  # YAML leaves 1e-3 a string: floats still read it
    (tmp_path / "empty.yaml").write_text("# nothing but a comment\n")
    with pytest.raises(ConfigError, match=r"empty.yaml is empty \(no keys, only comments or nothing\)"):
        read_yaml(tmp_path / "empty.yaml")


def test_a_training_that_fails_before_writing_leaves_no_folder(tmp_path, capsys):
    from posthoc_vq.locking import _holder

    assert main(["train", "--preset", "digits", "--data-dir", str(tmp_path / "no-data"), "--set", "data.name=mnist", "--out", str(tmp_path / "r")]) == 2
    assert "mnist" in _one_line_error(capsys) and not (tmp_path / "r").exists()
    (tmp_path / ".lock").write_text("")  # a holder between taking the lock and naming itself
    assert _holder(tmp_path / ".lock") == "another process (it has just taken the lock)"
