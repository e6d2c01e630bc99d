"""Test helper: a typed evaluation from the few fields a unit test sets (the rest filled with neutral values)."""

from posthoc_vq.results import Evaluation


def _ci(value):
    return {"n": 1, **value} if isinstance(value, dict) else {"mean": value, "n": 1}


def _block(block):
    if block is None:
        return None
    out = {"n_images": 1, **block}
    for metric in ("mse", "psnr_db", "ssim"):
        out[metric] = _ci(out.get(metric, 0.0))
    return out


def typed(result: dict) -> Evaluation:
    """``result`` (a partial evaluation as JSON) as an :class:`Evaluation`: quality blocks get n_images, MSE and SSIM, means get n,
    usage gets its usage fraction."""
    data = {"split": "test", **result}
    for key in ("continuous", "quantized", "penalty", "pre_quantization"):
        if key in data:
            data[key] = _block(data[key])
    for split, usage in (data.get("usage") or {}).items():
        if usage is not None:
            data["usage"][split] = {"usage_fraction": usage["used"] / usage["n_codes"], **usage}
    return Evaluation.model_validate(data)
