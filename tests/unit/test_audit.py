"""The sanity audit flags impossible or invalid results, and only those."""

from posthoc_vq.audit import MAX_QUANT_GAIN_DB
from posthoc_vq.audit import audit as audit_typed

from typed_results import typed


def audit(r):
    return audit_typed(typed(r))


def result(cont=20.0, quant=15.0, **extra):
    q = lambda m, rng=(0.0, 1.0): {"psnr_db": {"mean": m}, "output_range": list(rng)}  # noqa: E731
    base = {"continuous": q(cont), "quantized": q(quant), "training": {"converged": True, "epochs": 9}, "model": {"trained_steps": 100}, "fit_on": "train", "fit_includes_test": False}
    base.update(extra)
    return base


def codes(r):
    return [w.code for w in audit(r)]


def test_clean_result_has_no_warnings():
    assert codes(result()) == []


def test_quantized_beating_continuous_by_more_than_threshold():
    assert codes(result(cont=15.18, quant=33.42)) == ["quantized_beats_continuous"]  # the study's numbers
    assert codes(result(cont=20.0, quant=20.0 + MAX_QUANT_GAIN_DB * 0.9)) == []
    assert "18.24 dB above" in audit(result(cont=15.18, quant=33.42))[0].message


def test_output_range_leakage_and_training_state():
    r = result(fit_on="train+test", fit_includes_test=True)
    r["quantized"]["output_range"] = [-0.2, 255.0]
    r["training"]["converged"] = False
    assert codes(r) == ["not_converged", "output_range", "test_leakage"]
    r["model"]["trained_steps"] = 0
    assert codes(r)[0] == "untrained"
