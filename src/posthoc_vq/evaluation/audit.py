"""Sanity audit of an evaluation result: claims the numbers cannot support are flagged in the result.

Each warning is ``{"code": ..., "message": ...}``. The checks:

* ``quantized_beats_continuous``: the decoder fed codebook vectors scores more than
  ``MAX_QUANT_GAIN_DB`` above the same decoder fed the true latents. A codebook vector
  is an approximation of the latent, so this is almost always a metric bug (outputs
  mapped to the wrong range, different latents, different images);
* ``output_range``: decoded outputs outside [0, 1], where PSNR with data range 1 is wrong;
* ``test_leakage``: the codebook was fitted on data that includes the test split;
* ``not_converged`` / ``untrained``: the model stopped at max epochs, or never trained.
"""

from __future__ import annotations

from typing import Any

from posthoc_vq.models import OUTPUT_RANGE

MAX_QUANT_GAIN_DB = 0.5


def audit(result: dict[str, Any]) -> list[dict[str, str]]:
    """Warnings for an evaluation result (see module docstring for the keys it reads)."""
    warnings: list[dict[str, str]] = []

    def warn(code: str, message: str) -> None:
        warnings.append({"code": code, "message": message})

    training = result.get("training", {})
    if result.get("model", {}).get("trained_steps") == 0:
        warn("untrained", "the model has zero training steps: its numbers measure random weights, not a trained VAE")
    elif training.get("converged") is False:
        warn("not_converged", f"training stopped at max epochs ({training.get('epochs')}) without meeting the early-stopping criterion")
    lo, hi = OUTPUT_RANGE
    for key in ("continuous", "quantized"):
        rng = result.get(key, {}).get("output_range")
        if rng and (rng[0] < lo - 1e-6 or rng[1] > hi + 1e-6):
            warn("output_range", f"{key} outputs lie in [{rng[0]:.3f}, {rng[1]:.3f}], outside [{lo}, {hi}]: PSNR/SSIM with data range 1 are not valid")
    if result.get("fit_includes_test"):
        warn("test_leakage", f"the codebook was fitted on '{result.get('fit_on')}', which includes the test split it is evaluated on (transductive)")
    if "quantized" in result and "continuous" in result:
        gain = result["quantized"]["psnr_db"]["mean"] - result["continuous"]["psnr_db"]["mean"]
        if gain > MAX_QUANT_GAIN_DB:
            warn(
                "quantized_beats_continuous",
                f"the quantized model scores {gain:.2f} dB above its own continuous model; a codebook approximates the latents, "
                "so this is implausible and almost always a metric bug (output range, latents or images differ between the two)",
            )
    return warnings
