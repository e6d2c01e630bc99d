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
from posthoc_vq.run import Run, Sweep

console = Console()
err_console = Console(stderr=True)


def _cmd_train(args: argparse.Namespace) -> int:
    from posthoc_vq.config import load_run_config
    from posthoc_vq.train import train

    out = Path(args.out)
    overrides = list(args.set)
    if args.data_dir:
        overrides.append(f"data.data_dir={args.data_dir}")
    if args.resume and Run(out).exists() and args.preset is None:
        from posthoc_vq.config import apply_overrides, validate, RunConfig

        data = apply_overrides(Run.open(out).config().to_dict(), overrides, RunConfig)
        config = validate(data, RunConfig, source=f"{out / 'config.json'} with overrides {overrides}")
    else:
        config = load_run_config(args.preset or "digits", overrides, seed=args.seed)
    result = train(config, out, resume=args.resume, progress=not args.no_progress, console=err_console)
    state = "converged (early stopping)" if result.converged else "stopped at max epochs (not converged)"
    console.print(f"{out}: {result.epochs} epochs, best val loss {result.best_val_loss:.4f} at epoch {result.best_epoch}, {state}, {result.seconds:.1f}s")
    return 0


def _ci(m: dict, digits: int) -> str:
    return f"{m['mean']:.{digits}f} [{m['low']:.{digits}f}, {m['high']:.{digits}f}]"


def _int_or_auto(value: str) -> int | str:
    """argparse type of ``--neighbors``: an integer or the word 'auto'."""
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or 'auto', got {value!r}") from None


def _print_graph(g: dict | None) -> None:
    if g:
        console.print(f"graph: {g['nodes']} nodes, {g['edges']} edges, {g['components']} component(s), largest {g['largest_component']}")


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from posthoc_vq.evaluation.perceptual import PERCEPTUAL_METRICS, PIXEL_METRICS, parse_metrics

    metrics = parse_metrics(args.metrics)
    results = {}
    if any(m in PIXEL_METRICS for m in metrics):
        results["pixel"] = _evaluate_pixels(args)
    if any(m in PERCEPTUAL_METRICS for m in metrics):
        results["perceptual"] = _evaluate_perceptual(args, metrics)
    if args.json:
        import json

        console.print_json(json.dumps(results if len(results) > 1 else next(iter(results.values())), default=str))
    return 0


def _evaluate_perceptual(args: argparse.Namespace, metrics: list[str]) -> dict:
    from posthoc_vq.evaluation.perceptual import perceptual_metrics

    r = perceptual_metrics(
        args.run, codebook=args.codebook, weights=args.weights, split=args.split, metrics=metrics, features=args.features, data_dir=args.data_dir,
        n_samples=args.samples, n_pairs=args.pairs, seed=args.seed, lpips_weights=args.lpips_weights, progress=not args.json,
    )
    if args.json:
        return r
    fd_name, kid_name = r["metric_names"]["fd"], r["metric_names"]["kid"]
    what = " + ".join(filter(None, (args.weights, args.codebook))) or "continuous"
    table = Table(title=f"{args.run} {what} vs {r['dataset']} {args.split} images: {fd_name}, {kid_name} x1e3 (± std over subsets), "
                        f"k-NN precision/recall, feature spread, distinct samples and classes; features {r['feature_net']['path']} (test accuracy {r['feature_net']['test_accuracy']:.2%})")
    for col in ("set", "n", "FD", "KID", "prec.", "recall", "spread", "distinct", "classes"):
        table.add_column(col, overflow="fold")
    rows = list(r["sets"].items()) + ([(args.split, {"n": r["reference"]["diversity"]["n"], "diversity": r["reference"]["diversity"]})] if "reference" in r else [])
    for name, s in rows:
        kid, pr, div = s.get("kid"), s.get("precision_recall"), s.get("diversity")
        table.add_row(
            name, str(s["n"]), f"{s['fd']:.3f}" if "fd" in s else "", f"{1e3 * kid['mean']:.1f} ± {1e3 * kid['std']:.1f}" if kid else "",
            f"{pr['precision']:.3f}" if pr else "", f"{pr['recall']:.3f}" if pr else "", f"{div['mean_pairwise_feature_distance']:.2f}" if div else "",
            str(div["distinct_samples"]) if div else "", f"{div['distinct_classes']}/{div['n_classes']}" if div else "",
        )
    console.print(table)
    for name, s in r["sets"].items():
        if "lpips" in s:
            console.print(f"LPIPS ({name}): {_ci(s['lpips'], 4)}")
    if "interpolation" in r:
        table = Table(title=f"interpolation: {r['settings']['n_pairs']} test pairs, {r['settings']['steps']} points per path; mean/max step-to-step pixel change "
                            "(images in [0, 1]) and the fraction of intermediate images classified as an endpoint's class, ± 95% CI")
        for col in ("path", "mean step", "max step", "max/mean", "endpoint class"):
            table.add_column(col, overflow="fold")
        pm = lambda m, d: f"{m['mean']:.{d}f}±{m['high'] - m['mean']:.{d}f}"  # noqa: E731 - mean ± 95% CI half-width
        for name, p in r["interpolation"].items():
            ratio = f"{p['max_over_mean']:.2f}" if p["max_over_mean"] is not None else "-"
            table.add_row(name, pm(p["step_change_mean"], 4), pm(p["step_change_max"], 4), ratio, pm(p["endpoint_class_fraction"], 3))
        console.print(table)
    console.print(f"{fd_name} is a Fréchet distance in a {r['dataset']} classifier's feature space, not comparable with Inception FID. "
                  f"JSON: {Run(args.run).eval_file(args.split, codebook=args.codebook, weights=args.weights, kind='perceptual')}")
    for w in r["warnings"]:
        err_console.print(f"[yellow]warning ({w['code']}):[/] {w['message']}", highlight=False, soft_wrap=True)
    return r


