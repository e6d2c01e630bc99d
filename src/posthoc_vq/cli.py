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


def _ci(m: dict, digits: int) -> str:
    return f"{m['mean']:.{digits}f} [{m['low']:.{digits}f}, {m['high']:.{digits}f}]"


def _print_graph(g: dict | None) -> None:
    if g:
        console.print(f"graph: {g['nodes']} nodes, {g['edges']} edges, {g['components']} component(s), largest {g['largest_component']}")


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from posthoc_vq.evaluation import evaluate_codebook, evaluate_continuous

    if args.codebook:
        result = evaluate_codebook(args.run, args.codebook, split=args.split, data_dir=args.data_dir)
        json_name = f"{args.codebook}-{args.split}.json"
    else:
        result = evaluate_continuous(args.run, split=args.split, data_dir=args.data_dir)
        json_name = f"continuous-{args.split}.json"
    if args.json:
        import json

        console.print_json(json.dumps(result, default=str))
        return 0
    q = result["continuous"]
    table = Table(title=f"{args.run} — {result['dataset']} {args.split} split, {q['n_images']} images, latents {result['latents']}")
    for col in ("decoder input", "vs", "MSE", "PSNR (dB)", "SSIM"):
        table.add_column(col)
    table.add_row(f"continuous ({result['latents']})", "ground truth", _ci(q["mse"], 5), _ci(q["psnr_db"], 2), _ci(q["ssim"], 4))
    if args.codebook:
        for key, vs in (("quantized", "ground truth"), ("penalty", "continuous")):
            m = result[key]
            table.add_row(f"codebook {args.codebook}", vs, _ci(m["mse"], 5), _ci(m["psnr_db"], 2), _ci(m["ssim"], 4))
    console.print(table)
    if args.codebook:
        u = result["usage"][args.split]
        console.print(
            f"{result['bits_per_image']:.1f} bits/image; {args.split} usage {u['used']}/{u['n_codes']} codes ({u['dead']} dead), "
            f"entropy {u['entropy_bits']:.2f} bits, perplexity {u['perplexity']:.1f}; fitted on {result['fit_on']} ({result['n_fit']} vectors)"
        )
        _print_graph(result.get("graph"))
    console.print(f"95% CIs over images. SSIM: Gaussian window {q['ssim_window']['size']}, sigma {q['ssim_window']['sigma']:.3g}. JSON: {Path(args.run) / 'eval' / json_name}")
    for w in result["warnings"]:
        err_console.print(f"[yellow]warning ({w['code']}):[/] {w['message']}", highlight=False, soft_wrap=True)
    return 0


def _cmd_quantize(args: argparse.Namespace) -> int:
    from posthoc_vq.config import load_quantize_config
    from posthoc_vq.quantize.codebooks import fit_codebook_for_run

    overrides = list(args.set)
    for key in ("method", "K", "latents", "fit_on", "n_stages", "n_neighbors", "name"):
        value = getattr(args, key)
        if value is not None:
            overrides.append(f"quantize.{key}={value}")
    q = load_quantize_config(args.preset, overrides)
    name, estimator, meta = fit_codebook_for_run(args.run, q, data_dir=args.data_dir)
    u = meta["fit_usage"]
    console.print(
        f"{name}: K={estimator.n_codes}, D={estimator.dim}, {estimator.bits_per_vector:.1f} bits/image, fitted on {meta['fit_on']} "
        f"({meta['n_fit']} {meta['latents']} vectors) in {meta['fit_seconds']:.1f}s; usage {u['used']}/{u['n_codes']}, entropy {u['entropy_bits']:.2f} bits"
    )
    _print_graph(meta.get("graph"))
    console.print(f"saved {Path(args.run) / 'codebooks' / name}.safetensors (+ .json)")
    return 0


def _cmd_table(args: argparse.Namespace) -> int:
    from posthoc_vq.report import write_codebook_table

    paths = write_codebook_table(args.run, args.out, split=args.split)
    console.print(paths["markdown"].read_text(), markup=False, highlight=False)
    console.print(f"wrote {paths['markdown']}, {paths['csv']}, {paths['figure']}")
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
    p.add_argument("--codebook", default=None, help="evaluate this codebook of the run (name under RUN/codebooks)")
    p.add_argument("--json", action="store_true", help="print the JSON result instead of a table")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("quantize", help="fit a post-hoc latent codebook on a trained run")
    p.add_argument("run", help="run directory")
    p.add_argument("--preset", default=None, help="quantize preset: a YAML path or e.g. fashion-mnist/quantize-geodesic")
    p.add_argument("--method", default=None, help="kmeans | geodesic | hybrid | residual | random-prior")
    p.add_argument("--K", type=int, default=None, help="codebook size (per stage for residual)")
    p.add_argument("--latents", default=None, help="mu (default) or z")
    p.add_argument("--fit-on", dest="fit_on", default=None, help="train (default), train+val, train+test (transductive)")
    p.add_argument("--stages", dest="n_stages", type=int, default=None, help="residual stages M")
    p.add_argument("--neighbors", dest="n_neighbors", type=int, default=None, help="k of the kNN graph")
    p.add_argument("--name", default=None, help="codebook name (default from method, K, latents, fit set)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="dotted override, e.g. quantize.max_iter=20")
    p.add_argument("--data-dir", default=None)
    p.set_defaults(func=_cmd_quantize)

    p = sub.add_parser("table", help="study-style table of a run's evaluated codebooks, and the rate-distortion figure")
    p.add_argument("run", help="run directory")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--out", default=None, help="output folder (default RUN/report)")
    p.set_defaults(func=_cmd_table)

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
        err_console.print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
