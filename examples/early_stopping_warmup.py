"""The early-stopping warm-up checked on the subset seed that stopped during its unstable start (issue 24).

In the subset study `posthoc-vs-joint`, joint FSQ at 20 bits on MNIST, seed 0, early-stopped after 5 epochs
at 12.2 dB under the shared protocol (min_delta 0.5, patience 2) while its other seeds reached 16.1 dB.
This script trains that cell's exact config twice, as the subset did (no warm-up) and with the full study's
warm-up (train.min_epochs=10: epochs 1-10 never count toward patience), and writes both runs' epochs, stop
reason and test PSNR to JSON.

    python examples/early_stopping_warmup.py --data-dir ../shared/datasets --out runs/warmup-check \\
        --json docs/results/posthoc-vs-joint-full/warmup-check.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

from posthoc_vq.evaluation import evaluate_continuous
from posthoc_vq.experiments.spec import expand, load_sweep_spec
from posthoc_vq.io import read_json, write_json
from posthoc_vq.provenance import provenance
from posthoc_vq.train import train

CELL = {"data.name": "mnist", "rate": "20", "arm": "joint-fsq", "seed": 0}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", default="../shared/datasets")
    p.add_argument("--out", default="runs/warmup-check")
    p.add_argument("--json", default="docs/results/posthoc-vs-joint-full/warmup-check.json")
    p.add_argument("--min-epochs", type=int, default=10)
    args = p.parse_args(argv)
    (cell,) = [c for c in expand(load_sweep_spec("posthoc-vs-joint")) if all(c.axes[k] == v for k, v in CELL.items())]
    out: dict = {"cell": CELL, "protocol": {k: getattr(cell.run.train, k) for k in ("epochs", "patience", "min_delta", "batch_size", "lr")}}
    for name, min_epochs in (("no warm-up (as the subset study)", 0), (f"warm-up train.min_epochs={args.min_epochs}", args.min_epochs)):
        run = cell.run.model_copy(update={"data": cell.run.data.model_copy(update={"data_dir": args.data_dir}),
                                          "train": cell.run.train.model_copy(update={"min_epochs": min_epochs, "threads": 1})})
        run_dir = Path(args.out) / f"min-epochs-{min_epochs}"
        summary = read_json(run_dir / "train_summary.json") if (run_dir / "train_summary.json").exists() else None
        if summary is None:
            train(run, run_dir, resume=run_dir.exists(), progress=False, console=Console(quiet=True))
            summary = read_json(run_dir / "train_summary.json")
        test = evaluate_continuous(run_dir, split="test", data_dir=args.data_dir).continuous
        history = read_json(run_dir / "history.json")
        out[name] = {"min_epochs": min_epochs, "epochs": summary["epochs"], "best_epoch": summary["best_epoch"], "stop_reason": summary["stop_reason"],
                     "val_loss": [round(r["val_loss"], 3) for r in history], "test_psnr_db": test.psnr_db.mean, "test_ssim": test.ssim.mean}
        print(f"{name}: stopped after {summary['epochs']} epochs ({summary['stop_reason']}, best {summary['best_epoch']}), "
              f"test PSNR {test['psnr_db']['mean']:.2f} dB")
    out["provenance"] = provenance(seed=CELL["seed"])
    write_json(args.json, out)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
