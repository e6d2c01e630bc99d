"""The study-style codebook table and the rate-distortion figure of one run.

Reads the evaluation JSONs a run has (``eval/continuous-<split>.json`` and
``eval/<codebook>-<split>.json``) and writes ``codebooks-<split>.md``/``.csv``
and ``rate-distortion-<split>.png``: absolute PSNR/SSIM against ground truth,
the quantization penalty, code usage, dead codes, entropy, bits per image and
graph connectivity, one row per codebook, with the audit's warnings below.
The Markdown is for reading (:data:`COLUMNS`, :func:`table_rows`); the CSV is tidy
(:data:`TIDY_COLUMNS`, :func:`tidy_rows`: numbers only in numeric columns, the CI as
two columns, empty cells for what does not apply).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from typing import Any

from posthoc_vq.errors import PosthocVQError
from posthoc_vq.io import atomic_write, read_json, write_text
from posthoc_vq.report.formats import to_csv
from posthoc_vq.report.tables import markdown_table
from posthoc_vq.run import Run

COLUMNS = (
    "method", "codebook", "fit on", "bits/image", "PSNR (dB)", "PSNR 95% CI", "SSIM", "penalty PSNR (dB)",
    "code usage", "dead codes", "entropy (nats)", "entropy (bits)", "perplexity", "graph nodes", "graph edges", "components",
)
#: columns of the tidy CSV (``--format csv``): ``bits_label`` says what the continuous row's rate is (``fp32``, or ``trained vq``)
TIDY_COLUMNS = (
    "method", "codebook", "fit_on", "bits_per_image", "bits_label", "psnr_db", "psnr_db_ci_low", "psnr_db_ci_high", "ssim", "penalty_psnr_db",
    "codes_used", "n_codes", "dead_codes", "entropy_nats", "entropy_bits", "perplexity", "graph_nodes", "graph_edges", "graph_components",
)


def load_results(run_dir: str | Path | Run, split: str = "test") -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(continuous result, codebook results sorted by fit set, method and bits) of a run's stored evaluations."""
    run = Run.open(run_dir)
    cont_path = run.eval_file(split)
    if not cont_path.exists():
        raise PosthocVQError(f"{cont_path} not found: run `posthoc-vq evaluate {run.root} --split {split}` first")
    cont = read_json(cont_path, what="evaluation result")
    books = [read_json(p, what="evaluation result") for p in run.codebook_eval_files(split).values()]
    books.sort(key=lambda r: (r["fit_on"], r["method"], r["bits_per_image"]))
    return cont, books


def latent_size(result: dict[str, Any]) -> int:
    """Numbers per image in the latent: D, or D * h * w for a latent grid."""
    shape = result["model"].get("latent_shape") or [result["model"]["latent_dim"]]
    return int(np.prod(shape))


def table_rows(cont: dict[str, Any], books: list[dict[str, Any]], split: str = "test") -> list[dict[str, Any]]:
    c = cont["continuous"]
    kind = cont["model"].get("quantizer")  # a model trained with its quantizer: its own output is already quantized
    rows = [{
        "method": f"trained {kind}" if kind else "continuous", "codebook": "-", "fit on": "-",
        "bits/image": f"{cont['bits_per_image']:g} (trained {kind})" if kind else f"{32 * latent_size(cont)} (fp32)",
        "PSNR (dB)": f"{c['psnr_db']['mean']:.2f}", "PSNR 95% CI": f"[{c['psnr_db']['low']:.2f}, {c['psnr_db']['high']:.2f}]",
        "SSIM": f"{c['ssim']['mean']:.4f}", "penalty PSNR (dB)": "-",
    }]
    for r in books:
        q, u, g = r["quantized"], r["usage"][split], r.get("graph") or {}
        rows.append({
            "method": r["method"], "codebook": r["codebook"], "fit on": r["fit_on"], "bits/image": f"{r['bits_per_image']:.0f}",
            "PSNR (dB)": f"{q['psnr_db']['mean']:.2f}", "PSNR 95% CI": f"[{q['psnr_db']['low']:.2f}, {q['psnr_db']['high']:.2f}]",
            "SSIM": f"{q['ssim']['mean']:.4f}", "penalty PSNR (dB)": f"{r['penalty']['psnr_db']['mean']:.2f}",
            "code usage": f"{u['used']}/{u['n_codes']}", "dead codes": str(u["dead"]),
            "entropy (nats)": f"{u['entropy_nats']:.3f}", "entropy (bits)": f"{u['entropy_bits']:.3f}", "perplexity": f"{u['perplexity']:.1f}",
            "graph nodes": str(g.get("nodes", "-")), "graph edges": str(g.get("edges", "-")), "components": str(g.get("components", "-")),
        })
    return rows