def _evaluate_weight_pixels(args: argparse.Namespace) -> dict:
    from posthoc_vq.evaluation.samples import write_samples
    from posthoc_vq.evaluation.weights import evaluate_weights

    result = evaluate_weights(args.run, args.weights, split=args.split, data_dir=args.data_dir, codebook=args.codebook)
    if args.codebook is None:
        write_samples(args.run, args.split, weights=args.weights, data_dir=args.data_dir)  # the report's images of this model
    if args.json:
        return result
    for label, r in [("", result)] + ([(f" + codebook {args.codebook}", result["with_codebook"])] if args.codebook else []):
        console.print(f"{args.weights}{label}: PSNR {_ci(r['quantized']['psnr_db'], 2)} dB, SSIM {_ci(r['quantized']['ssim'], 4)} vs ground truth "
                      f"(fp32 {r['continuous']['psnr_db']['mean']:.2f} dB; change {_ci(r['psnr_change_db'], 3)} dB); PSNR {_ci(r['penalty']['psnr_db'], 2)} dB vs the fp32 output")
    console.print(f"95% CIs over images. JSON: {Run(args.run).eval_file(args.split, weights=args.weights, codebook=args.codebook)}")
    for w in result["warnings"]:
        err_console.print(f"[yellow]warning ({w['code']}):[/] {w['message']}", highlight=False, soft_wrap=True)
    return result


def _model_label(result: dict) -> str:
    """What the run's own decoder output is: a continuous VAE's decode(mu), or a trained quantizer's (with its exact rate)."""
    kind = result["model"].get("quantizer")
    if kind:
        return f"trained {kind} ({result['bits_per_image']:g} bits/image)"
    return f"continuous ({result['latents']})"


def _evaluate_pixels(args: argparse.Namespace) -> dict:
    from posthoc_vq.evaluation import evaluate_codebook, evaluate_continuous
    from posthoc_vq.evaluation.samples import write_samples

    if args.weights:
        return _evaluate_weight_pixels(args)
    if args.codebook:
        result = evaluate_codebook(args.run, args.codebook, split=args.split, data_dir=args.data_dir)
    else:
        result = evaluate_continuous(args.run, split=args.split, data_dir=args.data_dir)
    write_samples(args.run, args.split, codebook=args.codebook, data_dir=args.data_dir)  # the decoded images and code counts a report draws
    json_path = Run(args.run).eval_file(args.split, codebook=args.codebook)
    if args.json:
        return result
    q = result["continuous"]
    table = Table(title=f"{args.run} — {result['dataset']} {args.split} split, {q['n_images']} images, latents {result['latents']}")
    for col in ("decoder input", "vs", "MSE", "PSNR (dB)", "SSIM"):
        table.add_column(col)
    own = _model_label(result)
    table.add_row(own, "ground truth", _ci(q["mse"], 5), _ci(q["psnr_db"], 2), _ci(q["ssim"], 4))
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
    console.print(f"95% CIs over images. SSIM: Gaussian window {q['ssim_window']['size']}, sigma {q['ssim_window']['sigma']:.3g}. JSON: {json_path}")
    for w in result["warnings"]:
        err_console.print(f"[yellow]warning ({w['code']}):[/] {w['message']}", highlight=False, soft_wrap=True)
    return result


