"""Issue 15 item 9: rate-distortion series without dodge, one per recipe; residual usage per stage; compression rows by bits."""

from __future__ import annotations

import csv
import io

from posthoc_vq.report import codebook_table, compression_table
from posthoc_vq.report.figures import sweep_panel_series, sweep_rate_distortion, thin_ticks
from posthoc_vq.report.formats import to_csv
from posthoc_vq.results import CompressionRow

from typed_results import typed


def _ci(mean: float) -> dict[str, float]:
    return {"mean": mean, "low": mean - 0.1, "high": mean + 0.1}


def _book(name: str, method: str, bits: float, psnr: float, *, latents: str = "mu", fit_on: str = "train", graph: bool = False,
          usage: dict | None = None):
    return typed({
        "codebook": name, "method": method, "bits_per_image": bits, "latents": latents, "fit_on": fit_on, "fit_includes_test": "test" in fit_on,
        "quantized": {"psnr_db": _ci(psnr), "ssim": _ci(0.8)}, "penalty": {"psnr_db": _ci(-1.0)},
        "usage": {"test": usage or {"used": 900, "n_codes": 1024, "dead": 124, "entropy_nats": 6.0, "entropy_bits": 8.6, "perplexity": 400.0}},
        "graph": {"nodes": 100, "edges": 500, "components": 1} if graph else None,
    })


def _cont():
    return typed({"continuous": {"psnr_db": _ci(22.0), "ssim": _ci(0.9), "n_images": 10}, "model": {"latent_dim": 16, "quantizer": None},
                  "dataset": "digits", "run": "r", "training": {}, "bits_per_image": None})


BOOKS = [
    _book("kmeans-K1024-mu-train", "kmeans", 20.0, 15.0),
    _book("kmeans-K256-mu-train", "kmeans", 16.0, 14.0),
    _book("geodesic-K1024-mu-train", "geodesic", 20.0, 14.5, graph=True),
    _book("geodesic-K1024-mu-train-mutual", "geodesic", 20.0, 14.2, graph=True),
    _book("geodesic-K1024-mu-train-k10", "geodesic", 20.0, 14.1, graph=True),
    _book("kmeans-K1024-z-seed0-train", "kmeans", 20.0, 14.8, latents="z"),
    _book("kmeans-K1024-mu-train_test", "kmeans", 20.0, 15.1, fit_on="train+test"),
    _book("residual-M2-K1024-mu-train", "residual", 20.0, 15.5),
    _book("residual-M4-K1024-mu-train", "residual", 40.0, 17.0),
]


def test_equal_rates_share_one_x_position_and_each_recipe_is_its_own_series():
    series = codebook_table.rate_distortion_series(BOOKS)
    xs = {(s["label"], c): x for s in series for c, x in zip(s["codebooks"], s["x"])}
    at20 = {x for (label, c), x in xs.items() if c.split("-K")[1].startswith("1024") and "M4" not in c}
    assert at20 == {20.0}  # no sideways dodge: every codebook of 20 bits per image is drawn at exactly 20
    by_book = {c: s for s in series for c in s["codebooks"]}
    # different latents, fit set, graph symmetry or k: different series; K and residual stages: one line
    for a, b in [("kmeans-K1024-mu-train", "kmeans-K1024-z-seed0-train"), ("kmeans-K1024-mu-train", "kmeans-K1024-mu-train_test"),
                 ("geodesic-K1024-mu-train", "geodesic-K1024-mu-train-mutual"), ("geodesic-K1024-mu-train", "geodesic-K1024-mu-train-k10")]:
        assert by_book[a]["label"] != by_book[b]["label"]
    assert by_book["kmeans-K1024-mu-train"] is by_book["kmeans-K256-mu-train"]
    assert by_book["residual-M2-K1024-mu-train"] is by_book["residual-M4-K1024-mu-train"]
    assert by_book["residual-M2-K1024-mu-train"]["x"] == [20.0, 40.0]  # stages joined along the line, in rate order
    assert len({s["marker"] for s in series}) == len(series)  # overlapping points told apart by marker
    assert len(series) == 7


def test_recipe_uses_the_codebook_record_settings_when_given():
    books = [_book("g1", "geodesic", 20.0, 14.0, graph=True), _book("g2", "geodesic", 20.0, 14.0, graph=True)]
    records = {"g1": {"quantize": {"method": "geodesic", "symmetry": "union", "n_neighbors": 50}},
               "g2": {"quantize": {"method": "geodesic", "symmetry": "mutual", "n_neighbors": 50}}}
    assert len(codebook_table.rate_distortion_series(books, records)) == 2
    assert len(codebook_table.rate_distortion_series(books)) == 1  # same names' defaults: one recipe


