# PYTHON_ARGCOMPLETE_OK
"""Command line: parses arguments, calls the library, prints. No logic lives here.

``main(argv)`` returns the exit code, so tests call it directly: 0 success, 1 failed work, 2 a
usage or input error (:func:`posthoc_vq.errors.exit_code` maps each error class; argparse's own
errors exit 2 through ``SystemExit``). An error prints one clear message on stderr, never a traceback.

Conventions, the same on every command (docs/cli.md, "CLI conventions"):

* ``--out DIR``: the folder (a run directory for ``train``/``finetune``) the command writes its
  artifacts into; always optional, its default in ``--help``.
* ``--format table|csv|json|markdown`` and ``-o/--output FILE`` on every command that prints a table:
  ``table`` (the default) is for people; the others are written raw (never wrapped, whatever the
  terminal width) to stdout, or atomically to FILE, and then stdout holds nothing else
  (:mod:`posthoc_vq.report.formats`).
* ``--seed N``: the seed of the random draws this command makes (and nothing else).
* a flag that sets a config key is that key with dashes (``--n-stages`` sets ``quantize.n_stages``).
* ``-q/--quiet`` and ``--no-progress``, before or after the command: no progress bars; ``--quiet``
  also no informational lines. Warnings and errors still go to stderr.
* Renamed flags keep their old spelling as a hidden alias that prints a one-line note on stderr.
"""

from __future__ import annotations

import argparse
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from posthoc_vq.errors import EXIT_FAILED, EXIT_OK, ConfigError, PosthocVQError, exit_code
from posthoc_vq.results import Evaluation

# Before torch is first imported (commands import it lazily): PyTorch's CPU allocator then asks the kernel for huge pages
# for its large buffers (only with transparent huge pages set to 'madvise' or 'always'; no number changes). A full-size photo's
# activations are ~100 MB each, fresh for every layer: with 4 KB pages the page faults cost about a fifth of the encode and decode time
# (bench/taef2_kodak.py). Set THP_MEM_ALLOC_ENABLE=0 to turn it off.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

console = Console()  # stdout: results for people
notes = Console(stderr=True)  # stderr: informational lines (and the consoles that train, fine-tune and sweep print to); off with --quiet
err_console = Console(stderr=True)  # stderr: warnings and errors, never silenced

HUMAN = "table"
MACHINE_FORMATS = ("csv", "json", "markdown")
SUFFIX_FORMATS = {".csv": "csv", ".json": "json", ".md": "markdown", ".markdown": "markdown"}
MAX_SAMPLES = 100_000  # generated images per sample set (evaluate --samples); a split has at most 60,000
MAX_PAIRS = 10_000  # interpolation pairs (evaluate --pairs)


# ----------------------------------------------------------------------------- output and progress


def _quiet(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "quiet", False))


def _bars(args: argparse.Namespace) -> bool:
    """Whether progress bars are drawn: not with --quiet or --no-progress."""
    return not (_quiet(args) or getattr(args, "no_progress", False))


def _machine(args: argparse.Namespace) -> str | None:
    """The machine format asked for (--format csv|json|markdown, or the suffix of --output), or None for the human table."""
    fmt, output = getattr(args, "format", None), getattr(args, "output", None)
    if fmt in MACHINE_FORMATS:
        return fmt
    if output is not None:
        guess = SUFFIX_FORMATS.get(Path(output).suffix.lower())
        if fmt is not None or guess is None:
            raise ConfigError(f"--output {output} writes csv, json or markdown: add --format csv|json|markdown (or name the file .csv, .json or .md)")
        return guess
    return None


def _say(args: argparse.Namespace, *objects: Any, **kwargs: Any) -> None:
    """An informational line: on stdout with the human table, on stderr when stdout holds a machine format; never with --quiet."""
    if _quiet(args):
        return
    (notes if _machine(args) else console).print(*objects, **kwargs)


def _emit(args: argparse.Namespace, rows: list[dict[str, Any]], columns: Any = None, json_value: Any = None) -> None:
    """Write ``rows`` in the machine format asked for, raw, to stdout or atomically to --output."""
    from posthoc_vq.report.formats import emit, render

    fmt = _machine(args)
    written = emit(render(fmt, rows, columns=columns, json_value=json_value), getattr(args, "output", None))
    if written is not None and not _quiet(args):
        notes.print(f"wrote {written}", highlight=False, soft_wrap=True)


def _warn(warnings: list[Any]) -> None:
    """Print audit warnings: typed ones (``code``, ``message``), or a perceptual result's dicts."""
    for w in warnings:
        code, message = (w["code"], w["message"]) if isinstance(w, dict) else (w.code, w.message)
        err_console.print(f"[yellow]warning ({code}):[/] {message}", highlight=False, soft_wrap=True)


@contextmanager
def _progress(args: argparse.Namespace) -> Iterator[Any]:
    """Rich bars with ETA on stderr for what the library reports (:mod:`posthoc_vq.progress`); the callback, or None without bars."""
    from posthoc_vq.progress import progress_bars, reporting, silence

    with silence(not _bars(args)), progress_bars(_bars(args), console=err_console) as callback, reporting(callback):
        yield callback


@contextmanager
def _own_bars(args: argparse.Namespace) -> Iterator[None]:
    """For the commands whose library call draws its own bars (train, finetune, ablate, report, features, data download):
    those get ``progress=_bars(args)``; this only turns off the bars drawn deeper (data decoding) with --quiet/--no-progress."""
    from posthoc_vq.progress import silence

    with silence(not _bars(args)):
        yield


# ----------------------------------------------------------------------------- experiment tracking (--track)


def _add_track(p: argparse.ArgumentParser) -> None:
    p.add_argument("--track", default=None, choices=("mlflow",),
                   help="also log to an experiment tracker (extra [tracking]): MLFLOW_TRACKING_URI, else ./mlruns; a tracking failure is only a warning")


def _track_warn(message: str) -> None:
    err_console.print(f"[yellow]warning (tracking):[/] {message}", highlight=False, soft_wrap=True)


def _tracking(args: argparse.Namespace) -> Any:
    """The tracker --track asks for (:class:`posthoc_vq.pipeline.Tracking`), its failures printed as warnings."""
    from posthoc_vq.pipeline import Tracking

    return Tracking(getattr(args, "track", None), warn=_track_warn)


def _check_track(args: argparse.Namespace) -> None:
    """Fail before any work when --track names a tracker whose extra is not installed."""
    _tracking(args).check()


# ----------------------------------------------------------------------------- commands


def _cmd_train(args: argparse.Namespace) -> int:
    from posthoc_vq import pipeline

    out = Path(args.out) if args.out else Path("runs") / Path(args.preset or "digits").name
    overrides = list(args.set)
    if args.data_dir:
        overrides.append(f"data.data_dir={args.data_dir}")
    config = pipeline.train_config(out, args.preset, overrides, resume=args.resume, seed=args.seed)
    tracking = _tracking(args)
    tracking.check()
    with _own_bars(args):
        result = pipeline.train(config, out, resume=args.resume, experiment=Path(args.preset).name if args.preset else None, tracking=tracking,
                                progress=_bars(args), console=notes, device=_device(args))
    state = "converged (early stopping)" if result.converged else "stopped at max epochs (not converged)"
    _say(args, f"{out}: {result.epochs} epochs, best val loss {result.best_val_loss:.4f} at epoch {result.best_epoch}, {state}, {result.seconds:.1f}s")
    return EXIT_OK


