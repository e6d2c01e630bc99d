"""Golden results: every number the digits demo (`make demo`) prints, against tests/expected/digits-demo.json.

The demo runs for real (train, two codebooks, three evaluations, INT8 and INT4 weights) and its results are read
back through the typed results (posthoc_vq.results). Any change of a figure fails here: an unintended one is a bug,
an intended one is rewritten with ``POSTHOC_VQ_UPDATE_EXPECTED=1 pytest tests/integration/test_expected_results.py``
and shows as a diff of the JSON in review.

Tolerance, on the platform the figures were recorded on (torch version, CPU model and kernel level, kept in the file's
``platform``): integers (epochs, steps, codes, bytes) exactly, floats within 1e-6 relative or 1e-9 absolute; the same seed
gives the same numbers there. Another CPU or torch may take other float kernels (a 1-ulp difference in a convolution
changes 35 epochs of training a little), so elsewhere the comparison is loose and says so: floats within 2% relative
(1e-3 absolute), counts that follow training (epochs, steps, codes used) within 25%, the rest exactly. A changed
metric, a bug or a changed default moves the figures far more than that.
"""

from __future__ import annotations

import json
import math
import os
import platform as host
from pathlib import Path

import pytest

from posthoc_vq.cli import main
from posthoc_vq.records import read_evaluation
from posthoc_vq.results import Evaluation

EXPECTED = Path(__file__).resolve().parents[1] / "expected" / "digits-demo.json"
REL, ABS = 1e-6, 1e-9
LOOSE_REL, LOOSE_ABS, LOOSE_COUNT = 0.02, 1e-3, 0.25  # on another platform
#: figures that follow the training's path: on another platform they may differ by a little
TRAINING_COUNTS = ("training.epochs", "training.best_epoch", "training.steps", "usage.used", "usage.dead", "n_fit")
CODEBOOKS = ("kmeans-K64-mu-train", "geodesic-K64-mu-train-k15")
DEMO = [  # the Makefile's demo target, command by command
    ["train", "--preset", "digits"],
    ["quantize", "{run}", "--preset", "digits/quantize-euclidean"],
    ["quantize", "{run}", "--preset", "digits/quantize-geodesic"],
    ["evaluate", "{run}"],
    *[["evaluate", "{run}", "--codebook", name] for name in CODEBOOKS],
    ["compress-weights", "{run}", "--bits", "8"],
    ["compress-weights", "{run}", "--bits", "4"],
]


def quality(block) -> dict[str, float]:
    return {f"{m}.{k}": getattr(getattr(block, m), k) for m in ("mse", "psnr_db", "ssim") for k in ("mean", "low", "high")}


def figures(result: Evaluation, split: str = "test") -> dict[str, object]:
    """The printed numbers of one evaluation (``posthoc-vq evaluate`` / ``compress-weights``), flat, by attribute."""
    out: dict[str, object] = {"n_images": result.continuous.n_images, **{f"continuous.{k}": v for k, v in quality(result.continuous).items()}}
    out |= {"training.epochs": result.training.epochs, "training.best_epoch": result.training.best_epoch, "training.steps": result.training.steps}
    if result.quantized is not None and result.weights is None and result.codebook is not None:
        u = result.usage_on(split)
        out |= {f"quantized.{k}": v for k, v in quality(result.quantized).items()} | {f"penalty.{k}": v for k, v in quality(result.penalty).items()}
        out |= {"bits_per_image": result.bits_per_image, "n_fit": result.n_fit, "usage.used": u.used, "usage.dead": u.dead,
                "usage.entropy_bits": u.entropy_bits, "usage.perplexity": u.perplexity}
        out |= {f"rate.{p}.real_bpp": r.real_bpp.mean for p, r in sorted((result.rate.priors if result.rate else {}).items())}
    if result.weights is not None:
        out |= {f"quantized.{k}": v for k, v in quality(result.quantized).items()} | {f"penalty.{k}": v for k, v in quality(result.penalty).items()}
        out |= {"psnr_change_db.mean": result.psnr_change_db.mean, **{f"size.{k}": result.size[k] for k in ("packed_file_bytes", "quantized_parameters")}}
    out["warnings"] = sorted(result.warning_codes())
    return out


def platform_signature() -> str:
    """torch version, CPU model and the kernel level torch uses on it: where the same seed gives the same bits."""
    import torch

    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
                 host.processor()) if Path("/proc/cpuinfo").exists() else host.processor()
    return f"torch {torch.__version__}, {host.machine()} {model}, {torch.backends.cpu.get_cpu_capability()}"


