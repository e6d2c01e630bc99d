"""Re-run the Fashion-MNIST post-hoc VQ study with correct metrics.

Trains (or reuses) the 128-D Fashion-MNIST run and fits every codebook method twice:
on the train split (54,000 images; 6,000 are held out for validation), and on all
70,000 images (train+val+test, the transductive set the study clustered). Evaluates
each on the test split and writes the study-style table and the rate-distortion
figure into RUN/report.

Every step is timed: a breakdown per stage (training, each codebook's fit, each evaluation, the
report) is printed at the end and written with the machine's provenance (CPU threads, versions,
wait policy) to RUN/report/study_timing.json. Steps already done (a trained run, a fitted
codebook) are reused and marked as such, so only a run from an empty folder times the whole study.

    python examples/fashion_mnist_study.py --run runs/fm-128 --data-dir ../shared/datasets
"""

from __future__ import annotations

import argparse
from pathlib import Path

from posthoc_vq.run import Run
from study_steps import Steps  # examples/ is on sys.path when run as a script

CODEBOOKS = [
    ["--method", "kmeans"],
    ["--method", "geodesic"],
    ["--method", "hybrid"],
    ["--method", "random-prior"],
    ["--method", "residual", "--n-stages", "1"],
    ["--method", "residual", "--n-stages", "2"],
    ["--method", "residual", "--n-stages", "4"],
]


def name(args: list[str], fit_on: str, K: int) -> str:
    method = args[1]
    stages = f"-M{args[3]}" if method == "residual" else ""
    return f"{method}{stages}-K{K}-mu-{fit_on.replace('+', '_')}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", default="runs/fm-128")
    p.add_argument("--data-dir", default="../shared/datasets")
    p.add_argument("--K", type=int, default=1024)
    p.add_argument("--fit-on", nargs="+", default=["train", "train+val+test"], help="fit sets; train+val+test is the study's 70,000-image transductive set")
    args = p.parse_args()
    run = Path(args.run)
    steps = Steps()
    if not (run / "train_summary.json").exists():
        steps.run("train", ["train", "--preset", "fashion-mnist", "--out", str(run), "--data-dir", args.data_dir] + (["--resume"] if run.exists() else []))
    else:
        steps.skip("train", f"{run} was trained before")
    steps.run("evaluate continuous", ["evaluate", str(run), "--data-dir", args.data_dir])
    for fit_on in args.fit_on:
        for cb in CODEBOOKS:
            cb_name = name(cb, fit_on, args.K)
            if cb_name not in Run(run).codebook_names():
                steps.run(f"quantize {cb_name}", ["quantize", str(run), *cb, "--K", str(args.K), "--fit-on", fit_on, "--data-dir", args.data_dir])
            else:
                steps.skip(f"quantize {cb_name}", "fitted before")
            steps.run(f"evaluate {cb_name}", ["evaluate", str(run), "--codebook", cb_name, "--data-dir", args.data_dir])
    steps.run("table", ["table", str(run)])
    steps.report(run / "report" / "study_timing.json")


if __name__ == "__main__":
    main()
