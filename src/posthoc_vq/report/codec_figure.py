"""The codec rate-distortion figure and table: coded post-hoc codebooks and trained quantizers beside the standard codecs.

Reads plain data only (:func:`posthoc_vq.evaluation.rd_comparison.public` curves, the standard codecs' mean points,
BD rows); the x axis is real bits per pixel (file bytes x 8 / pixels, header included), log scale.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from posthoc_vq.io import atomic_write
from posthoc_vq.report.tables import markdown_table


def standard_points(ladder: dict[str, Any]) -> dict[str, dict[str, list[float]]]:
    """Mean bpp, PSNR and SSIM of each standard codec's quality ladder."""
    return {c: {"qualities": [p["quality"] for p in s["points"]], "bpp": [p["bpp"]["mean"] for p in s["points"]],
                "psnr_db": [p["psnr_db"]["mean"] for p in s["points"]], "ssim": [p["ssim"]["mean"] for p in s["points"]]}
            for c, s in ladder["codecs"].items()}


def codec_rd_figure(series: dict[str, dict[str, Any]], standard: dict[str, dict[str, Any]], path: Path, *, title: str,
                    continuous_psnr_db: float | None = None, footnote: str | None = None) -> None:
    """PSNR against real bpp: standard codecs (squares), coded curves (circles; dotted: one container for the split), trained quantizers (stars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 5.2), dpi=120)
    colours = list(plt.get_cmap("tab10").colors)
    for i, (name, s) in enumerate(standard.items()):
        ax.plot(s["bpp"], s["psnr_db"], "-", marker="s", ms=4, color=colours[i % 10], label=f"{name.upper()} (its own file per image)")
    for j, (name, s) in enumerate(series.items()):
        col = "black" if name.startswith("trained") else colours[(len(standard) + j) % 10]
        marker = "*" if name.startswith("trained") else "o"
        label = name if name.startswith("trained") else f"post-hoc {name}"
        ax.plot(s["bpp"], s["psnr_db"], "-" if len(s["bpp"]) > 1 else "none", marker=marker, ms=9 if marker == "*" else 5, color=col,
                label=f"{label}: own file per image ({s['prior']} prior)")
        ax.plot(s["container_bpp"], s["psnr_db"], ":" if len(s["bpp"]) > 1 else "none", marker=marker, ms=7 if marker == "*" else 4, mfc="white",
                color=col, label="   the same, one container file for the split")
    if continuous_psnr_db is not None:
        ax.axhline(continuous_psnr_db, color="0.4", lw=1, ls="--", label=f"continuous VAE (not quantized), {continuous_psnr_db:.2f} dB")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("bits per pixel (real: file bytes x 8 / pixels, header included)")
    ax.set_ylabel("PSNR vs ground truth (dB)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=6.5, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    if footnote:
        fig.text(0.01, 0.005, footnote, fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def bd_markdown(rows: list[dict[str, Any]]) -> str:
    """The BD rows as a Markdown table: BD-rate (%) and BD-PSNR (dB) with 95% bootstrap CIs, or why a pair is not comparable."""
    table = []
    for r in rows:
        ok = r.get("comparable")
        ci = r.get("bd_rate_ci") or [None, None]
        pci = r.get("bd_psnr_ci") or [None, None]
        table.append({
            "test": r["test"], "anchor": r["anchor"], "interpolation": r.get("method", "pchip"),
            "BD-rate (%)": "-" if not ok else f"{r['bd_rate_percent']:+.1f}" + (f" [{ci[0]:+.1f}, {ci[1]:+.1f}]" if ci[0] is not None else ""),
            "BD-PSNR (dB)": "-" if not ok else f"{r['bd_psnr_db']:+.2f}" + (f" [{pci[0]:+.2f}, {pci[1]:+.2f}]" if pci[0] is not None else ""),
            "note": r.get("note", "") if ok else (r.get("reason") or "not comparable"),
        })
    return markdown_table(["test", "anchor", "interpolation", "BD-rate (%)", "BD-PSNR (dB)", "note"], table)