def differences(expected: dict, got: dict, where: str = "", *, strict: bool = True) -> list[str]:
    """Every figure of ``got`` that differs from ``expected`` beyond the tolerance (or is missing / new)."""
    out = []
    for key in sorted(set(expected) | set(got)):
        path = f"{where}{key}"
        if key not in got or key not in expected:
            out.append(f"{path}: {'missing' if key not in got else 'new'}")
            continue
        a, b = expected[key], got[key]
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, f"{path}.", strict=strict)
        elif not strict and key in TRAINING_COUNTS and isinstance(a, (int, float)) and isinstance(b, (int, float)):
            if abs(b - a) > LOOSE_COUNT * max(abs(a), 1):
                out.append(f"{path}: expected {a!r}, got {b!r} (another platform: within {LOOSE_COUNT:.0%})")
        elif isinstance(a, bool) or isinstance(b, bool) or isinstance(a, (int, str, list)) or a is None or b is None:
            if a != b:
                out.append(f"{path}: expected {a!r}, got {b!r}")
        elif not math.isclose(float(a), float(b), rel_tol=REL if strict else LOOSE_REL, abs_tol=ABS if strict else LOOSE_ABS):
            out.append(f"{path}: expected {a!r}, got {b!r}" + ("" if strict else f" (another platform: within {LOOSE_REL:.0%})"))
    return out


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> dict[str, dict[str, object]]:
    run = tmp_path_factory.mktemp("demo") / "demo"
    for command in DEMO:
        argv = [a.format(run=run) for a in command] + (["--out", str(run)] if command[0] == "train" else [])
        assert main(argv + ["--quiet"] if command[0] != "train" else argv) == 0, command
    eval_dir = run / "eval"
    got = {"continuous": figures(read_evaluation(eval_dir / "continuous-test.json"))}
    got |= {name: figures(read_evaluation(eval_dir / f"{name}-test.json")) for name in CODEBOOKS}
    got |= {p.stem.removesuffix("-test"): figures(read_evaluation(p)) for p in sorted(eval_dir.glob("weights-*-test.json"))}
    return got


def test_every_demo_figure_equals_the_stored_one(demo):
    if os.environ.get("POSTHOC_VQ_UPDATE_EXPECTED"):
        EXPECTED.parent.mkdir(exist_ok=True)
        EXPECTED.write_text(json.dumps({"platform": platform_signature(), **demo}, indent=1, sort_keys=True) + "\n")
    expected = json.loads(EXPECTED.read_text())
    recorded = expected.pop("platform")
    strict = recorded == platform_signature()
    assert set(expected) == {"continuous", *CODEBOOKS, "weights-int8-channel-sym", "weights-int4-g32-sym"}
    wrong = differences(expected, demo, strict=strict)
    where = "" if strict else f" (recorded on {recorded}; this is {platform_signature()}: compared loosely)"
    assert not wrong, f"figures changed{where} (rewrite with POSTHOC_VQ_UPDATE_EXPECTED=1 if intended):\n" + "\n".join(wrong[:30])


def test_a_changed_figure_fails(demo):
    """The comparison catches one changed number (beyond the tolerance), a changed count and a missing figure."""
    expected = json.loads(EXPECTED.read_text())
    expected.pop("platform")
    nudged = json.loads(json.dumps(demo))
    nudged["kmeans-K64-mu-train"]["quantized.psnr_db.mean"] *= 1 + 10 * REL
    nudged["continuous"]["training.epochs"] += 1
    del nudged["weights-int4-g32-sym"]["size.packed_file_bytes"]
    wrong = differences(expected, nudged)
    assert [w.split(":")[0] for w in wrong] == ["continuous.training.epochs", "kmeans-K64-mu-train.quantized.psnr_db.mean",
                                                 "weights-int4-g32-sym.size.packed_file_bytes"]
    nudged["kmeans-K64-mu-train"]["quantized.psnr_db.mean"] = expected["kmeans-K64-mu-train"]["quantized.psnr_db.mean"] * (1 + REL / 10)
    assert "kmeans-K64-mu-train.quantized.psnr_db.mean" not in {w.split(":")[0] for w in differences(expected, nudged)}


def test_another_platform_is_compared_loosely_but_still_catches_a_real_change(demo):
    """On another CPU or torch, float noise passes; a figure moved by more than 2%, or an epoch count by more than 25%, fails."""
    expected = json.loads(EXPECTED.read_text())
    expected.pop("platform")
    noisy = json.loads(json.dumps(demo))
    noisy["kmeans-K64-mu-train"]["quantized.psnr_db.mean"] *= 1.001  # float noise of another kernel
    noisy["continuous"]["training.epochs"] += 2  # early stopping one patience later
    assert differences(expected, noisy, strict=False) == []
    noisy["kmeans-K64-mu-train"]["quantized.psnr_db.mean"] *= 1.05  # a real change
    noisy["continuous"]["training.steps"] *= 2
    noisy["weights-int4-g32-sym"]["size.packed_file_bytes"] += 1  # file sizes do not follow the training
    assert [w.split(":")[0] for w in differences(expected, noisy, strict=False)] == [
        "continuous.training.steps", "kmeans-K64-mu-train.quantized.psnr_db.mean", "weights-int4-g32-sym.size.packed_file_bytes"]