def _cmd_import(args: argparse.Namespace) -> int:
    from posthoc_vq.config import RunConfig, apply_overrides, validate
    from posthoc_vq.train.pretrained import PHOTO_TRAIN, import_pretrained

    out = Path(args.out) if args.out else Path("runs") / args.model
    bad = [item for item in args.set if not item.startswith(("data.", "train."))]
    if bad:
        raise ConfigError(f"--set {bad[0]}: an imported model's architecture is fixed; only data.* and train.* (fine-tune settings) may be set")
    base = {"data": {"name": args.data, **({"data_dir": args.data_dir} if args.data_dir else {})}, "train": dict(PHOTO_TRAIN)}
    config = validate(apply_overrides(base, list(args.set), RunConfig), RunConfig, source=f"import --data {args.data} with overrides {args.set}")
    run = import_pretrained(args.model, args.weights, out, data=config.data, train=config.train.model_dump())
    record = run.model_record()
    _say(args, f"{run.root}: imported {args.model} ({record['num_parameters']:,} parameters, sha256 {record['sha256'][:12]}...), data {config.data.name}; "
               f"next: posthoc-vq quantize {run.root} --K 4096")
    return EXIT_OK


def _ci(m: Any, digits: int) -> str:
    """``mean [low, high]`` of a :class:`~posthoc_vq.results.MeanCI` (or a perceptual result's mean/CI dict)."""
    mean, low, high = (m["mean"], m["low"], m["high"]) if isinstance(m, dict) else (m.mean, m.low, m.high)
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def _seed(value: str) -> int:
    """argparse type of every ``--seed``: an integer from 0 to 2**32 - 1 (numpy's and scikit-learn's range)."""
    from posthoc_vq.config import MAX_SEED

    try:
        seed = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer seed, got {value!r}") from None
    if not 0 <= seed <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"{value} is out of range: seeds are integers from 0 to {MAX_SEED} (2**32 - 1)")
    return seed


def _count(low: int, high: int) -> Callable[[str], int]:
    """argparse type of a count that multiplies work or memory: an integer from ``low`` to ``high``."""
    def parse(value: str) -> int:
        try:
            n = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {value!r}") from None
        if not low <= n <= high:
            raise argparse.ArgumentTypeError(f"{value} is out of range: from {low:,} to {high:,}")
        return n
    return parse


def _int_or_auto(value: str) -> int | str:
    """argparse type of ``--n-neighbors``: an integer or the word 'auto'."""
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or 'auto', got {value!r}") from None


def _print_graph(args: argparse.Namespace, g: dict | None) -> None:
    if g:
        _say(args, f"graph: {g['nodes']} nodes, {g['edges']} edges, {g['components']} component(s), largest {g['largest_component']}")


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from posthoc_vq.evaluation.perceptual import PERCEPTUAL_METRICS, PIXEL_METRICS, parse_metrics

    metrics = parse_metrics(args.metrics)
    fmt = _machine(args)  # a bad --output fails before any work
    _check_track(args)
    results = {}
    with _progress(args) as progress:
        if any(m in PIXEL_METRICS for m in metrics):
            results["pixel"] = _evaluate_pixels(args, progress)
        if any(m in PERCEPTUAL_METRICS for m in metrics):
            results["perceptual"] = _evaluate_perceptual(args, metrics, progress)
    if fmt:
        from posthoc_vq.report.result_rows import EVALUATION_COLUMNS, evaluation_rows

        rows = [row for r in results.values() for row in evaluation_rows(r)]
        _emit(args, rows, EVALUATION_COLUMNS, json_value=results if len(results) > 1 else next(iter(results.values())))
    else:
        if "pixel" in results:
            (_print_weight_pixels if args.weights else _print_pixels)(args, results["pixel"])
        if "perceptual" in results:
            _print_perceptual(args, results["perceptual"])
    for r in results.values():
        _warn(r["warnings"] if isinstance(r, dict) else r.warnings)
    from posthoc_vq.pipeline import track_evaluation

    track_evaluation(_tracking(args), args.run, results, codebook=args.codebook, weights=args.weights, split=args.split)
    return EXIT_OK


def _evaluate_perceptual(args: argparse.Namespace, metrics: list[str], progress: Any) -> dict:
    from posthoc_vq.pipeline import evaluate_perceptual

    return evaluate_perceptual(
        args.run, metrics, codebook=args.codebook, weights=args.weights, split=args.split, features=args.features, data_dir=args.data_dir,
        n_samples=args.samples, n_pairs=args.pairs, seed=args.seed, lpips_weights=args.lpips_weights, progress=progress,
    )


def _print_perceptual(args: argparse.Namespace, r: dict) -> None:
    if _quiet(args):
        return
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
                  f"JSON: {_eval_file(args, kind='perceptual')}")


def _add_device(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--device", default="cpu", metavar="auto|cpu|cuda|cuda:N|mps",
                   help=f"device for {what}: cpu (the default, for reproducible numbers), auto (cuda, else mps, else cpu), cuda, cuda:N or mps; recorded in the JSON")


def _device(args: argparse.Namespace) -> Any:
    """The resolved --device (a usage error, exit 2, when unknown or not available here)."""
    from posthoc_vq.devices import resolve_device

    return resolve_device(getattr(args, "device", "cpu"))


def _evaluate_pixels(args: argparse.Namespace, progress: Any) -> Evaluation:
    from posthoc_vq.pipeline import evaluate_pixels

    return evaluate_pixels(args.run, codebook=args.codebook, weights=args.weights, split=args.split, data_dir=args.data_dir, progress=progress,
                           device=_device(args))


def _eval_file(args: argparse.Namespace, **kind: Any) -> Path:
    """Where the evaluation this command wrote is stored (for the last printed line)."""
    from posthoc_vq.pipeline import eval_file

    return eval_file(args.run, args.split, **({"codebook": args.codebook, "weights": args.weights} | kind))


def _print_weight_pixels(args: argparse.Namespace, result: Evaluation) -> None:
    for label, r in [("", result)] + ([(f" + codebook {args.codebook}", result.with_codebook)] if args.codebook else []):
        _say(args, f"{args.weights}{label}: PSNR {_ci(r.quantized.psnr_db, 2)} dB, SSIM {_ci(r.quantized.ssim, 4)} vs ground truth "
                   f"(fp32 {r.continuous.psnr_db.mean:.2f} dB; change {_ci(r.psnr_change_db, 3)} dB); PSNR {_ci(r.penalty.psnr_db, 2)} dB vs the fp32 output")
    _say(args, f"95% CIs over images. JSON: {_eval_file(args)}")


def _model_label(result: Evaluation) -> str:
    """What the run's own decoder output is: a continuous VAE's decode(mu), or a trained quantizer's (with its exact rate)."""
    kind = result.model.quantizer
    if kind:
        return f"trained {kind} ({result.bits_per_image:g} bits/image)"
    return f"continuous ({result.latents})"