def _cmd_features_train(args: argparse.Namespace) -> int:
    from posthoc_vq.metrics.features import train_feature_net

    f = train_feature_net(args.dataset, args.out, data_dir=args.data_dir, epochs=args.epochs, seed=args.seed, progress=not args.no_progress, console=err_console)
    m = f.meta
    console.print(f"{args.dataset} feature net: test accuracy {m['test_accuracy']:.2%} (train {m['train_accuracy']:.2%}), {m['steps']} steps in {m['seconds']:.1f}s; saved {f.path}")
    return 0


def _cmd_quantize(args: argparse.Namespace) -> int:
    from posthoc_vq.config import load_quantize_config
    from posthoc_vq.quantize.codebooks import fit_codebook_for_run

    overrides = list(args.set)
    for key in ("method", "K", "latents", "fit_on", "n_stages", "n_neighbors"):
        value = getattr(args, key)
        if value is not None:
            overrides.append(f"quantize.{key}={value}")
    q = load_quantize_config(args.preset, overrides)
    if args.name is not None:
        q.name = args.name  # validated on assignment: a name that leaves the run is refused here
    name, estimator, meta = fit_codebook_for_run(args.run, q, data_dir=args.data_dir)
    u = meta["fit_usage"]
    per_class = f" ({estimator.codes_per_class_} per class x {len(estimator.classes_)} classes)" if estimator.needs_labels else ""
    console.print(
        f"{name}: K={estimator.n_codes}{per_class}, D={estimator.dim}, {meta['bits_per_image']:.1f} bits/image, fitted on {meta['fit_on']} "
        f"({meta['n_fit']} {meta['latents']} vectors) in {meta['fit_seconds']:.1f}s; usage {u['used']}/{u['n_codes']}, entropy {u['entropy_bits']:.2f} bits"
    )
    _print_graph(meta.get("graph"))
    console.print(f"saved {Run.open(args.run).artifact_dir('codebooks', name)}/")
    return 0


def _cmd_finetune(args: argparse.Namespace) -> int:
    from posthoc_vq.train import finetune

    r = finetune(args.run, args.codebook, args.out, epochs=args.epochs, part=args.part, lr=args.lr, patience=args.patience, resume=args.resume,
                 data_dir=args.data_dir, progress=not args.no_progress, console=err_console)
    state = "converged (early stopping)" if r.converged else "stopped at max epochs (not converged)"
    c = r.compute
    console.print(
        f"{args.out}: fine-tuned {r.part} on codebook {r.codebook} of {r.source}: {r.epochs} epochs, val recon {r.val_loss_before:.4f} -> "
        f"{r.best_val_loss:.4f} (best epoch {r.best_epoch}), {state}; compute {c['wall_seconds']:.1f}s, {c['optimizer_steps']} steps, "
        f"{c['images_seen']} images; evaluate with `posthoc-vq evaluate {args.out} --codebook {r.codebook}`",
        highlight=False, soft_wrap=True,
    )
    return 0


def _cmd_table(args: argparse.Namespace) -> int:
    from posthoc_vq.report import write_codebook_table

    paths = write_codebook_table(args.run, args.out, split=args.split)
    console.print(paths["markdown"].read_text(), markup=False, highlight=False)
    console.print(f"wrote {paths['markdown']}, {paths['csv']}, {paths['figure']}")
    return 0


