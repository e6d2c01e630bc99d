"""The validity rules, once: what makes a number untrustworthy, with its code, threshold and every text that states it.

Three readers apply these rules and none restates them:

* the evaluation **audit** (:func:`audit`): warnings ``{"code", "message"}`` stored in every
  evaluation result (``eval/*.json``);
* the sweep **claims** (:func:`invalid_reasons`, :func:`too_few_reason`, used by
  :mod:`posthoc_vq.experiments.claims`): why a comparison between two arms is ``invalid`` or
  ``insufficient evidence``;
* the report's automatic **limitations** (:mod:`posthoc_vq.report.limitations`), which take their
  sentences from the rules' ``run_note`` / ``sweep_note``.

The rules (:data:`RULES`, in the order they are checked):

* ``untrained``: zero training steps; every number measures random weights. A model of unknown
  training state (``posthoc_vq.evaluate`` on your own model) gets it when its continuous
  reconstructions' mean per-image MSE is at least that of the mean image of the evaluated images
  (``mean_image_baseline``);
* ``not_converged``: training stopped at the epoch limit instead of early stopping
  (checked only when the model trained at all);
* ``output_range``: decoded outputs outside :data:`OUTPUT_RANGE`, where PSNR/SSIM with data range 1 are wrong;
* ``test_leakage``: a codebook fitted on data that includes the test split (transductive);
  a claim is invalid when one arm leaked and the other did not;
* ``quantized_beats_continuous``: the decoder fed codebook vectors scores more than
  :data:`MAX_QUANT_GAIN_DB` above the same decoder fed the true latents; a codebook
  approximates the latents, so this is almost always a metric bug. A model trained with its
  quantizer (VQ, RVQ, FSQ) has no continuous model: its result's ``continuous`` and
  ``quantized`` blocks are both its own output, and its ``pre_quantization`` block (the decoder
  fed z_e, which it never saw in training, so it may score far below) is never compared;
* ``different_protocols``: compared arms trained with different optimiser, schedule, stopping
  or data split (unless the compared axis is itself a training or data setting);
* ``too_few_observations``: fewer than ``min_n`` (default :data:`MIN_OBSERVATIONS`) observations
  in an arm: no significance test is run.

A pure module: typed results (:mod:`posthoc_vq.results`) or a sweep cell's stored metrics in, strings out;
it imports nothing else of the package, so the evaluation, the sweep driver and the report can all use it.
"""

from __future__ import annotations

from typing import Any, Mapping

from posthoc_vq.results import CodebookComparison, Evaluation, Warning_

MAX_QUANT_GAIN_DB = 0.5  # quantized PSNR above continuous by more than this: implausible
OUTPUT_RANGE = (0.0, 1.0)  # decoded images must lie here (PSNR/SSIM use data range 1); = posthoc_vq.models.OUTPUT_RANGE
MIN_OBSERVATIONS = 3  # default min_n: observations per arm below which no significance test is run
RANGE_TOLERANCE = 1e-6
TRAINING_AXES = ("train.", "data.")  # a compared axis with these prefixes changes the protocol on purpose


class Rule:
    """One validity rule: a ``code``, what it means, and (per subclass) how it is detected and stated.

    Detection: :meth:`on_result` (messages for an evaluation result) and :meth:`on_cell`
    (whether it fires for a done sweep cell, from the cell's stored metrics). Texts:
    :meth:`claim_reason`, :meth:`run_note`, :meth:`sweep_note`. A rule that does not apply
    in a context returns nothing there.
    """

    code: str = ""
    meaning: str = ""
    threshold: float | None = None

    def on_result(self, result: Mapping[str, Any]) -> list[str]:
        return []

    def on_cell(self, metrics: Mapping[str, Any]) -> bool:
        return False

    def __repr__(self) -> str:
        return f"Rule({self.code!r})"


class _Untrained(Rule):
    code = "untrained"
    meaning = "the model has zero training steps, so its numbers measure random weights"

    @staticmethod
    def applies(trained_steps: Any) -> bool:
        return trained_steps == 0

    @staticmethod
    def no_better_than_mean(baseline: Any) -> bool:
        """A model of unknown training state (bring your own) whose mean per-image MSE is at least that of the mean image."""
        return bool(baseline) and baseline.get("model_mse") is not None and baseline["model_mse"] >= baseline["mse"]

    def on_result(self, result):
        model = getattr(result, "model", None)
        if self.applies(model.trained_steps if model is not None else None):
            return ["the model has zero training steps: its numbers measure random weights, not a trained VAE"]
        baseline = getattr(result, "mean_image_baseline", None)
        if self.no_better_than_mean(baseline):
            return [f"the model's reconstructions are no better than the mean image of the evaluated images (mean per-image MSE "
                    f"{baseline['model_mse']:.4g} vs {baseline['mse']:.4g}): it looks untrained, so its numbers likely measure random weights"]
        return []

    def on_cell(self, metrics):
        return self.applies(metrics.get("trained_steps"))

    def claim_reason(self, arm: str, pair_by: str | None, seeds: list[str]) -> str:
        return f"{arm} is untrained (zero training steps; {pair_by} {', '.join(seeds)}): it measures random weights"

    def run_note(self) -> str:
        return "The model was never trained (0 steps): every number in this report measures random weights."

    def sweep_note(self, cells: list[str]) -> str:
        return f"Untrained models (0 steps; their numbers measure random weights): {'; '.join(cells)}."