def _print_pixels(args: argparse.Namespace, result: Evaluation) -> None:
    if _quiet(args):
        return
    q = result.continuous
    table = Table(title=f"{args.run} — {result.dataset} {args.split} split, {q.n_images} images, latents {result.latents}")
    for col in ("decoder input", "vs", "MSE", "PSNR (dB)", "SSIM"):
        table.add_column(col)
    table.add_row(_model_label(result), "ground truth", _ci(q.mse, 5), _ci(q.psnr_db, 2), _ci(q.ssim, 4))
    if args.codebook:
        for m, vs in ((result.quantized, "ground truth"), (result.penalty, "continuous")):
            table.add_row(f"codebook {args.codebook}", vs, _ci(m.mse, 5), _ci(m.psnr_db, 2), _ci(m.ssim, 4))
    console.print(table)
    if args.codebook:
        u = result.usage_on(args.split)
        console.print(
            f"{result.bits_per_image:.1f} bits/image; {args.split} usage {u.used}/{u.n_codes} codes ({u.dead} dead), "
            f"entropy {u.entropy_bits:.2f} bits, perplexity {u.perplexity:.1f}; fitted on {result.fit_on} ({result.n_fit} vectors)"
        )
        _print_graph(args, result.graph)
    console.print(f"95% CIs over images. SSIM: Gaussian window {q.ssim_window['size']}, sigma {q.ssim_window['sigma']:.3g}. "
                  f"JSON: {_eval_file(args)}")


def _cmd_features_train(args: argparse.Namespace) -> int:
    from posthoc_vq.evaluation.perceptual import train_feature_net

    with _own_bars(args):
        f = train_feature_net(args.dataset, args.out, data_dir=args.data_dir, epochs=args.epochs, seed=args.seed, progress=_bars(args), console=notes,
                              device=_device(args))
    m = f.meta
    _say(args, f"{args.dataset} feature net: test accuracy {m['test_accuracy']:.2%} (train {m['train_accuracy']:.2%}), {m['steps']} steps in {m['seconds']:.1f}s; saved {f.path}")
    return EXIT_OK


def _cmd_quantize(args: argparse.Namespace) -> int:
    from posthoc_vq.config import load_quantize_config
    from posthoc_vq.pipeline import quantize

    overrides = list(args.set)
    for key in ("method", "K", "latents", "fit_on", "n_stages", "n_neighbors"):
        value = getattr(args, key)
        if value is not None:
            overrides.append(f"quantize.{key}={value}")
    if args.seed is not None:
        overrides.append(f"quantize.random_state={args.seed}")
    q = load_quantize_config(args.preset, overrides)
    if args.name is not None:
        q.name = args.name  # validated on assignment: a name that leaves the run is refused here
    with _progress(args) as progress:
        name, estimator, meta, folder = quantize(args.run, q, data_dir=args.data_dir, progress=progress, device=_device(args))
    u = meta["fit_usage"]
    per_class = f" ({estimator.codes_per_class_} per class x {len(estimator.classes_)} classes)" if estimator.needs_labels else ""
    _say(args,
         f"{name}: K={estimator.n_codes}{per_class}, D={estimator.dim}, {meta['bits_per_image']:.1f} bits/image, fitted on {meta['fit_on']} "
         f"({meta['n_fit']} {meta['latents']} vectors) in {meta['fit_seconds']:.1f}s; usage {u['used']}/{u['n_codes']}, entropy {u['entropy_bits']:.2f} bits")
    _print_graph(args, meta.get("graph"))
    _say(args, f"saved {folder}/")
    return EXIT_OK


def _cmd_finetune(args: argparse.Namespace) -> int:
    from posthoc_vq.pipeline import finetune

    out = args.out or f"{Path(args.run)}-ft-{args.codebook}"
    with _own_bars(args):
        r = finetune(args.run, args.codebook, out, tracking=_tracking(args), epochs=args.epochs, part=args.part, lr=args.lr, patience=args.patience,
                     resume=args.resume, data_dir=args.data_dir, progress=_bars(args), console=notes, device=_device(args))
    state = "converged (early stopping)" if r.converged else "stopped at max epochs (not converged)"
    c = r.compute
    _say(args,
         f"{out}: fine-tuned {r.part} on codebook {r.codebook} of {r.source}: {r.epochs} epochs, val recon {r.val_loss_before:.4f} -> "
         f"{r.best_val_loss:.4f} (best epoch {r.best_epoch}), {state}; compute {c['wall_seconds']:.1f}s, {c['optimizer_steps']} steps, "
         f"{c['images_seen']} images; evaluate with `posthoc-vq evaluate {out} --codebook {r.codebook}`",
         highlight=False, soft_wrap=True)
    return EXIT_OK


def _cmd_table(args: argparse.Namespace) -> int:
    from posthoc_vq.report.codebook_table import TIDY_COLUMNS, load_results, tidy_rows, write_codebook_table

    fmt = _machine(args)
    paths = write_codebook_table(args.run, args.out, split=args.split, x=args.x)
    if fmt:
        cont, books = load_results(args.run, args.split)
        _emit(args, tidy_rows(cont, books, args.split), TIDY_COLUMNS)
    elif not _quiet(args):
        sys.stdout.write(paths["markdown"].read_text())  # raw: a Markdown table is never wrapped
    _say(args, f"wrote {paths['markdown']}, {paths['csv']}, {paths['figure']}", highlight=False, soft_wrap=True)
    return EXIT_OK


def _cmd_geometry(args: argparse.Namespace) -> int:
    from posthoc_vq.evaluation.geometry import geometry_of_run
    from posthoc_vq.report.geometry_figure import write_geometry_figure

    fmt = _machine(args)
    with _progress(args) as progress:
        r = geometry_of_run(args.run, split=args.split, data_dir=args.data_dir, seed=args.seed, progress=progress)
    figure = write_geometry_figure(args.run, args.split)
    if fmt:
        from posthoc_vq.report.result_rows import geometry_rows

        _emit(args, geometry_rows(r), ("metric", "value"), json_value=r)
    elif not _quiet(args):
        dims, dist, cls, conn = r["intrinsic_dimension"], r["distortion"], r["classes"], r["connectivity"]
        console.print(f"{args.run} {args.split}: {r['n_vectors']} latent vectors of {dims['ambient']} dims")
        console.print(f"intrinsic dimension: TwoNN {dims['twonn']:.2f}, MLE {dims['mle']:.2f} (k={dims['mle_k']}; n={r['samples']['dimension']})")
        if dist["slope"] is not None:
            console.print(f"k-means distortion: slope {dist['slope']:.3f} over K={dist['K'][0]}..{dist['K'][-1]}, d_eff {dist['d_eff']:.2f} (n={r['samples']['distortion']})")
        console.print(f"kNN graph: smallest connected k {conn['connected_k'] if conn['connected_k'] is not None else 'none up to ' + str(conn['k'][-1])}")
        if cls["separation"] is not None:
            console.print(f"classes: pooled spread {cls['spread_overall']:.3f}, separation {cls['separation']:.2f} (closest pair {cls['separation_min']:.2f}), Fisher ratio {cls['fisher_ratio']:.2f}")
    from posthoc_vq.pipeline import geometry_file

    _say(args, f"wrote {geometry_file(args.run, args.split)} and {figure}", highlight=False, soft_wrap=True)
    return EXIT_OK