def _cmd_geometry(args: argparse.Namespace) -> int:
    from posthoc_vq.evaluation.geometry import geometry_of_run
    from posthoc_vq.report.geometry_figure import write_geometry_figure

    r = geometry_of_run(args.run, split=args.split, data_dir=args.data_dir, seed=args.seed)
    figure = write_geometry_figure(args.run, args.split)
    dims, dist, cls, conn = r["intrinsic_dimension"], r["distortion"], r["classes"], r["connectivity"]
    console.print(f"{args.run} {args.split}: {r['n_vectors']} latent vectors of {dims['ambient']} dims")
    console.print(f"intrinsic dimension: TwoNN {dims['twonn']:.2f}, MLE {dims['mle']:.2f} (k={dims['mle_k']}; n={r['samples']['dimension']})")
    if dist["slope"] is not None:
        console.print(f"k-means distortion: slope {dist['slope']:.3f} over K={dist['K'][0]}..{dist['K'][-1]}, d_eff {dist['d_eff']:.2f} (n={r['samples']['distortion']})")
    console.print(f"kNN graph: smallest connected k {conn['connected_k'] if conn['connected_k'] is not None else 'none up to ' + str(conn['k'][-1])}")
    if cls["separation"] is not None:
        console.print(f"classes: pooled spread {cls['spread_overall']:.3f}, separation {cls['separation']:.2f} (closest pair {cls['separation_min']:.2f}), Fisher ratio {cls['fisher_ratio']:.2f}")
    console.print(f"wrote {Run(args.run).geometry_file(args.split)} and {figure}")
    return 0


def _cmd_amenability(args: argparse.Namespace) -> int:
    from rich.progress import Progress

    from posthoc_vq.experiments.amenability import amenability, markdown, verdict
    from posthoc_vq.io import write_json, write_text
    from posthoc_vq.report.amenability_figure import draw_amenability

    out = Path(args.out)
    with Progress(console=err_console, disable=args.no_progress) as bar:
        task = bar.add_task("latent geometry of each run", total=None)
        result = amenability(args.sweeps, method=args.method, split=args.split, data_dir=args.data_dir, compute=not args.no_compute,
                             progress=lambda i, n, _run: bar.update(task, completed=i, total=n))
    write_json(out / "amenability.json", result)
    write_text(out / "amenability.md", markdown(result))
    figure = draw_amenability(result, out / "amenability.png")
    console.print(f"{result['question']} ({result['n_configurations']} configurations of {result['n_runs']} converged runs, "
                  f"{result['n_datasets']} datasets)", soft_wrap=True, markup=False)
    for x in verdict(result):
        console.print(f"  {x}", soft_wrap=True, markup=False)
    console.print(f"wrote {out / 'amenability.json'}, {out / 'amenability.md'} and {figure}", soft_wrap=True)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from posthoc_vq.report.build import write_report

    # the report reads stored results and samples only: it needs no data and no model
    result = write_report(args.path, args.out, split=args.split, progress=not args.no_progress, console=err_console)
    report = result["report"]
    console.print(f"{report.kind} report: {len(report.sections)} sections, {len(result['figures'])} figures; wrote {result['markdown']} and {result['html']}")
    for m in report.missing:
        err_console.print(f"[yellow]missing:[/] {m}", highlight=False, soft_wrap=True)
    return 0


def _cmd_compress_weights(args: argparse.Namespace) -> int:
    from posthoc_vq.config import WeightsConfig, validate
    from posthoc_vq.evaluation.samples import write_samples
    from posthoc_vq.evaluation.weights import evaluate_weights
    from posthoc_vq.quantize.compressed import compress_run

    fields = {"bits": args.bits, "symmetric": not args.asymmetric, "granularity": args.granularity, "group_size": args.group_size,
              "fold_bn": args.fold_bn, "skip": args.skip, "float_dtype": args.float_dtype, "name": args.name}
    config = validate({k: v for k, v in fields.items() if v is not None}, WeightsConfig, source="compress-weights options")
    name, record = compress_run(args.run, config)
    console.print(
        f"{name}: {record['quantized_parameters']:,} of {record['num_parameters']:,} parameters quantized; packed file "
        f"{record['packed_file_bytes']:,} bytes vs fp32 file {record['fp32_file_bytes']:,} bytes = {100 * record['size_ratio']:.1f}% "
        f"({record['compression_factor']:.2f}x smaller); worst weight error {max(e['max_error_over_scale'] for e in record['layers'].values()):.3f} x scale"
    )
    if args.no_eval:
        return 0
    result = evaluate_weights(args.run, name, split=args.split, data_dir=args.data_dir, codebook=args.codebook)
    if args.codebook is None:
        write_samples(args.run, args.split, weights=name, data_dir=args.data_dir)  # the report's images of this model
    table = Table(title=f"{args.run} — {name}, {result['dataset']} {args.split} split, {result['quantized']['n_images']} images")
    for col in ("model", "vs", "PSNR (dB)", "SSIM", "PSNR change vs fp32 (dB)"):
        table.add_column(col)
    blocks = [("", result)] + ([(f" + codebook {args.codebook}", result["with_codebook"])] if args.codebook else [])
    for label, r in blocks:
        table.add_row(f"fp32{label}", "ground truth", _ci(r["continuous"]["psnr_db"], 2), _ci(r["continuous"]["ssim"], 4), "-")
        table.add_row(f"{name}{label}", "ground truth", _ci(r["quantized"]["psnr_db"], 2), _ci(r["quantized"]["ssim"], 4), _ci(r["psnr_change_db"], 3))
        table.add_row(f"{name}{label}", "fp32 output", _ci(r["penalty"]["psnr_db"], 2), _ci(r["penalty"]["ssim"], 4), "-")
    console.print(table)
    console.print(f"95% CIs over images. JSON: {Run(args.run).eval_file(args.split, weights=name, codebook=args.codebook)}")
    for w in result["warnings"]:
        err_console.print(f"[yellow]warning ({w['code']}):[/] {w['message']}", highlight=False, soft_wrap=True)
    return 0


