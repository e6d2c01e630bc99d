"""The validity rules live once (posthoc_vq.audit): the evaluation audit, the sweep claims and the report's limitations
all take their codes, thresholds and sentences from it, and no other module restates them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import posthoc_vq
from typed_results import typed
from posthoc_vq import audit as rules
from posthoc_vq.experiments.claims import make_claims
from posthoc_vq.experiments.spec import CompareSpec
from posthoc_vq.report.limitations import run_limitations, sweep_limitations

SRC = Path(posthoc_vq.__file__).parent
COMPARE = CompareSpec(axis="model.latent_dim", reference=64, metrics=["psnr_db"], pair_by="seed")


def _row(dim, seed, psnr, **metrics):
    base = {"psnr_db": psnr, "converged": True, "trained_steps": 100, "warnings": [], "fit_includes_test": False, "protocol": "p"}
    return {"status": "done", "cell_id": f"{dim}-{seed}", "axes": {"model.latent_dim": dim, "seed": seed}, "metrics": base | metrics}


def _claim(rows):
    (claim,) = make_claims(rows, COMPARE)["claims"]
    return claim


def test_one_list_of_rules_with_unique_codes_and_the_audit_thresholds():
    codes = [r.code for r in rules.RULES]
    assert len(codes) == len(set(codes)) == len(rules.RULES_BY_CODE)
    assert {"untrained", "not_converged", "output_range", "test_leakage", "quantized_beats_continuous"} <= set(codes)
    assert rules.QUANTIZED_BEATS_CONTINUOUS.threshold == rules.MAX_QUANT_GAIN_DB == 0.5
    assert rules.TOO_FEW_OBSERVATIONS.threshold == rules.MIN_OBSERVATIONS == CompareSpec(axis="x").min_n
    from posthoc_vq.models import OUTPUT_RANGE

    assert tuple(rules.OUTPUT_RANGE) == tuple(OUTPUT_RANGE)


def test_rule_codes_are_spelled_only_in_the_rules_module():
    codes = {r.code for r in rules.RULES} - {"output_range"}  # output_range is also the name of a result field
    spelled = {}
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in codes:
                spelled.setdefault(node.value, set()).add(path.relative_to(SRC).as_posix())
    assert set(spelled) == codes and all(files == {"audit.py"} for files in spelled.values()), spelled
    assert not (SRC / "evaluation" / "audit.py").exists()


def test_audit_messages_come_from_the_rules():
    result = {"model": {"trained_steps": 0}, "training": {"converged": False, "epochs": 4}, "fit_on": "train+test", "fit_includes_test": True,
              "continuous": {"psnr_db": {"mean": 15.0}, "output_range": [0.0, 1.0]}, "quantized": {"psnr_db": {"mean": 30.0}, "output_range": [-0.5, 1.0]}}
    warnings = rules.audit(typed(result))
    assert [w.code for w in warnings] == ["untrained", "output_range", "test_leakage", "quantized_beats_continuous"]  # untrained hides not_converged
    for w in warnings:
        assert [w.message] == [m for m in rules.RULES_BY_CODE[w.code].on_result(typed(result)) if m == w.message]
    assert rules.audit(typed({**result, "model": {"trained_steps": 5}}))[0].model_dump() == {
        "code": "not_converged", "message": "training stopped at max epochs (4) without meeting the early-stopping criterion"}


@pytest.mark.parametrize("rule,change", [
    (rules.UNTRAINED, {"trained_steps": 0}),
    (rules.NOT_CONVERGED, {"converged": False}),
    (rules.QUANTIZED_BEATS_CONTINUOUS, {"warnings": ["quantized_beats_continuous"]}),
])
def test_claims_use_the_rules_for_invalid_arms(rule, change):
    rows = [_row(64, s, 22.0 + 0.1 * s) for s in range(3)] + [_row(4, s, 19.0, **(change if s == 1 else {})) for s in range(3)]
    claim = _claim(rows)
    assert claim["verdict"] == "invalid" and claim["reason"] == rule.claim_reason("model.latent_dim=4", "seed", ["1"])
    assert rule.on_cell(rows[4]["metrics"]) and not rule.on_cell(rows[0]["metrics"])


def test_claims_use_the_rules_for_leakage_protocols_and_too_few_observations():
    leak = [_row(64, s, 22.0) for s in range(3)] + [_row(4, s, 19.0, fit_includes_test=True) for s in range(3)]
    assert _claim(leak)["reason"] == rules.TEST_LEAKAGE.comparison_reason(["model.latent_dim=4"], ["model.latent_dim=64"])
    protocol = [_row(64, s, 22.0) for s in range(3)] + [_row(4, s, 19.0, protocol="q") for s in range(3)]
    assert _claim(protocol)["reason"] == rules.DIFFERENT_PROTOCOLS.comparison_reason()
    two = [_row(64, s, 22.0) for s in range(2)] + [_row(4, s, 19.0) for s in range(2)]
    assert _claim(two)["verdict"] == "insufficient evidence" and _claim(two)["reason"] == rules.too_few_reason(2, 2, 3)
    assert rules.too_few_reason(3, 3, 3) is None


def test_limitations_use_the_rules():
    lines = run_limitations(meta={"trained_steps": 0}, summary={"converged": False, "epochs": 5, "stop_reason": "max_epochs"}, seed=1, split="test",
                            codebook_evals=[typed({"codebook": "k", "fit_on": "train+test", "fit_includes_test": True})], codebooks=["k"], evaluated={"k"},
                            warnings=[], git_commit=None)
    assert rules.UNTRAINED.run_note() in lines
    assert rules.NOT_CONVERGED.run_note({"epochs": 5, "stop_reason": "max_epochs"}) in lines
    assert rules.TEST_LEAKAGE.run_note("test", ["k"]) in lines
    rows = [_row(8, 0, 20.0, converged=False), _row(4, 0, 19.0, trained_steps=0, fit_includes_test=True)]
    lines = sweep_limitations(rows=rows, n_cells=2, compare={"axis": "model.latent_dim", "pair_by": "seed", "min_n": 3}, claims_n_done=None, runs_missing=[])
    assert rules.NOT_CONVERGED.sweep_note(["model.latent_dim=8, seed=0"]) in lines
    assert rules.UNTRAINED.sweep_note(["model.latent_dim=4, seed=0"]) in lines
    assert rules.TEST_LEAKAGE.sweep_note(1) in lines
    assert rules.TOO_FEW_OBSERVATIONS.sweep_note(3, "seed", 1) in lines


# sentences that state a rule: each must be written in posthoc_vq/audit.py and nowhere else in the package
RULE_TEXTS = (
    "its numbers measure random weights",
    "without meeting the early-stopping criterion",
    "PSNR/SSIM with data range 1 are not valid",
    "which includes the test split it is evaluated on",
    "above its own continuous model",
    "is untrained (zero training steps",
    "did not converge (stopped at max epochs",
    "beats its own continuous model",
    "are compared with codebooks that were not",
    "trained with different protocols",
    "per arm are needed for a significance claim",
    "The model was never trained (0 steps)",
    "Not trained to convergence",
    "transductive, not a held-out result",
    "use codebooks fitted on data that includes the test split",
    "no significance test is run there",
    "MAX_QUANT_GAIN_DB =",
)


def test_rule_texts_and_thresholds_are_written_only_in_the_audit_module():
    owners: dict[str, list[str]] = {t: [] for t in RULE_TEXTS}
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        for t in RULE_TEXTS:
            if t in text:
                owners[t].append(str(path.relative_to(SRC)))
    assert {t: where for t, where in owners.items() if where != ["audit.py"]} == {}


def test_a_fine_tuned_decoder_may_beat_its_own_decode_of_mu():
    block = lambda db: {"psnr_db": {"mean": db, "low": db, "high": db}}  # noqa: E731
    result = {"continuous": block(15.0), "quantized": block(16.0), "model": {"trained_steps": 10}, "training": {"converged": True}}
    assert [w.code for w in rules.audit(typed(result))] == ["quantized_beats_continuous"]
    tuned = {**result, "finetune": {"source_run": "r", "codebook": "kmeans-K16-mu-train", "part": "decoder"}}
    assert rules.audit(typed(tuned)) == []  # its decoder was trained on the codebook's vectors: decode(mu) is no longer its reference
    assert [w.code for w in rules.audit(typed({**tuned, "quantized": block(16.0), "fit_includes_test": True, "fit_on": "train+test"}))] == ["test_leakage"]