class _NotConverged(Rule):
    code = "not_converged"
    meaning = "training stopped at the epoch limit without meeting the early-stopping criterion"

    @staticmethod
    def applies(converged: Any) -> bool:
        return converged is False

    def on_result(self, result):
        training = getattr(result, "training", None)
        if training is not None and not UNTRAINED.on_result(result) and self.applies(training.converged):
            return [f"training stopped at max epochs ({training.epochs}) without meeting the early-stopping criterion"]
        return []

    def on_cell(self, metrics):
        return self.applies(metrics.get("converged"))

    def claim_reason(self, arm: str, pair_by: str | None, seeds: list[str]) -> str:
        return f"{arm} did not converge (stopped at max epochs; {pair_by} {', '.join(seeds)})"

    def run_note(self, summary: Mapping[str, Any]) -> str:
        return (f"Not trained to convergence: training stopped at the epoch limit ({summary.get('epochs')} epochs, "
                f"stop reason '{summary.get('stop_reason')}') while the validation loss was still improving by more than min_delta.")

    def sweep_note(self, cells: list[str]) -> str:
        return f"Not trained to convergence (stopped at the epoch limit): {'; '.join(cells)}."


class _OutputRange(Rule):
    code = "output_range"
    meaning = f"decoded outputs outside {list(OUTPUT_RANGE)}, where PSNR/SSIM with data range 1 are not valid"
    threshold = RANGE_TOLERANCE

    @staticmethod
    def applies(rng: Any) -> bool:
        lo, hi = OUTPUT_RANGE
        return bool(rng) and (rng[0] < lo - RANGE_TOLERANCE or rng[1] > hi + RANGE_TOLERANCE)

    def on_result(self, result):
        lo, hi = OUTPUT_RANGE
        out = []
        for key in ("continuous", "quantized"):
            block = getattr(result, key)
            rng = block.output_range if block is not None else None
            if self.applies(rng):
                out.append(f"{key} outputs lie in [{rng[0]:.3f}, {rng[1]:.3f}], outside [{lo}, {hi}]: PSNR/SSIM with data range 1 are not valid")
        return out


class _TestLeakage(Rule):
    code = "test_leakage"
    meaning = "the codebook was fitted on data that includes the test split it is evaluated on (transductive)"

    @staticmethod
    def applies(fit_includes_test: Any) -> bool:
        return bool(fit_includes_test)

    def on_result(self, result):
        if self.applies(result.fit_includes_test):
            return [f"the codebook was fitted on '{result.fit_on}', which includes the test split it is evaluated on (transductive)"]
        return []

    def on_cell(self, metrics):
        return self.applies(metrics.get("fit_includes_test"))

    def comparison_reason(self, saw: list[str], clean: list[str]) -> str:
        return f"codebooks fitted on data including the test split ({', '.join(saw)}) are compared with codebooks that were not ({', '.join(clean)})"

    def run_note(self, split: str, leaked: list[str]) -> str:
        return f"Codebooks fitted on data that includes the {split} split they are evaluated on (transductive, not a held-out result): {', '.join(leaked)}."

    def sweep_note(self, n_cells: int) -> str:
        return f"{n_cells} cell(s) use codebooks fitted on data that includes the test split (transductive)."


class _QuantizedBeatsContinuous(Rule):
    code = "quantized_beats_continuous"
    meaning = "the quantized model scores above its own continuous model: almost always a metric bug"
    threshold = MAX_QUANT_GAIN_DB

    def on_result(self, result):
        # only 'quantized' against 'continuous': a trained quantizer's 'pre_quantization' block is informational. A decoder
        # fine-tuned on a codebook's vectors is no longer the decoder of mu, so it may fairly score above its own decode(mu)
        if result.quantized is not None and result.continuous is not None and not getattr(result, "finetune", None):
            gain = result.quantized.psnr_db.mean - result.continuous.psnr_db.mean
            if gain > self.threshold:
                return [f"the quantized model scores {gain:.2f} dB above its own continuous model; a codebook approximates the latents, "
                        "so this is implausible and almost always a metric bug (output range, latents or images differ between the two)"]
        return []

    def on_cell(self, metrics):
        return self.code in (metrics.get("warnings") or [])

    def claim_reason(self, arm: str, pair_by: str | None, seeds: list[str]) -> str:
        return f"{arm}: the quantized model beats its own continuous model ({pair_by} {', '.join(seeds)}), almost always a metric bug"