def _cmd_amenability(args: argparse.Namespace) -> int:
    from posthoc_vq.experiments.amenability import amenability, markdown, verdict
    from posthoc_vq.io import write_json, write_text
    from posthoc_vq.report.amenability_figure import draw_amenability

    fmt = _machine(args)
    out = Path(args.out or Path("runs") / "amenability")
    with _progress(args) as progress:
        each_run = (lambda i, n, _run: progress("latent geometry of each run", i, n)) if progress else None
        result = amenability(args.sweeps, method=args.method, split=args.split, data_dir=args.data_dir, compute=not args.no_compute, progress=each_run)
    lines = verdict(result["pooled"])
    write_json(out / "amenability.json", result)
    write_text(out / "amenability.md", markdown(result))
    figure = draw_amenability(result, out / "amenability.png")
    if fmt:
        from posthoc_vq.report.result_rows import amenability_rows

        _emit(args, amenability_rows(result), json_value=result)
    else:
        _say(args, f"{result['question']} ({result['n_configurations']} configurations of {result['n_runs']} converged runs, "
                   f"{result['n_datasets']} datasets)", markup=False, soft_wrap=True)
        for x in lines:
            _say(args, f"  {x}", markup=False, soft_wrap=True)
    _say(args, f"wrote {out / 'amenability.json'}, {out / 'amenability.md'} and {figure}", highlight=False, soft_wrap=True)
    return EXIT_OK


def _cmd_report(args: argparse.Namespace) -> int:
    from posthoc_vq.report.build import write_report

    # the report reads stored results and samples only: it needs no data and no model
    out = args.out or Path(args.path) / "report"
    with _own_bars(args):
        result = write_report(args.path, out, split=args.split, progress=_bars(args), console=notes)
    report = result["report"]
    _say(args, f"{report.kind} report: {len(report.sections)} sections, {len(result['figures'])} figures; wrote {result['markdown']} and {result['html']}",
         highlight=False, soft_wrap=True)
    for m in report.missing:
        err_console.print(f"[yellow]missing:[/] {m}", highlight=False, soft_wrap=True)
    return EXIT_OK


def _cmd_compress_weights(args: argparse.Namespace) -> int:
    from posthoc_vq.config import WeightsConfig, validate
    from posthoc_vq.pipeline import compress_weights, eval_file
    from posthoc_vq.report.result_rows import EVALUATION_COLUMNS, evaluation_rows, size_rows

    fmt = _machine(args)
    fields = {"bits": args.bits, "symmetric": not args.asymmetric, "granularity": args.granularity, "group_size": args.group_size,
              "fold_bn": args.fold_bn, "skip": args.skip, "float_dtype": args.float_dtype, "name": args.name}
    config = validate({k: v for k, v in fields.items() if v is not None}, WeightsConfig, source="compress-weights options")
    with _progress(args) as progress:
        name, record, result = compress_weights(args.run, config, evaluate=not args.no_eval, split=args.split, data_dir=args.data_dir,
                                                codebook=args.codebook, progress=progress)
    _say(args,
         f"{name}: {record['quantized_parameters']:,} of {record['num_parameters']:,} parameters quantized; packed file "
         f"{record['packed_file_bytes']:,} bytes vs fp32 file {record['fp32_file_bytes']:,} bytes = {100 * record['size_ratio']:.1f}% "
         f"({record['compression_factor']:.2f}x smaller); worst weight error {max(e['max_error_over_scale'] for e in record['layers'].values()):.3f} x scale")
    if result is None:
        if fmt:
            _emit(args, size_rows(name, record), EVALUATION_COLUMNS, json_value=record)
        return EXIT_OK
    if fmt:
        _emit(args, evaluation_rows(result), EVALUATION_COLUMNS, json_value=result)
    elif not _quiet(args):
        table = Table(title=f"{args.run} — {name}, {result.dataset} {args.split} split, {result.quantized.n_images} images")
        for col in ("model", "vs", "PSNR (dB)", "SSIM", "PSNR change vs fp32 (dB)"):
            table.add_column(col)
        blocks = [("", result)] + ([(f" + codebook {args.codebook}", result.with_codebook)] if args.codebook else [])
        for label, r in blocks:
            table.add_row(f"fp32{label}", "ground truth", _ci(r.continuous.psnr_db, 2), _ci(r.continuous.ssim, 4), "-")
            table.add_row(f"{name}{label}", "ground truth", _ci(r.quantized.psnr_db, 2), _ci(r.quantized.ssim, 4), _ci(r.psnr_change_db, 3))
            table.add_row(f"{name}{label}", "fp32 output", _ci(r.penalty.psnr_db, 2), _ci(r.penalty.ssim, 4), "-")
        console.print(table)
    _say(args, f"95% CIs over images. JSON: {eval_file(args.run, args.split, weights=name, codebook=args.codebook)}", highlight=False, soft_wrap=True)
    _warn(result.warnings)
    return EXIT_OK


def _cmd_compress_table(args: argparse.Namespace) -> int:
    from posthoc_vq.evaluation.compression import write_compression_results
    from posthoc_vq.report.compression_table import TIDY_COLUMNS, read_compression, tidy_rows, write_compression_table

    fmt = _machine(args)
    try:
        bits = [int(b) for b in args.bits.split(",") if b.strip()]
    except ValueError:
        raise ConfigError(f"--bits {args.bits!r}: give a comma list among 32, 8, 4 (e.g. 32,8,4)") from None
    out = args.out or str(Path("runs") / "compression")
    with _progress(args) as progress:
        measured = write_compression_results(args.runs, out, bits, split=args.split, data_dir=args.data_dir, progress=progress)  # measures, stores the JSON
    paths = write_compression_table(measured)  # formats the stored JSON into .md and .csv beside it
    if fmt:
        _, data = read_compression(measured)
        _emit(args, tidy_rows(data.rows), TIDY_COLUMNS, json_value=data)
    elif not _quiet(args):
        sys.stdout.write(paths["markdown"].read_text())  # raw: a Markdown table is never wrapped
    _say(args, f"wrote {paths['markdown']}, {paths['csv']}, {paths['json']}", highlight=False, soft_wrap=True)
    return EXIT_OK


def _cmd_export(args: argparse.Namespace) -> int:
    from posthoc_vq.export.onnx import export_run

    if args.format == "onnx":  # the old meaning of --format on this command: the model format, now --model-format
        notes.print("posthoc-vq: export --format onnx is deprecated; use --model-format onnx (--format is the format of the printed table)", highlight=False, soft_wrap=True)
        args.format = None
    fmt = _machine(args)
    if args.codec:
        return _export_codec(args, fmt)
    if args.codebook:
        raise ConfigError("export: --codebook goes with --codec (the decoder-only codec folder); without --codec the whole model is exported")
    with _progress(args) as progress:
        record = export_run(args.run, args.out, int8=args.int8, calibration_size=args.calibration_size, seed=args.seed, data_dir=args.data_dir,
                            progress=progress)
    if fmt:
        from posthoc_vq.report.result_rows import export_rows

        _emit(args, export_rows(record), json_value=record)
        return EXIT_OK
    for key, f in record["files"].items():
        _say(args, f"{key}: {f['path']} ({f['bytes']:,} bytes), max |onnxruntime - torch| = {f['max_abs_diff_vs_torch']:.2e} on {f['check_batch']} test images",
             highlight=False, soft_wrap=True)
    return EXIT_OK


