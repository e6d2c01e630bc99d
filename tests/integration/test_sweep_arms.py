"""Sweep arms (named bundles of settings, some per value of a tag axis), fine-tune cells and compute metrics."""

import json
import sqlite3
import textwrap
from pathlib import Path

import pytest

from posthoc_vq.errors import ConfigError
from posthoc_vq.experiments import run_sweep
from posthoc_vq.experiments.spec import config_hash, expand, load_sweep_spec, portable
from posthoc_vq.report.build import write_report

ARMS = textwrap.dedent("""\
    name: arms
    base: digits
    set:
      model.channels: [8, 16]
      model.latent_dim: 8
      train.epochs: 40
      train.patience: 2
      train.min_delta: 0.5
      quantize.K: 16
      weights.bits: 32
    axes:
      rate: ["4", "8"]
      seed: [0, 1]
      arm: [posthoc, finetune, joint]
    arms:
      posthoc:
        set: {quantize.method: kmeans}
        per: {rate: {"8": {quantize.method: residual, quantize.n_stages: 2}}}
      finetune:
        set: {quantize.method: kmeans, finetune.epochs: 30, finetune.patience: 2, finetune.min_delta: 0.05}
        per: {rate: {"8": {quantize.method: residual, quantize.n_stages: 2}}}
      joint:
        set: {model.quantizer: vq, model.codebook_size: 16}
        per: {rate: {"8": {model.quantizer: rvq, model.stages: 2}}}
    compare:
      axis: arm
      reference: joint
      metrics: [psnr_db]
      pair_by: seed
    threads: 1
""")


def _spec(tmp_path: Path, text: str = ARMS) -> Path:
    path = tmp_path / "arms.yaml"
    path.write_text(text)
    return path


def test_arm_settings_merge_with_the_tag_axis(tmp_path):
    cells = expand(load_sweep_spec(_spec(tmp_path)))
    assert len(cells) == 12
    by = {(c.axes["rate"], c.axes["arm"], c.axes["seed"]): c for c in cells}
    assert by["4", "posthoc", 0].quantize.method == "kmeans" and by["8", "posthoc", 0].quantize.method == "residual"
    assert by["8", "posthoc", 0].quantize.n_stages == 2 and by["8", "posthoc", 0].finetune is None
    assert by["8", "finetune", 1].finetune.epochs == 30 and by["8", "finetune", 1].quantize.method == "residual"
    assert by["4", "joint", 0].run.model.quantizer == "vq" and by["8", "joint", 0].run.model.quantizer == "rvq" and by["8", "joint", 0].quantize is None
    # post-hoc and fine-tune arms share one trained VAE per seed; the tag axis itself sets nothing in the run config
    assert by["4", "posthoc", 0].train_key == by["8", "finetune", 0].train_key != by["4", "posthoc", 1].train_key
    assert "rate" not in json.dumps(portable(by["4", "posthoc", 0].run))


def test_cells_without_a_fine_tune_keep_their_ids():
    for cell in expand(load_sweep_spec("smoke")):
        parts = {"run": portable(cell.run), "quantize": cell.quantize.model_dump(mode="json") if cell.quantize else None,
                 "weights": cell.weights.model_dump(mode="json")}
        assert cell.finetune is None and cell.cell_id == config_hash(parts)  # the id a sweep database already holds


@pytest.mark.parametrize("edit, message", [
    (("arm: [posthoc, finetune, joint]", "arm: [posthoc, nope]"), "axis 'arm' names arms ['nope']"),
    (("  arm: [posthoc, finetune, joint]\n", ""), "there is no 'arm' axis"),
    (('per: {rate: {"8": {quantize.method: residual, quantize.n_stages: 2}}}\n  finetune', 'per: {speed: {"8": {quantize.K: 8}}}\n  finetune'), "'speed' is not an axis"),
    (('per: {rate: {"8": {model.quantizer: rvq', 'per: {rate: {"16": {model.quantizer: rvq'), "'16' is not a value of axis 'rate'"),
    (("set: {quantize.method: kmeans}", "set: {quantize.methd: kmeans}"), "quantize.methd"),
    (("set: {model.quantizer: vq, model.codebook_size: 16}", "set: {finetune.epochs: 3}"), "finetune.* is set but quantize.method is none"),
])
def test_bad_arms_are_clear_errors(tmp_path, edit, message):
    old, new = edit
    assert old in ARMS
    with pytest.raises(ConfigError, match=message.replace("*", r"\*").replace("[", r"\[").replace("]", r"\]")):
        load_sweep_spec(_spec(tmp_path, ARMS.replace(old, new)))


def test_sweep_with_fine_tune_and_trained_quantizer_arms(tmp_path):
    sweep = tmp_path / "sweep"
    claims = run_sweep(_spec(tmp_path), sweep, progress=False)
    assert claims["n_done"] == 12 and claims["n_failed"] == 0
    with sqlite3.connect(sweep / "results.sqlite") as conn:
        rows = [(json.loads(a), json.loads(m), json.loads(art)) for a, m, art in conn.execute("SELECT axes, metrics, artifacts FROM jobs")]
    cells = {(a["rate"], a["arm"], a["seed"]): (m, art) for a, m, art in rows}
    for rate in ("4", "8"):
        for seed in (0, 1):
            post, ft, joint = (cells[rate, arm, seed] for arm in ("posthoc", "finetune", "joint"))
            assert post[0]["bits_per_image"] == ft[0]["bits_per_image"] == joint[0]["bits_per_image"] == float(rate)
            assert Path(ft[1]["run_dir"]).name.startswith(Path(post[1]["run_dir"]).name + "-ft-")  # a run beside the source, never inside it
            assert ft[0]["psnr_db"] > post[0]["psnr_db"]  # the decoder fine-tuned on the codebook's latents does better than the codebook alone
            assert ft[0]["continuous_psnr_db"] == post[0]["continuous_psnr_db"]  # both refer to the same source VAE
            assert ft[0]["compute_seconds"] > post[0]["compute_seconds"] > 0 and ft[0]["optimizer_steps"] > post[0]["optimizer_steps"] > 0
            assert joint[0]["converged"] and ft[0]["converged"]
    result = write_report(sweep, tmp_path / "report", progress=False)
    files = {f.name for f in result["figures"]}
    assert {"rate-distortion.png", "quality-vs-compute.png"} <= files
    assert not [m for m in result["report"].missing if "no codebook" in m]  # the trained-quantizer arm needs no post-hoc codebook


def test_the_posthoc_vs_joint_study_compares_arms_at_equal_bits():
    """The study's premise: at each rate every arm spends the same bits per image (exactly 10, 20, 40; 196 on the 7x7 grid)."""
    import math

    from posthoc_vq.models.quantizers import build_quantizer

    for cell in expand(load_sweep_spec("posthoc-vs-joint")):
        rate, model = cell.axes["rate"], cell.run.model
        tokens = 49 if rate == "grid" else 1
        assert (model.family == "spatial") == (rate == "grid")
        if cell.quantize is not None:
            bits = math.log2(cell.quantize.K) * (cell.quantize.n_stages if cell.quantize.method == "residual" else 1)
        else:
            bits = build_quantizer(model).bits_per_vector
        assert bits * tokens == pytest.approx(196 if rate == "grid" else float(rate)), (cell.axes, bits)