class _DifferentProtocols(Rule):
    code = "different_protocols"
    meaning = "the compared arms were trained with different protocols (optimiser, schedule, stopping or data split)"

    @staticmethod
    def applies(axis: str, protocols: set[Any]) -> bool:
        return not axis.startswith(TRAINING_AXES) and len(protocols) > 1

    def comparison_reason(self) -> str:
        return "the arms were trained with different protocols (optimiser, schedule, stopping or data split differ)"


class _TooFewObservations(Rule):
    code = "too_few_observations"
    meaning = "fewer observations per arm than min_n: no significance test is run (verdict 'insufficient evidence')"
    threshold = MIN_OBSERVATIONS

    @staticmethod
    def applies(n: int, min_n: int | None = None) -> bool:
        return n < (MIN_OBSERVATIONS if min_n is None else min_n)

    def claim_reason(self, n_arm: int, n_reference: int, min_n: int) -> str:
        return f"n = {n_arm} and {n_reference} observations; at least {min_n} per arm are needed for a significance claim"

    def sweep_note(self, min_n: int, what: str, lowest: int) -> str:
        return (f"Fewer than {min_n} {what}s in some arm: no significance test is run there (verdict 'insufficient evidence')"
                + ("; with one seed there is no spread across training runs at all, and no confidence interval." if lowest < 2 else "."))


UNTRAINED = _Untrained()
NOT_CONVERGED = _NotConverged()
OUTPUT_RANGE_RULE = _OutputRange()
TEST_LEAKAGE = _TestLeakage()
QUANTIZED_BEATS_CONTINUOUS = _QuantizedBeatsContinuous()
DIFFERENT_PROTOCOLS = _DifferentProtocols()
TOO_FEW_OBSERVATIONS = _TooFewObservations()

RULES: tuple[Rule, ...] = (UNTRAINED, NOT_CONVERGED, OUTPUT_RANGE_RULE, TEST_LEAKAGE, QUANTIZED_BEATS_CONTINUOUS, DIFFERENT_PROTOCOLS, TOO_FEW_OBSERVATIONS)
RULES_BY_CODE: dict[str, Rule] = {r.code: r for r in RULES}
RESULT_RULES = (UNTRAINED, NOT_CONVERGED, OUTPUT_RANGE_RULE, TEST_LEAKAGE, QUANTIZED_BEATS_CONTINUOUS)  # checked on evaluation results
ARM_RULES = (UNTRAINED, NOT_CONVERGED, QUANTIZED_BEATS_CONTINUOUS)  # any cell of an arm firing one makes its claims invalid


def audit(result: Evaluation | CodebookComparison) -> list[Warning_]:
    """Warnings (``code``, ``message``) for an evaluation result, or a weights evaluation's ``with_codebook`` block, in rule order.

    Reads ``model.trained_steps``, ``training.converged``/``epochs``, ``continuous``/``quantized``
    (``output_range``, ``psnr_db.mean``), ``fit_on`` and ``fit_includes_test`` where present.
    """
    return [Warning_(code=rule.code, message=m) for rule in RESULT_RULES for m in rule.on_result(result)]


def invalid_reasons(arms: Mapping[Any, list[Mapping[str, Any]]], axis: str, pair_by: str | None) -> list[str]:
    """Why a comparison between these arms (axis value -> done rows with ``axes`` and ``metrics``) cannot be trusted; empty when it can."""
    reasons = []
    for value, rows in arms.items():
        arm = f"{axis}={value}"
        for rule in ARM_RULES:
            seeds = sorted({str(r["axes"].get(pair_by, "?")) for r in rows if rule.on_cell(r["metrics"])})
            if seeds:
                reasons.append(rule.claim_reason(arm, pair_by, seeds))
    leak = {value: any(TEST_LEAKAGE.on_cell(r["metrics"]) for r in rows) for value, rows in arms.items()}
    if len(set(leak.values())) > 1:
        reasons.append(TEST_LEAKAGE.comparison_reason([f"{axis}={v}" for v, x in leak.items() if x], [f"{axis}={v}" for v, x in leak.items() if not x]))
    if DIFFERENT_PROTOCOLS.applies(axis, {r["metrics"].get("protocol") for rows in arms.values() for r in rows}):
        reasons.append(DIFFERENT_PROTOCOLS.comparison_reason())
    return reasons


def too_few_reason(n_arm: int, n_reference: int, min_n: int = MIN_OBSERVATIONS) -> str | None:
    """The 'insufficient evidence' reason when an arm has fewer than ``min_n`` observations, else None."""
    if TOO_FEW_OBSERVATIONS.applies(min(n_arm, n_reference), min_n):
        return TOO_FEW_OBSERVATIONS.claim_reason(n_arm, n_reference, min_n)
    return None