def _cmd_compress(args: argparse.Namespace) -> int:
    from posthoc_vq.evaluation.bitstreams import compress_to_folder

    with _progress(args) as progress:
        record = compress_to_folder(args.run, args.codebook, args.out, split=args.split, images=args.images, prior=args.prior,
                                    per_image=args.per_image, data_dir=args.data_dir, progress=progress)
    if _machine(args):
        _emit(args, [{k: v for k, v in record.items() if k != "files"} | {"n_files": len(record["files"])}], json_value=record)
        return EXIT_OK
    _say(args, f"wrote {len(record['files'])} file(s) to {args.out}: {record['n_images']} image(s), {record['bytes']:,} bytes, "
               f"{record['bpp']:.4f} bits per pixel (file bytes x 8 / pixels, header included; {record['prior']} prior)", highlight=False, soft_wrap=True)
    return EXIT_OK


def _cmd_decompress(args: argparse.Namespace) -> int:
    from posthoc_vq.evaluation.bitstreams import decompress_to_folder

    with _progress(args) as progress:
        record = decompress_to_folder(args.run, args.files, args.out, progress=progress)
    if _machine(args):
        _emit(args, [{"n_files": len(record["files"]), "n_images": record["n_images"], "out": args.out}], json_value=record)
        return EXIT_OK
    _say(args, f"decoded {len(record['files'])} file(s) to {record['n_images']} PNG image(s) in {args.out}", highlight=False, soft_wrap=True)
    return EXIT_OK


def _quality_ladder(item: str) -> tuple[str, list[int]]:
    """``CODEC=Q,Q,...`` (``--qualities``) as (codec, [Q, ...])."""
    codec, sep, values = item.partition("=")
    try:
        if sep:
            return codec.strip(), [int(q) for q in values.split(",")]
    except ValueError:
        pass
    raise ConfigError(f"--qualities {item!r}: expected CODEC=Q,Q,... with integer qualities, e.g. jpeg=1,3,5,10,20")


def _cmd_codecs(args: argparse.Namespace) -> int:
    from posthoc_vq.api import compare_codecs

    codecs = [c.strip() for c in args.codecs.split(",")] if args.codecs else None
    qualities = dict(_quality_ladder(item) for item in args.qualities)
    with _progress(args) as progress:
        result = compare_codecs(args.target, split=args.split, out=args.out, codecs=codecs, n_images=args.n_images, n_boot=args.n_boot,
                                data_dir=args.data_dir, progress=progress, with_runs=args.with_runs, qualities=qualities or None)
    if _machine(args):
        _emit(args, [{k: r.get(k) for k in ("test", "anchor", "method", "bd_rate_percent", "bd_psnr_db", "comparable", "reason")} for r in result["bd"]],
              json_value={k: v for k, v in result.items() if k != "ladder"})
        return EXIT_OK
    if not _quiet(args):
        sys.stdout.write(Path(result["paths"]["md"]).read_text())
    _say(args, f"wrote {result['paths']['json']}, {result['paths']['md']}, {result['paths']['png']}", highlight=False, soft_wrap=True)
    return EXIT_OK


def _export_codec(args: argparse.Namespace, fmt: str | None) -> int:
    from posthoc_vq.export.codec import export_codec

    if not args.codebook:
        raise ConfigError("export --codec needs --codebook NAME (a post-hoc codebook of the run, or 'trained' for its own quantizer)")
    with _progress(args) as progress:
        manifest = export_codec(args.run, args.codebook, args.out, int8=True, calibration_size=args.calibration_size, seed=args.seed,
                                data_dir=args.data_dir, progress=progress)
    if fmt:
        _emit(args, [{"decoder": k, **{c: d.get(c) for c in ("file", "bytes", "format", "max_abs_diff_vs_torch")}} for k, d in manifest["decoders"].items()],
              json_value=manifest)
        return EXIT_OK
    for key, d in manifest["decoders"].items():
        _say(args, f"{key}: {d['file']} ({d['bytes']:,} bytes, {d.get('format', 'fp32')}), max |onnxruntime - torch| = {d['max_abs_diff_vs_torch']:.2e}",
             highlight=False, soft_wrap=True)
    folder = args.out or Path(args.run) / "export" / f"codec-{args.codebook}"
    _say(args, f"wrote the codec folder {folder}: decode with posthoc_vq.codec.runtime.CodecRuntime (numpy, onnxruntime, constriction)",
         highlight=False, soft_wrap=True)
    return EXIT_OK


def _cmd_ablate(args: argparse.Namespace) -> int:
    from posthoc_vq.api import ablate
    from posthoc_vq.experiments import load_sweep_spec
    from posthoc_vq.pipeline import claims_file

    out = args.out or str(Path("runs") / "sweeps" / load_sweep_spec(args.spec).name)
    with _own_bars(args):
        claims = ablate(args.spec, out, tracking=_tracking(args), executor=args.executor, workers=args.workers, address=args.address,
                        data_dir=args.data_dir, progress=_bars(args), console=notes, only=args.only, device=args.device)
    pending = f", {claims['n_pending']} not run yet (run the same command without --only to do them)" if claims.get("n_pending") else ""
    _say(args, f"{out}: {claims['n_done']}/{claims['n_cells']} cells done ({claims['ran_now']} run now, {claims['n_failed']} failed{pending})")
    _say(args, "verdicts: " + ", ".join(f"{v} {n}" for v, n in claims["counts"].items()))
    _say(args, f"wrote {claims_file(out)} and claims.json; query with `posthoc-vq results {out}`", highlight=False, soft_wrap=True)
    if claims["n_failed"]:
        err_console.print(f"[bold red]error:[/] {claims['n_failed']} of {claims['n_cells']} cells failed; `posthoc-vq results {out} --where status=failed` "
                          "shows them (running the same command again retries them)", highlight=False, soft_wrap=True)
        return EXIT_FAILED
    return EXIT_OK


def _cmd_results(args: argparse.Namespace) -> int:
    from posthoc_vq.experiments import results_table

    fmt = _machine(args)
    rows = results_table(args.sweep, args.where)
    if fmt:
        _emit(args, rows)
    elif not _quiet(args):  # for people: the axes (the keys before 'status'), the status and the main metrics
        table = Table(title=f"{args.sweep}: {len(rows)} cells", caption="every stored metric: --format csv|json|markdown")
        keys = list(rows[0]) if rows else []
        main_metrics = ("psnr_db", "ssim", "mse", "continuous_psnr_db", "bits_per_image", "converged", "seconds")
        cols = keys[: keys.index("status") + 1] + [k for k in main_metrics if k in keys] if rows else []
        for col in cols:
            table.add_column(col)
        for r in rows:
            table.add_row(*["" if r[c] is None else f"{r[c]:.4g}" if isinstance(r[c], float) else str(r[c]) for c in cols])
        console.print(table)
    return EXIT_OK


