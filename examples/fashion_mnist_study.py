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
import sys
import time
from pathlib import Path

from posthoc_vq.cli import main as cli
from posthoc_vq.io import write_json
from posthoc_vq.provenance import provenance
from posthoc_vq.run import Run

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


class Steps:
    """Runs CLI steps and keeps how long each took, by stage."""

    def __init__(self) -> None:
        self.rows: list[dict] = []
        self.start = time.perf_counter()

    def run(self, stage: str, argv: list[str]) -> None:
        print("$ posthoc-vq " + " ".join(argv), flush=True)
        tic = time.perf_counter()
        if cli(argv) != 0:
            sys.exit(f"step failed: posthoc-vq {' '.join(argv)}")
        self.rows.append({"stage": stage, "command": "posthoc-vq " + " ".join(argv), "seconds": time.perf_counter() - tic})

    def skip(self, stage: str, why: str) -> None:
        self.rows.append({"stage": stage, "command": None, "seconds": 0.0, "reused": why})

    def report(self, path: Path) -> dict:
        total = time.perf_counter() - self.start
        by_kind: dict[str, float] = {}
        for row in self.rows:
            kind = row["stage"].split(" ", 1)[0]  # train, evaluate, quantize, table
            by_kind[kind] = by_kind.get(kind, 0.0) + row["seconds"]
        print(f"\n{'stage':<48} {'seconds':>9}")
        for row in self.rows:
            print(f"{row['stage']:<48} {row['seconds']:9.1f}" + ("  (reused: " + row["reused"] + ")" if "reused" in row else ""))
        print(f"{'total (wall clock, end to end)':<48} {total:9.1f}  = {total / 60:.1f} min")
        print("by kind: " + ", ".join(f"{k} {v:.0f} s" for k, v in by_kind.items()))
        result = {"total_seconds": total, "by_kind_seconds": by_kind, "steps": self.rows,
                  "complete": not any("reused" in r for r in self.rows), "provenance": provenance()}
        write_json(path, result)
        print(f"wrote {path}")
        return result


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