def test_rate_distortion_figure_draws_the_series_at_their_rates(tmp_path):
    import matplotlib.pyplot as plt

    captured = {}
    real_close = plt.close
    plt.close = lambda fig=None: captured.setdefault("fig", fig)
    try:
        codebook_table.rate_distortion_figure(_cont(), BOOKS, tmp_path / "rd.png")
    finally:
        plt.close = real_close
    ax = captured["fig"].axes[0]
    drawn = {c.get_label(): [float(x) for x in c.lines[0].get_xdata()] for c in ax.containers}  # errorbar: label -> the data line's x
    expected = {s["label"]: s["x"] for s in codebook_table.rate_distortion_series(BOOKS)}
    assert drawn == expected and {x for xs in drawn.values() for x in xs} == {16.0, 20.0, 40.0}
    assert len(ax.get_legend().get_texts()) == 7 + 1
    real_close(captured["fig"])
    assert (tmp_path / "rd.png").stat().st_size > 0


def test_sweep_panel_draws_the_continuous_reference_once_and_no_dodge(tmp_path):
    points = {arm: [{"series": "codebook", "bits": 20.0, "mean": 15.0 + i / 10, "low": None, "high": None, "n": 1}]
              for i, arm in enumerate(("arm=kmeans", "arm=geodesic", "arm=hybrid"))}
    continuous = {arm: [{"label": "", "mean": 22.38, "low": 22.3, "high": 22.4}] for arm in points}
    series, refs = sweep_panel_series(points, continuous)
    assert [r["label"] for r in refs] == ["continuous 22.38 dB"]
    assert {x for s in series for x in s["x"]} == {20.0}
    assert len({s["marker"] for s in series}) == 3
    continuous["arm=hybrid"] = [{"label": "", "mean": 19.0, "low": 18.9, "high": 19.1}]
    _, refs = sweep_panel_series(points, continuous)
    assert len(refs) == 2 and "arm=hybrid" in refs[1]["label"]
    assert sweep_rate_distortion({"data=digits": (points, continuous), "data=mnist": (points, continuous)}, tmp_path / "rd.png", "t").exists()


def test_thin_ticks_drops_labels_that_would_overlap():
    assert thin_ticks([9.9, 10, 14, 35, 20, 40]) == [9.9, 14, 20, 35]


def test_residual_rows_show_usage_per_stage_and_distinct_tuples():
    stages = [{"used": 900, "n_codes": 1024, "dead": 124}, {"used": 850, "n_codes": 1024, "dead": 174}]
    usage = {**stages[0], "entropy_nats": 6.0, "entropy_bits": 8.6, "perplexity": 400.0, "stages": stages, "distinct_tuples": 5000}
    books = [_book("residual-M2-K1024-mu-train", "residual", 20.0, 15.0, usage=usage), _book("kmeans-K1024-mu-train", "kmeans", 10.0, 14.0)]
    rows = codebook_table.table_rows(_cont(), books)
    assert rows[1]["code usage"] == "s1 900/1024, s2 850/1024; 5000 tuples" and rows[1]["dead codes"] == "298"
    assert rows[2]["code usage"] == "900/1024" and rows[2]["dead codes"] == "124"
    tidy = codebook_table.tidy_rows(_cont(), books)
    assert (tidy[1]["codes_used"], tidy[1]["n_codes"], tidy[1]["dead_codes"], tidy[1]["n_stages"], tidy[1]["distinct_tuples"]) == (1750, 2048, 298, 2, 5000)
    assert tidy[2]["distinct_tuples"] is None and tidy[2]["n_codes"] == 1024
    parsed = list(csv.DictReader(io.StringIO(to_csv(tidy, codebook_table.TIDY_COLUMNS))))
    assert parsed[1]["distinct_tuples"] == "5000" and parsed[2]["distinct_tuples"] == ""


def _crow(run: str, bits: int) -> CompressionRow:
    ci = lambda m: {**_ci(m), "n": 10}  # noqa: E731
    return CompressionRow.model_validate({
        "run": run, "latent_dim": 16, "parameters": 100, "bits": bits, "file_bytes": 400 // (32 // bits), "ratio_own": bits / 32,
        "compound_factor": 32 / bits, "psnr_db": ci(20.0), "ssim": ci(0.9), "psnr_change_db": None if bits == 32 else ci(-0.1), "converged": True})


def test_compression_rows_are_ordered_by_bits_as_numbers():
    rows = [_crow("runs/a", 4), _crow("runs/a", 32), _crow("runs/a", 8), _crow("runs/b", 8), _crow("runs/b", 4), _crow("runs/b", 32)]
    tidy = compression_table.tidy_rows(rows)
    assert [(r["run"], r["weight_bits"]) for r in tidy] == [("runs/a", 32), ("runs/a", 8), ("runs/a", 4), ("runs/b", 32), ("runs/b", 8), ("runs/b", 4)]
    assert [r["weight bits"] for r in compression_table.format_rows(rows)] == ["32", "8", "4"] * 2
    labels = [_crow("int4-g32-sym", 4), _crow("fp32", 32), _crow("int8-channel-sym + kmeans-K1024-mu-train", 8), _crow("int8-channel-sym", 8)]
    assert [r.run for r in compression_table.order_by_bits(labels)] == ["fp32", "int8-channel-sym", "int8-channel-sym + kmeans-K1024-mu-train",
                                                                           "int4-g32-sym"]