def _cmd_presets(args: argparse.Namespace) -> int:
    from posthoc_vq.config import list_configs

    listing = list_configs()
    if args.format == "text":
        args.format = HUMAN
    fmt = _machine(args)
    if fmt:
        from posthoc_vq.report.result_rows import preset_rows

        _emit(args, preset_rows(listing), ("kind", "name", "files", "path"), json_value=listing)
        return EXIT_OK
    if _quiet(args):
        return EXIT_OK
    # plain text, one line each, never wrapped: the configs folder, then `preset NAME FILES...`, then `ablation NAME PATH`
    width = max([len(p["name"]) for p in listing["presets"] + listing["ablations"]] + [8])
    origin = f"${listing['source']}" if listing["source"] != "package" else "the package's own; set $POSTHOC_VQ_CONFIGS to use another folder"
    lines = [f"configs  {listing['root']}  ({origin})"]
    lines += [f"preset   {p['name']:<{width}}  {' '.join(p['files'])}" for p in listing["presets"]]
    lines += [f"ablation {a['name']:<{width}}  {a['path']}" for a in listing["ablations"]]
    sys.stdout.write("\n".join(lines) + "\n")
    return EXIT_OK


def _cmd_data_download(args: argparse.Namespace) -> int:
    from posthoc_vq.data import download, resolve_data_dir

    with _own_bars(args):
        paths = download(args.name, args.data_dir, base_url=args.base_url, progress=_bars(args))
    _say(args, f"{args.name}: {len(paths)} files in {resolve_data_dir(args.data_dir) / args.name}")
    return EXIT_OK


# ----------------------------------------------------------------------------- parser


class _Version(argparse.Action):
    """``--version``: the installed distribution's version (importlib.metadata), looked up only when asked."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, default: Any = argparse.SUPPRESS, help: str | None = None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option_string: str | None = None) -> None:
        sys.stdout.write(f"posthoc-vq {package_version()}\n")
        parser.exit()


def package_version() -> str:
    """The version of the installed ``posthoc-vq`` distribution, or 'unknown' when it is not installed (a bare checkout on sys.path)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("posthoc-vq")
    except PackageNotFoundError:
        return "unknown (not installed)"


class _Deprecated(argparse.Action):
    """The old spelling of a renamed option: still works, hidden from --help, and says on stderr what replaced it."""

    def __init__(self, option_strings: list[str], dest: str, *, replacement: str, const: Any = None, nargs: Any = None, **kwargs: Any):
        self.replacement = replacement
        kwargs["help"] = argparse.SUPPRESS
        super().__init__(option_strings, dest, nargs=0 if const is not None else nargs, const=const, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option_string: str | None = None) -> None:
        sys.stderr.write(f"posthoc-vq: {option_string} is deprecated; use {self.replacement}\n")
        setattr(namespace, self.dest, self.const if self.nargs == 0 else values)


def _common() -> argparse.ArgumentParser:
    """Options every command takes (also accepted before the command): --quiet and --no-progress."""
    common = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="no progress bars and no informational lines; results asked for with --format, warnings and errors still appear")
    common.add_argument("--no-progress", action="store_true", default=argparse.SUPPRESS, help="no progress bars")
    return common


def _add_format(p: argparse.ArgumentParser, human: str = HUMAN, extra: tuple[str, ...] = ()) -> None:
    """--format and -o/--output of a command that prints a table."""
    p.add_argument("--format", default=None, choices=(human, *MACHINE_FORMATS, *extra), metavar="{" + ",".join((human, *MACHINE_FORMATS)) + "}",
                   help=f"{human} (default): for people; csv (tidy), json or markdown: raw, never wrapped, and nothing else on stdout")
    p.add_argument("-o", "--output", default=None, metavar="FILE",
                   help="write the csv/json/markdown table to FILE (atomically) instead of stdout; the format follows --format, else the suffix")


