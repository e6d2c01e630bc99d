"""Command line: parses arguments, calls the library, prints. No logic lives here.

``main(argv)`` returns the exit code, so tests call it directly. Errors caused by
input (:class:`PosthocVQError`) print one clear message and exit with code 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from posthoc_vq.errors import PosthocVQError

console = Console()
err_console = Console(stderr=True)


def _cmd_train(args: argparse.Namespace) -> int:
    from posthoc_vq.config import load_run_config
    from posthoc_vq.train import load_run_config as saved_run_config
    from posthoc_vq.train import train

    out = Path(args.out)
    overrides = list(args.set)
    if args.data_dir:
        overrides.append(f"data.data_dir={args.data_dir}")
    if args.resume and (out / "config.json").exists() and args.preset is None:
        from posthoc_vq.config import apply_overrides, validate, RunConfig

        data = apply_overrides(saved_run_config(out).to_dict(), overrides, RunConfig)
        config = validate(data, RunConfig, source=f"{out / 'config.json'} with overrides {overrides}")
    else:
        config = load_run_config(args.preset or "digits", overrides, seed=args.seed)
    result = train(config, out, resume=args.resume, progress=not args.no_progress, console=err_console)
    state = "converged (early stopping)" if result.converged else "stopped at max epochs (not converged)"
    console.print(f"{out}: {result.epochs} epochs, best val loss {result.best_val_loss:.4f} at epoch {result.best_epoch}, {state}, {result.seconds:.1f}s")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from posthoc_vq.evaluation import evaluate_continuous

    result = evaluate_continuous(args.run, split=args.split, data_dir=args.data_dir)
    if args.json:
        import json

        console.print_json(json.dumps(result, default=str))
        return 0
    table = Table(title=f"{args.run} — {result['dataset']} {args.split} split, {result['continuous']['n_images']} images")
    for col in ("model", "MSE", "PSNR (dB)", "SSIM", "converged"):
        table.add_column(col)
    q = result["continuous"]
    fmt = lambda m, p: f"{m['mean']:.{p}f} [{m['low']:.{p}f}, {m['high']:.{p}f}]"  # noqa: E731
    table.add_row("continuous (mu)", fmt(q["mse"], 5), fmt(q["psnr_db"], 2), fmt(q["ssim"], 4), str(result["training"]["converged"]))
    console.print(table)
    console.print(f"95% CIs over images. SSIM: Gaussian window {q['ssim_window']['size']}, sigma {q['ssim_window']['sigma']}. JSON: {Path(args.run) / 'eval' / f'continuous-{args.split}.json'}")
    if result["training"]["converged"] is False:
        err_console.print("[yellow]warning:[/] this model stopped at max epochs without meeting the early-stopping criterion")
    return 0


def _cmd_data_download(args: argparse.Namespace) -> int:
    from posthoc_vq.data import download, resolve_data_dir

    paths = download(args.name, args.data_dir, base_url=args.base_url)
    console.print(f"{args.name}: {len(paths)} files in {resolve_data_dir(args.data_dir) / args.name}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="posthoc-vq", description="Post-hoc quantization of trained VAEs, with honest evaluation.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a VAE into a run directory")
    p.add_argument("--preset", default=None, help="dataset preset under configs/presets (default: digits) or a folder")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="dotted override, e.g. train.epochs=5")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--data-dir", default=None, help="data root (else $POSTHOC_VQ_DATA, else ~/.cache/posthoc_vq)")
    p.add_argument("--resume", action="store_true", help="continue from the run's newest checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("evaluate", help="test-set MSE/PSNR/SSIM of a run, with 95%% CIs")
    p.add_argument("run", help="run directory")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--data-dir", default=None)
    p.add_argument("--json", action="store_true", help="print the JSON result instead of a table")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("data", help="dataset utilities")
    data_sub = p.add_subparsers(dest="data_command", required=True)
    d = data_sub.add_parser("download", help="fetch a dataset from its official URLs (md5-checked, atomic)")
    d.add_argument("name")
    d.add_argument("--data-dir", default=None)
    d.add_argument("--base-url", default=None, help="mirror to fetch the same file names from")
    d.set_defaults(func=_cmd_data_download)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except PosthocVQError as err:
        err_console.print(f"[bold red]error:[/] {err}", highlight=False)
        return 2


if __name__ == "__main__":
    sys.exit(main())