def _cmd_compress_table(args: argparse.Namespace) -> int:
    from posthoc_vq.evaluation.compression import write_compression_results
    from posthoc_vq.report.compression_table import write_compression_table

    bits = [int(b) for b in args.bits.split(",") if b.strip()]
    measured = write_compression_results(args.runs, args.out, bits, split=args.split, data_dir=args.data_dir)  # measures, stores the JSON
    paths = write_compression_table(measured)  # formats the stored JSON into .md and .csv beside it
    console.print(paths["markdown"].read_text(), markup=False, highlight=False)
    console.print(f"wrote {paths['markdown']}, {paths['csv']}, {paths['json']}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from posthoc_vq.export.onnx import export_run

    record = export_run(args.run, args.out, int8=args.int8, calibration_size=args.calibration_size, seed=args.seed, data_dir=args.data_dir)
    for key, f in record["files"].items():
        console.print(f"{key}: {f['path']} ({f['bytes']:,} bytes), max |onnxruntime - torch| = {f['max_abs_diff_vs_torch']:.2e} on {f['check_batch']} test images")
    return 0


def _cmd_ablate(args: argparse.Namespace) -> int:
    from posthoc_vq.experiments import load_sweep_spec, run_sweep

    out = args.out or str(Path("runs") / "sweeps" / load_sweep_spec(args.spec).name)
    claims = run_sweep(args.spec, out, executor=args.executor, workers=args.workers, address=args.address, data_dir=args.data_dir,
                       progress=not args.no_progress, console=err_console)
    console.print(f"{out}: {claims['n_done']}/{claims['n_cells']} cells done ({claims['ran_now']} run now, {claims['n_failed']} failed)")
    console.print("verdicts: " + ", ".join(f"{v} {n}" for v, n in claims["counts"].items()))
    console.print(f"wrote {Sweep(out).claims_md} and claims.json; query with `posthoc-vq results {out}`")
    return 1 if claims["n_failed"] else 0


def _cmd_results(args: argparse.Namespace) -> int:
    import csv
    import io
    import json

    from posthoc_vq.experiments import results_table

    rows = results_table(args.sweep, args.where)
    if args.format == "json":
        console.print_json(json.dumps(rows, default=str))
    elif args.format == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["status"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        console.print(buf.getvalue(), markup=False, highlight=False, end="")
    else:
        table = Table(title=f"{args.sweep}: {len(rows)} cells")
        cols = [k for k in (rows[0] if rows else {}) if k not in ("cell_id", "error")]
        for col in cols:
            table.add_column(col)
        for r in rows:
            table.add_row(*[f"{r[c]:.4g}" if isinstance(r[c], float) else str(r[c]) for c in cols])
        console.print(table)
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
    p.add_argument("--weights", default=None, help="evaluate the run's packed weights NAME (under RUN/weights, from compress-weights) in place of the fp32 model; with --codebook, both")
    p.add_argument("--json", action="store_true", help="print the JSON result instead of a table")
    p.add_argument("--metrics", default="psnr,ssim", help="comma list of mse,psnr,ssim (pixel) and fd,kid,pr,diversity,interp,lpips (offline, in a domain classifier's feature space)")
    p.add_argument("--features", default=None, help="feature-network folder for fd/kid/pr/diversity/interp (default $POSTHOC_VQ_FEATURES/<dataset>, else ~/.cache/posthoc_vq/features/<dataset>)")
    p.add_argument("--samples", type=int, default=None, help="generated images per sample set (default: as many as the split)")
    p.add_argument("--pairs", type=int, default=100, help="test pairs for interp")
    p.add_argument("--seed", type=int, default=0, help="seed of samples, pairs and KID subsets")
    p.add_argument("--lpips-weights", default=None, help="local torchvision AlexNet weights for lpips (never downloaded)")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("quantize", help="fit a post-hoc latent codebook on a trained run")
    p.add_argument("run", help="run directory")
    p.add_argument("--preset", default=None, help="quantize preset: a YAML path or e.g. fashion-mnist/quantize-geodesic")
    p.add_argument("--method", default=None, help="kmeans | geodesic | hybrid | residual | random-prior | class-conditional")
    p.add_argument("--K", type=int, default=None, help="codebook size (per stage for residual; total budget, split equally over the classes, for class-conditional)")
    p.add_argument("--latents", default=None, help="mu (default) or z")
    p.add_argument("--fit-on", dest="fit_on", default=None, help="train (default), train+val, train+test (transductive)")
    p.add_argument("--stages", dest="n_stages", type=int, default=None, help="residual stages M")
    p.add_argument("--neighbors", dest="n_neighbors", type=_int_or_auto, default=None, help="k of the kNN graph, or 'auto' (connectivity rule)")
    p.add_argument("--name", default=None, help="codebook name (default from method, K, latents, fit set)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="dotted override, e.g. quantize.max_iter=20")
    p.add_argument("--data-dir", default=None)
    p.set_defaults(func=_cmd_quantize)

    p = sub.add_parser("finetune", help="fine-tune a run's decoder (and optionally its codebook) on a codebook's quantized latents, into a new run")
    p.add_argument("run", help="source run directory (only read)")
    p.add_argument("--codebook", required=True, help="codebook of the source run (name under RUN/codebooks)")
    p.add_argument("--out", required=True, help="new run directory")
    p.add_argument("--epochs", type=int, default=20, help="most epochs (early stopping on the val reconstruction loss)")
    p.add_argument("--part", default="decoder", choices=("decoder", "decoder+codebook"), help="what is trained; the encoder is always frozen")
    p.add_argument("--lr", type=float, default=None, help="Adam learning rate (default: the run's train.lr)")
    p.add_argument("--patience", type=int, default=None, help="epochs without val improvement before stopping (default: the run's train.patience)")
    p.add_argument("--data-dir", default=None, help="data root (else $POSTHOC_VQ_DATA, else ~/.cache/posthoc_vq)")
    p.add_argument("--resume", action="store_true", help="continue the fine-tune in --out from its newest checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_finetune)

    p = sub.add_parser("table", help="study-style table of a run's evaluated codebooks, and the rate-distortion figure")
    p.add_argument("run", help="run directory")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--out", default=None, help="output folder (default RUN/report)")
    p.set_defaults(func=_cmd_table)

    p = sub.add_parser("geometry", help="latent geometry: intrinsic dimension, k-means distortion slope, class spread, kNN connectivity")
    p.add_argument("run", help="run directory")
    p.add_argument("--split", default="train", help="train (default), val, test or a union such as train+test")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--seed", type=int, default=0, help="seed of the samples and of k-means")
    p.set_defaults(func=_cmd_geometry)

    p = sub.add_parser("amenability", help="does latent geometry predict the quantization penalty? rank correlations over finished sweeps' runs")
    p.add_argument("sweeps", nargs="+", help="sweep directories (finished or partly finished `posthoc-vq ablate` folders)")
    p.add_argument("--method", default="kmeans", help="codebook method whose penalty is predicted (default kmeans)")
    p.add_argument("--split", default="train", help="split whose latents' geometry is measured (default train)")
    p.add_argument("--out", required=True, help="output folder for amenability.json/.md/.png")
    p.add_argument("--no-compute", action="store_true", help="only read stored geometry; a run without it is an error")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_amenability)

    p = sub.add_parser("report", help="a run's or a sweep's report: report.md with PNG figures, and one self-contained report.html")
    p.add_argument("path", help="run directory or sweep directory")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--split", default="test", choices=("train", "val", "test"), help="split of a run's report (a sweep uses its spec's)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("compress-weights", help="INT8/INT4 post-training weight quantization, packed into a file, and its measured quality")
    p.add_argument("run", help="run directory")
    p.add_argument("--bits", type=int, default=8, choices=(8, 4))
    p.add_argument("--asymmetric", action="store_true", help="asymmetric codes with zero points (default symmetric)")
    p.add_argument("--granularity", default=None, choices=("tensor", "channel", "group"), help="default: channel for 8 bits, group for 4")
    p.add_argument("--group-size", type=int, default=None, help="weights per group along the input dimension (default 32)")
    p.add_argument("--fold-bn", action="store_true", default=None, help="fold BatchNorm into the preceding layer first")
    p.add_argument("--skip", action="append", default=None, metavar="LAYER", help="keep this layer in float ('first', 'last' or a module name); repeatable")
    p.add_argument("--float-dtype", default=None, choices=("fp32", "fp16"), help="storage of biases, norms and skipped layers")
    p.add_argument("--name", default=None, help="artifact name (default from the settings, e.g. int4-g32-sym)")
    p.add_argument("--codebook", default=None, help="also evaluate the quantized decoder fed this latent codebook's vectors")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--no-eval", action="store_true", help="only write the packed file")
    p.add_argument("--data-dir", default=None)
    p.set_defaults(func=_cmd_compress_weights)

    p = sub.add_parser("compress-table", help="compound compression: latent size (runs) x weight bits, with sizes and measured quality")
    p.add_argument("runs", nargs="+", help="trained run directories (e.g. one per latent size)")
    p.add_argument("--bits", default="32,8,4", help="comma list among 32, 8, 4")
    p.add_argument("--out", required=True, help="output folder for compression-<split>.md/.csv/.json")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--data-dir", default=None)
    p.set_defaults(func=_cmd_compress_table)

    p = sub.add_parser("export", help="export a run's encoder and decoder for deployment")
    p.add_argument("run", help="run directory")
    p.add_argument("--format", default="onnx", choices=("onnx",))
    p.add_argument("--int8", action="store_true", help="also write static QDQ INT8 models calibrated on the train split")
    p.add_argument("--calibration-size", type=int, default=512, help="train images for INT8 calibration")
    p.add_argument("--seed", type=int, default=0, help="which train images calibrate")
    p.add_argument("--out", default=None, help="output folder (default RUN/export)")
    p.add_argument("--data-dir", default=None)
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("ablate", help="run (or resume) a sweep: train every arm over seeds, quantize, evaluate, judge the claims")
    p.add_argument("spec", help="sweep YAML, or a name under configs/ablations (e.g. smoke, latent-dim)")
    p.add_argument("--out", default=None, help="sweep directory (default runs/sweeps/<name>)")
    p.add_argument("--executor", default="local", choices=("local", "process", "ray"))
    p.add_argument("--workers", type=int, default=2, help="processes (process) or CPUs of a local Ray cluster / threads per job (ray)")
    p.add_argument("--address", default=None, help="Ray cluster address (default: start a local cluster)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_ablate)

    p = sub.add_parser("results", help="query a sweep's results database")
    p.add_argument("sweep", help="sweep directory")
    p.add_argument("--where", action="append", default=[], metavar="KEY=VALUE", help="e.g. model.latent_dim=16, status=failed; repeatable")
    p.add_argument("--format", default="table", choices=("table", "csv", "json"))
    p.set_defaults(func=_cmd_results)

    p = sub.add_parser("data", help="dataset utilities")
    data_sub = p.add_subparsers(dest="data_command", required=True)
    d = data_sub.add_parser("download", help="fetch a dataset from its official URLs (md5-checked, atomic)")
    d.add_argument("name")
    d.add_argument("--data-dir", default=None)
    d.add_argument("--base-url", default=None, help="mirror to fetch the same file names from")
    d.set_defaults(func=_cmd_data_download)

    p = sub.add_parser("features", help="domain feature networks for the offline FD/KID metrics")
    feat_sub = p.add_subparsers(dest="features_command", required=True)
    f = feat_sub.add_parser("train", help="train a dataset's small classifier (its penultimate layer is the FD feature space)")
    f.add_argument("--dataset", required=True)
    f.add_argument("--out", default=None, help="folder (default $POSTHOC_VQ_FEATURES/<dataset>, else ~/.cache/posthoc_vq/features/<dataset>)")
    f.add_argument("--data-dir", default=None)
    f.add_argument("--epochs", type=int, default=None, help="default per dataset (mnist 4, fashion-mnist 5)")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--no-progress", action="store_true")
    f.set_defaults(func=_cmd_features_train)
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