def _add_data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", default=None, help="data root (else $POSTHOC_VQ_DATA, else ~/.cache/posthoc_vq)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="posthoc-vq", description="Post-hoc quantization of trained VAEs, with honest evaluation.",
                                     epilog="exit codes: 0 success, 1 failed work, 2 usage or input error. "
                                            "Shell completion: eval \"$(register-python-argcomplete posthoc-vq)\"", allow_abbrev=False)
    parser.add_argument("--version", action=_Version, help="print the installed version and exit")
    parser.add_argument("-q", "--quiet", action="store_true", default=False, help="no progress bars and no informational lines (any command)")
    parser.add_argument("--no-progress", action="store_true", default=False, help="no progress bars (any command)")
    sub = parser.add_subparsers(dest="command", required=True)
    common = _common()

    def command(name: str, **kwargs: Any) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], allow_abbrev=False, **kwargs)

    p = command("train", help="train a VAE into a run directory")
    p.add_argument("--preset", default=None, help="dataset preset (default: digits; `posthoc-vq presets` lists them) or a folder")
    p.add_argument("--out", default=None, help="run directory (default runs/<preset>)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="dotted override, e.g. train.epochs=5")
    p.add_argument("--seed", type=_seed, default=None, help="seed of the run's initialisation and data order (the config's seed)")
    _add_data_dir(p)
    p.add_argument("--resume", action="store_true", help="continue from the run's newest checkpoint")
    _add_device(p, "training (a run may be resumed on another device)")
    _add_track(p)
    p.set_defaults(func=_cmd_train)

    p = command("import", help="make a run directory from a pretrained autoencoder (taef2), so every command works on it")
    p.add_argument("model", choices=("taef2",), help="which pretrained network")
    p.add_argument("--weights", required=True, help="folder holding its original weight files (e.g. ../shared/models/taef2)")
    p.add_argument("--out", default=None, help="run directory (default runs/<model>)")
    p.add_argument("--data", default="bsds500-kodak", help="dataset the run's commands use (default bsds500-kodak: fit on BSDS500, test on Kodak)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="data override, e.g. data.max_train_images=16")
    _add_data_dir(p)
    p.set_defaults(func=_cmd_import)

    p = command("presets", help="list the dataset presets (with their files) and the ablation specs that ship with posthoc-vq")
    _add_format(p, extra=("text",))
    p.set_defaults(func=_cmd_presets)

    p = command("evaluate", help="test-set MSE/PSNR/SSIM of a run, with 95%% CIs")
    p.add_argument("run", help="run directory")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    _add_data_dir(p)
    p.add_argument("--codebook", default=None, help="evaluate this codebook of the run (name under RUN/codebooks)")
    p.add_argument("--weights", default=None, help="evaluate the run's packed weights NAME (under RUN/weights, from compress-weights) in place of the fp32 model; with --codebook, both")
    _add_format(p)
    p.add_argument("--json", dest="format", action=_Deprecated, const="json", replacement="--format json")
    p.add_argument("--metrics", default="psnr,ssim", help="comma list of mse,psnr,ssim (pixel) and fd,kid,pr,diversity,interp,lpips (offline, in a domain classifier's feature space)")
    p.add_argument("--features", default=None, help="feature-network folder for fd/kid/pr/diversity/interp (default $POSTHOC_VQ_FEATURES/<dataset>, else ~/.cache/posthoc_vq/features/<dataset>)")
    p.add_argument("--samples", type=_count(1, MAX_SAMPLES), default=None, help=f"generated images per sample set (default: as many as the split; at most {MAX_SAMPLES:,})")
    p.add_argument("--pairs", type=_count(1, MAX_PAIRS), default=100, help=f"test pairs for interp (at most {MAX_PAIRS:,})")
    p.add_argument("--seed", type=_seed, default=0, help="seed of the samples, pairs and KID subsets drawn")
    p.add_argument("--lpips-weights", default=None, help="local torchvision AlexNet weights for lpips (never downloaded)")
    _add_device(p, "encoding and decoding for the pixel metrics (mse, psnr, ssim), of the fp32 model and of --weights (codes are assigned, "
                   "metrics computed and the offline metrics run on CPU)")
    _add_track(p)
    p.set_defaults(func=_cmd_evaluate)

    p = command("quantize", help="fit a post-hoc latent codebook on a trained run")
    p.add_argument("run", help="run directory")
    p.add_argument("--preset", default=None, help="quantize preset: a YAML path or e.g. fashion-mnist/quantize-geodesic (`posthoc-vq presets` lists them)")
    p.add_argument("--method", default=None, help="kmeans | geodesic | hybrid | residual | random-prior | class-conditional")
    p.add_argument("--K", type=int, default=None, help="codebook size (per stage for residual; total budget, split equally over the classes, for class-conditional)")
    p.add_argument("--latents", default=None, help="mu (default) or z")
    p.add_argument("--fit-on", dest="fit_on", default=None, help="train (default), train+val, train+test (transductive)")
    p.add_argument("--n-stages", dest="n_stages", type=int, default=None, help="residual stages M (quantize.n_stages)")
    p.add_argument("--stages", dest="n_stages", type=int, action=_Deprecated, replacement="--n-stages")
    p.add_argument("--n-neighbors", dest="n_neighbors", type=_int_or_auto, default=None, help="k of the kNN graph, or 'auto' (connectivity rule) (quantize.n_neighbors)")
    p.add_argument("--neighbors", dest="n_neighbors", type=_int_or_auto, action=_Deprecated, replacement="--n-neighbors")
    p.add_argument("--seed", type=_seed, default=None, help="seed of the fit's random draws (quantize.random_state)")
    p.add_argument("--name", default=None, help="codebook name (default from method, K, latents, fit set)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="dotted override, e.g. quantize.max_iter=20")
    _add_data_dir(p)
    _add_device(p, "encoding the fit set's images (the fit itself runs on CPU)")
    p.set_defaults(func=_cmd_quantize)

    p = command("finetune", help="fine-tune a run's decoder (and optionally its codebook) on a codebook's quantized latents, into a new run")
    p.add_argument("run", help="source run directory (only read)")
    p.add_argument("--codebook", required=True, help="codebook of the source run (name under RUN/codebooks)")
    p.add_argument("--out", default=None, help="new run directory (default RUN-ft-CODEBOOK)")
    p.add_argument("--epochs", type=int, default=20, help="most epochs (early stopping on the val reconstruction loss)")
    p.add_argument("--part", default="decoder", choices=("decoder", "decoder+codebook"), help="what is trained; the encoder is always frozen")
    p.add_argument("--lr", type=float, default=None, help="Adam learning rate (default: the run's train.lr)")
    p.add_argument("--patience", type=int, default=None, help="epochs without val improvement before stopping (default: the run's train.patience)")
    _add_data_dir(p)
    p.add_argument("--resume", action="store_true", help="continue the fine-tune in --out from its newest checkpoint")
    _add_device(p, "encoding the train and val images and fine-tuning")
    _add_track(p)
    p.set_defaults(func=_cmd_finetune)

    p = command("table", help="study-style table of a run's evaluated codebooks, and the rate-distortion figure")
    p.add_argument("run", help="run directory")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--out", default=None, help="output folder of codebooks-<split>.md/.csv and the figure (default RUN/report)")
    p.add_argument("--x", default="bits", choices=("bits", "real-bpp"),
                   help="the figure's x axis: nominal bits per image, or real bits per pixel (file bytes x 8, header included)")
    _add_format(p)
    p.set_defaults(func=_cmd_table)

    p = command("geometry", help="latent geometry: intrinsic dimension, k-means distortion slope, class spread, kNN connectivity")
    p.add_argument("run", help="run directory")
    p.add_argument("--split", default="train", help="train (default), val, test or a union such as train+test")
    _add_data_dir(p)
    p.add_argument("--seed", type=_seed, default=0, help="seed of the samples and of k-means")
    _add_format(p)
    p.set_defaults(func=_cmd_geometry)

    p = command("amenability", help="does latent geometry predict the quantization penalty? rank correlations over finished sweeps' runs")
    p.add_argument("sweeps", nargs="+", help="sweep directories (finished or partly finished `posthoc-vq ablate` folders)")
    p.add_argument("--method", default="kmeans", help="codebook method whose penalty is predicted (default kmeans)")
    p.add_argument("--split", default="train", help="split whose latents' geometry is measured (default train)")
    p.add_argument("--out", default=None, help="output folder for amenability.json/.md/.png (default runs/amenability)")
    p.add_argument("--no-compute", action="store_true", help="only read stored geometry; a run without it is an error")
    _add_data_dir(p)
    _add_format(p)
    p.set_defaults(func=_cmd_amenability)

    p = command("report", help="a run's or a sweep's report: report.md with PNG figures, and one self-contained report.html")
    p.add_argument("path", help="run directory or sweep directory")
    p.add_argument("--out", default=None, help="output folder (default PATH/report)")
    p.add_argument("--split", default="test", choices=("train", "val", "test"), help="split of a run's report (a sweep uses its spec's)")
    p.set_defaults(func=_cmd_report)

    p = command("compress-weights", help="INT8/INT4 post-training weight quantization, packed into a file, and its measured quality")
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
    _add_data_dir(p)
    _add_format(p)
    p.set_defaults(func=_cmd_compress_weights)

    p = command("compress-table", help="compound compression: latent size (runs) x weight bits, with sizes and measured quality")
    p.add_argument("runs", nargs="+", help="trained run directories (e.g. one per latent size)")
    p.add_argument("--bits", default="32,8,4", help="comma list among 32, 8, 4")
    p.add_argument("--out", default=None, help="output folder for compression-<split>.md/.csv/.json (default runs/compression)")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    _add_data_dir(p)
    _add_format(p)
    p.set_defaults(func=_cmd_compress_table)

    p = command("export", help="export a run's encoder and decoder for deployment")
    p.add_argument("run", help="run directory")
    p.add_argument("--model-format", default="onnx", choices=("onnx",), help="format of the exported models (onnx)")
    _add_format(p, extra=("onnx",))  # --format onnx: the flag's old meaning here, still accepted with a note
    p.add_argument("--int8", action="store_true", help="also write static QDQ INT8 models calibrated on the train split")
    p.add_argument("--calibration-size", type=int, default=512, help="train images for INT8 calibration")
    p.add_argument("--seed", type=_seed, default=0, help="seed of the draw of the train images that calibrate")
    p.add_argument("--out", default=None, help="output folder (default RUN/export, or RUN/export/codec-<codebook> with --codec)")
    p.add_argument("--codec", action="store_true",
                   help="write the torch-free codec instead: the decoder as ONNX (fp32 and INT8), the codebook and its priors, "
                        "decoded by posthoc_vq.codec.runtime with numpy, onnxruntime and constriction alone")
    p.add_argument("--codebook", default=None, help="with --codec: the codebook (a post-hoc codebook's name, or 'trained')")
    _add_data_dir(p)
    p.set_defaults(func=_cmd_export)

    p = command("compress", help="write images as bitstream files of a codebook's entropy-coded codes (rates in real bytes)")
    p.add_argument("run", help="run directory")
    p.add_argument("--codebook", required=True, help="codebook name (`posthoc-vq table RUN` lists them)")
    p.add_argument("images", nargs="*", help="image files (PNG, JPEG, ...) of the model's size and channels: one .phvq file each")
    p.add_argument("--split", default=None, choices=("train", "val", "test"), help="compress a split of the run's dataset instead of files")
    p.add_argument("--per-image", action="store_true", help="with --split: one file per image instead of one container")
    p.add_argument("--prior", default="empirical", choices=("uniform", "empirical", "context"),
                   help="probability model of the codes: uniform (the nominal rate), empirical (code frequencies), context (token grids)")
    p.add_argument("--out", required=True, help="output folder")
    _add_data_dir(p)
    _add_format(p)
    p.set_defaults(func=_cmd_compress)

    p = command("codecs", help="the standard codecs (JPEG, WebP, AVIF, JPEG XL) on a split, beside a run's coded codebooks, with BD-rate")
    p.add_argument("target", help="a run directory (its dataset, and its evaluations with real rates) or a dataset name")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--codecs", default=None, help="comma list among jpeg, webp, avif, jxl (default: every one installed)")
    p.add_argument("--n-images", type=int, default=None, help="the split's first N images (default: all; a run's evaluations must cover the same N)")
    p.add_argument("--qualities", action="append", default=[], metavar="CODEC=Q,Q,...",
                   help="one codec's quality ladder (repeat per codec), e.g. jpeg=1,3,5,10,20; others keep their default ladder")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples of the images for the BD-rate CIs")
    p.add_argument("--with", dest="with_runs", action="append", default=[], metavar="RUN",
                   help="another run of the same dataset whose coded evaluations join (e.g. a trained VQ run); repeatable")
    p.add_argument("--out", default=None, help="output folder (default RUN/report, or runs/codecs/DATASET)")
    _add_data_dir(p)
    _add_format(p)
    p.set_defaults(func=_cmd_codecs)

    p = command("decompress", help="decode bitstream files back to PNG images, with the run whose model and codebook made them")
    p.add_argument("files", nargs="+", help=".phvq files")
    p.add_argument("--run", required=True, help="run directory holding the model and codebook the files name (checked by sha256)")
    p.add_argument("--out", required=True, help="output folder for the PNG images")
    _add_format(p)
    p.set_defaults(func=_cmd_decompress)

    p = command("ablate", help="run (or resume) a sweep: train every arm over seeds, quantize, evaluate, judge the claims")
    p.add_argument("spec", help="sweep YAML, or the name of a packaged spec (e.g. smoke, latent-dim; `posthoc-vq presets` lists them)")
    p.add_argument("--out", default=None, help="sweep directory (default runs/sweeps/<name>)")
    p.add_argument("--executor", default="local", choices=("local", "process", "ray"))
    p.add_argument("--workers", type=int, default=2, help="processes (process) or CPUs of a local Ray cluster / threads per job (ray)")
    p.add_argument("--address", default=None, help="Ray cluster address (default: start a local cluster)")
    p.add_argument("--only", action="append", default=[], metavar="AXIS=V1[,V2]",
                   help="run this slice of the grid now and leave the rest pending (e.g. data.name=mnist, arm=joint-vq,posthoc-b0.1); "
                        "repeatable, every condition must hold")
    p.add_argument("--device", default="cpu", help="where jobs train and evaluate: cpu (default), cuda, cuda:N, auto; recorded per cell")
    _add_data_dir(p)
    _add_track(p)
    p.set_defaults(func=_cmd_ablate)

    p = command("results", help="query a sweep's results database: every cell's axes, status and stored metrics")
    p.add_argument("sweep", help="sweep directory")
    p.add_argument("--where", action="append", default=[], metavar="KEY=VALUE", help="e.g. model.latent_dim=16, status=failed; repeatable")
    _add_format(p)
    p.set_defaults(func=_cmd_results)

    p = command("data", help="dataset utilities")
    data_sub = p.add_subparsers(dest="data_command", required=True)
    d = data_sub.add_parser("download", parents=[common], allow_abbrev=False, help="fetch a dataset from its official URLs (md5-checked, atomic)")
    d.add_argument("name")
    _add_data_dir(d)
    d.add_argument("--base-url", default=None, help="mirror to fetch the same file names from")
    d.set_defaults(func=_cmd_data_download)

    p = command("features", help="domain feature networks for the offline FD/KID metrics")
    feat_sub = p.add_subparsers(dest="features_command", required=True)
    f = feat_sub.add_parser("train", parents=[common], allow_abbrev=False,
                            help="train a dataset's small classifier (its penultimate layer is the FD feature space)")
    f.add_argument("--dataset", required=True)
    f.add_argument("--out", default=None, help="folder (default $POSTHOC_VQ_FEATURES/<dataset>, else ~/.cache/posthoc_vq/features/<dataset>)")
    _add_data_dir(f)
    f.add_argument("--epochs", type=int, default=None, help="default per dataset (mnist 4, fashion-mnist 5)")
    f.add_argument("--seed", type=_seed, default=0, help="seed of the network's initialisation and data order")
    _add_device(f, "training the feature network")
    f.set_defaults(func=_cmd_features_train)
    return parser


def _autocomplete(parser: argparse.ArgumentParser) -> None:
    """Shell completion through argcomplete (``eval "$(register-python-argcomplete posthoc-vq)"``), only when a shell asks.

    argcomplete is imported only then, so a normal start pays nothing and a missing argcomplete never breaks the CLI
    (the completion request simply ends with no completions).
    """
    if "_ARGCOMPLETE" not in os.environ:
        return
    try:
        import argcomplete
    except ImportError:
        sys.exit(EXIT_FAILED)
    argcomplete.autocomplete(parser)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    _autocomplete(parser)
    args = parser.parse_args(argv)
    quiet = _quiet(args)
    console.quiet = notes.quiet = quiet  # module-level consoles: set on every call (tests call main again and again)
    try:
        return args.func(args)
    except PosthocVQError as err:
        err_console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True)  # escaped: "posthoc-vq[export]" is no markup
        return exit_code(err)
    except BrokenPipeError:  # `posthoc-vq results SWEEP --format csv | head`: the reader left, nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except KeyboardInterrupt:
        err_console.print("[bold red]interrupted[/]", highlight=False)
        return 130


if __name__ == "__main__":
    sys.exit(main())