def tidy_rows(cont: dict[str, Any], books: list[dict[str, Any]], split: str = "test") -> list[dict[str, Any]]:
    """The rows of :func:`table_rows` as numbers (columns :data:`TIDY_COLUMNS`); None where a column does not apply."""
    c = cont["continuous"]
    kind = cont["model"].get("quantizer")
    rows = [{
        "method": f"trained {kind}" if kind else "continuous", "codebook": None, "fit_on": None,
        "bits_per_image": cont["bits_per_image"] if kind else 32 * latent_size(cont), "bits_label": f"trained {kind}" if kind else "fp32",
        "psnr_db": c["psnr_db"]["mean"], "psnr_db_ci_low": c["psnr_db"]["low"], "psnr_db_ci_high": c["psnr_db"]["high"], "ssim": c["ssim"]["mean"],
    }]
    for r in books:
        q, u, g = r["quantized"], r["usage"][split], r.get("graph") or {}
        rows.append({
            "method": r["method"], "codebook": r["codebook"], "fit_on": r["fit_on"], "bits_per_image": r["bits_per_image"], "bits_label": None,
            "psnr_db": q["psnr_db"]["mean"], "psnr_db_ci_low": q["psnr_db"]["low"], "psnr_db_ci_high": q["psnr_db"]["high"], "ssim": q["ssim"]["mean"],
            "penalty_psnr_db": r["penalty"]["psnr_db"]["mean"], "codes_used": u.get("used"), "n_codes": u.get("n_codes"), "dead_codes": u.get("dead"),
            "entropy_nats": u.get("entropy_nats"), "entropy_bits": u.get("entropy_bits"), "perplexity": u.get("perplexity"),
            "graph_nodes": g.get("nodes"), "graph_edges": g.get("edges"), "graph_components": g.get("components"),
        })
    return rows


def markdown(rows: list[dict[str, Any]], cont: dict[str, Any], books: list[dict[str, Any]], split: str) -> str:
    n = cont["continuous"]["n_images"]
    notes = [
        f"Run `{cont['run']}`, dataset {cont['dataset']}, {split} split ({n} images); latents: posterior means unless the codebook name says z.",
        "PSNR/SSIM: decoded outputs in [0, 1] against ground truth (per-image mean, 95% CI over images). "
        "Penalty: quantized output against the continuous output. Code usage, entropy and perplexity on the evaluated split.",
        f"Training: {cont['training'].get('stop_reason')} after {cont['training'].get('epochs')} epochs (converged: {cont['training'].get('converged')}).",
    ]
    model_codes = {w["code"] for w in cont.get("warnings", [])}  # repeated in every codebook's result
    warnings = [f"model: {w['message']}" for w in cont.get("warnings", [])]
    warnings += [f"{r['codebook']}: {w['message']}" for r in books for w in r.get("warnings", []) if w["code"] not in model_codes]
    text = markdown_table(COLUMNS, rows) + "\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    if warnings:
        text += "\nAudit warnings:\n" + "\n".join(f"- {w}" for w in warnings) + "\n"
    return text


def rate_distortion_figure(cont: dict[str, Any], books: list[dict[str, Any]], path: Path) -> None:
    """PSNR against bits per image, with 95% CIs; the continuous model as a horizontal line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    c = cont["continuous"]["psnr_db"]
    ax.set_xscale("log", base=2)
    kind = cont["model"].get("quantizer")
    own = f"trained {kind} ({cont['bits_per_image']:g} bits/image)" if kind else "continuous (mu)"
    ax.axhline(c["mean"], color="black", lw=1.2, label=f"{own}, {c['mean']:.2f} dB")
    ax.axhspan(c["low"], c["high"], color="black", alpha=0.08)
    # colour = method, filled marker = fitted on train only, open marker + dashed = fit set includes test
    methods = sorted({r["method"] for r in books})
    colours = dict(zip(methods, plt.get_cmap("tab10").colors))
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in books:
        groups.setdefault((r["method"], r["fit_on"]), []).append(r)
    offsets = {m: 1.0 + 0.012 * (i - len(methods) / 2) for i, m in enumerate(methods)}  # small x-dodge so equal rates stay visible
    for (method, fit_on), rs in sorted(groups.items()):
        rs = sorted(rs, key=lambda r: r["bits_per_image"])
        transductive = any(r["fit_includes_test"] for r in rs)
        x = [r["bits_per_image"] * offsets[method] for r in rs]
        y = [r["quantized"]["psnr_db"]["mean"] for r in rs]
        err = [[r["quantized"]["psnr_db"]["mean"] - r["quantized"]["psnr_db"]["low"] for r in rs], [r["quantized"]["psnr_db"]["high"] - r["quantized"]["psnr_db"]["mean"] for r in rs]]
        ax.errorbar(
            x, y, yerr=err, marker="o", capsize=3, color=colours[method], ls=("--" if transductive else "-") if len(rs) > 1 else "none",
            mfc="white" if transductive else colours[method], label=f"{method} (fit on {fit_on})",
        )
    rates = sorted({r["bits_per_image"] for r in books})
    ax.set_xticks(rates, [f"{b:g}" for b in rates])
    ax.minorticks_off()
    ax.set_xlabel("bits per image")
    ax.set_ylabel("test PSNR vs ground truth (dB)")
    ax.set_title(f"{cont['dataset']}: post-hoc codebooks, rate against distortion")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right", ncol=2)
    fig.tight_layout()
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def write_codebook_table(run_dir: str | Path | Run, out_dir: str | Path | None = None, split: str = "test") -> dict[str, Path]:
    """Write the table (Markdown, tidy CSV) and the rate-distortion PNG; returns their paths."""
    run = Run.open(run_dir)
    out = Path(out_dir) if out_dir else run.report_dir
    cont, books = load_results(run, split)
    rows = table_rows(cont, books, split)
    paths = {"markdown": out / f"codebooks-{split}.md", "csv": out / f"codebooks-{split}.csv", "figure": out / f"rate-distortion-{split}.png"}
    with atomic_write(paths["markdown"]) as tmp:
        tmp.write_text(markdown(rows, cont, books, split))
    write_text(paths["csv"], to_csv(tidy_rows(cont, books, split), TIDY_COLUMNS))
    rate_distortion_figure(cont, books, paths["figure"])
    return paths
