"""Report building blocks without a trained model: Markdown/HTML rendering and escaping, the image mosaic,
code counts and graph structure against numpy/scipy, and limitations written from data."""

from __future__ import annotations

import base64
import re
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from PIL import Image
from scipy.sparse.csgraph import connected_components

from typed_results import typed
from posthoc_vq.evaluation.samples import code_counts, fixed_indices, graph_structure
from posthoc_vq.report.codebook_figures import CodebookView, class_order, codebook_figure
from posthoc_vq.report.compression_table import codebook_block
from posthoc_vq.report.document import Figure, Report, Section, Table, to_markdown
from posthoc_vq.report.html import to_html
from posthoc_vq.report.image_figures import ImageRow, image_grid, mosaic
from posthoc_vq.report.limitations import run_limitations, sweep_limitations, warning_lines

EVIL = '<script>alert("x")</script> & <img src=http://evil.example/x.png>'


def tiny_png(path, colour=(200, 30, 30)):
    Image.new("RGB", (7, 5), colour).save(path)
    return path


def report_with(tmp_path, text=EVIL):
    tiny_png(tmp_path / "a.png")
    section = Section("claims", "Claims", paragraphs=[text], items=[text], figures=[Figure("a.png", text, text)], missing=[text],
                      tables=[Table(("verdict", "reason"), [{"verdict": "validated", "reason": f"a | b {text}"}], "Claims", key="claims", row_class="verdict")])
    return Report("title " + text, "run", "runs/x", [("model", text)], [section], "2026-01-01T00:00:00+00:00")


def test_html_escapes_every_text_and_embeds_the_figure_bytes(tmp_path):
    html = to_html(report_with(tmp_path), tmp_path)
    assert "<script" not in html and "evil.example/x.png>" not in html and "&lt;script&gt;" in html
    assert "http://" not in html.replace("http://evil.example", "")  # the only URL is the escaped text itself
    uris = re.findall(r'<img src="(data:image/png;base64,[^"]+)"', html)
    assert len(uris) == 1 and base64.b64decode(uris[0].split(",", 1)[1]) == (tmp_path / "a.png").read_bytes()
    assert '<table id="claims">' in html and '<tr class="verdict-validated">' in html
    assert "Content-Security-Policy" in html and "default-src 'none'" in html


def test_html_refuses_a_figure_that_was_not_written(tmp_path):
    report = report_with(tmp_path, "ok")
    report.sections[0].figures.append(Figure("never-written.png", "x"))
    with pytest.raises(FileNotFoundError, match="never-written.png"):
        to_html(report, tmp_path)


def test_markdown_escapes_pipes_and_links_figures(tmp_path):
    md = to_markdown(report_with(tmp_path, "plain"))
    assert "| validated | a \\| b plain |" in md
    assert "![plain](a.png)" in md and "> **Missing:** plain" in md and "- plain" in md
    assert md.startswith("# title plain") and "| model | plain |" in md


def test_mosaic_places_each_image_and_leaves_white_gaps():
    rng = np.random.default_rng(0)
    rows = [torch.from_numpy(rng.random((3, 1, 28, 28), dtype=np.float32)) for _ in range(2)]
    m = mosaic(rows)
    g = 2  # 28 // 14
    assert m.shape == (2 * 28 + g, 3 * 28 + 2 * g, 3)
    for r in range(2):
        for i in range(3):
            tile = m[r * (28 + g): r * (28 + g) + 28, i * (28 + g): i * (28 + g) + 28]
            np.testing.assert_array_equal(tile, np.repeat(rows[r][i, 0].numpy()[..., None], 3, axis=-1))
    assert (m[28:28 + g] == 1).all() and (m[:, 28:28 + g] == 1).all()
    colour = torch.rand(2, 3, 8, 8)
    np.testing.assert_array_equal(mosaic([colour])[:8, :8], colour[0].permute(1, 2, 0).numpy())


def test_image_grid_rejects_ragged_rows(tmp_path):
    with pytest.raises(ValueError, match="one shape"):
        image_grid([ImageRow("a", torch.zeros(3, 1, 8, 8)), ImageRow("b", torch.zeros(2, 1, 8, 8))], tmp_path / "x.png", "t")
    path = image_grid([ImageRow("a", torch.zeros(3, 1, 8, 8))], tmp_path / "x.png", "t", ["1", "2", "3"])
    with Image.open(path) as im:
        assert im.format == "PNG"


def test_fixed_indices_take_the_first_image_of_each_class():
    labels = np.array([3, 1, 1, 0, 3, 2, 0])
    np.testing.assert_array_equal(fixed_indices(labels, 8), [3, 1, 5, 0, 2, 4, 6])
    np.testing.assert_array_equal(fixed_indices(labels, 2), [3, 1])


def test_codebook_view_counts_match_bincount_and_orders_codes_by_class(tmp_path):
    rng = np.random.default_rng(1)
    codes, labels = rng.integers(0, 12, 500), rng.integers(0, 4, 500)
    codes[codes == 5] = 6  # code 5 is dead
    view = CodebookView("b", "kmeans", "test", *code_counts(codes, labels, 12))
    np.testing.assert_array_equal(view.counts[0], np.bincount(codes, minlength=12))
    for c in range(4):
        np.testing.assert_array_equal(view.class_counts[:, c], np.bincount(codes[labels == c], minlength=12))
    assert view.dead == [1] and view.degrees is None
    order = class_order(view.class_counts)
    assert order[-1] == 5  # dead code last
    majors = view.class_counts.argmax(1)[order[:-1]]
    assert (np.diff(majors) >= 0).all()  # grouped by majority class
    residual = CodebookView("r", "residual", "test", *code_counts(np.stack([codes, codes[::-1]], 1), labels, 12))
    assert residual.counts.shape == (2, 12)
    assert codebook_figure(residual, tmp_path / "r.png").exists()


def test_graph_structure_matches_scipy():
    # two components: a triangle (0, 1, 2) and an edge (3, 4), symmetric
    rows, cols = [0, 1, 1, 2, 2, 0, 3, 4], [1, 0, 2, 1, 0, 2, 4, 3]
    adj = sp.csr_matrix((np.ones(8, np.float32), (rows, cols)), shape=(5, 5))
    degrees, sizes = graph_structure(SimpleNamespace(graph_=SimpleNamespace(adjacency=adj)))
    np.testing.assert_array_equal(degrees, [2, 2, 2, 1, 1])
    np.testing.assert_array_equal(sizes, [3, 2])
    assert len(sizes) == connected_components(adj, directed=False)[0]
    assert graph_structure(SimpleNamespace()) is None


def test_run_limitations_follow_the_data():
    leak = typed({"codebook": "kmeans-K4-mu-train_test", "fit_on": "train+test", "fit_includes_test": True})
    lines = run_limitations(meta={"trained_steps": 0}, summary={"converged": False, "epochs": 5, "stop_reason": "max_epochs"}, seed=7,
                            split="test", codebook_evals=[leak], codebooks=["kmeans-K4-mu-train_test", "geodesic-K4-mu-train"],
                            evaluated={"kmeans-K4-mu-train_test"}, warnings=[], git_commit="abc-dirty")
    text = "\n".join(lines)
    assert "never trained" in text and "Not trained to convergence" in text and "5 epochs" in text
    assert "kmeans-K4-mu-train_test" in text and "transductive" in text
    assert "One training seed (7)" in text and "geodesic-K4-mu-train" in text and "uncommitted" in text
    assert lines[-1] == "No audit warning fired."
    clean = run_limitations(meta={"trained_steps": 10}, summary={"converged": True, "epochs": 9, "stop_reason": "early_stopping", "best_epoch": 6},
                            seed=0, split="test", codebook_evals=[], codebooks=[], evaluated=set(), warnings=["w"], git_commit="abc")
    assert "Trained to convergence" in clean[0] and clean[-1] == "w"


def test_warning_lines_name_every_result_a_warning_fired_in():
    w = {"code": "not_converged", "message": "stopped at max epochs"}
    lines = warning_lines([("continuous", typed({"warnings": [w]})), ("kmeans", typed({"warnings": [w]})), ("geo", typed({"warnings": []}))])
    assert lines == ["Audit warning `not_converged` (continuous, kmeans): stopped at max epochs"]


def test_sweep_limitations_count_seeds_failures_and_convergence():
    def row(dim, seed, status="done", **metrics):
        return {"cell_id": f"{dim}-{seed}", "axes": {"model.latent_dim": dim, "seed": seed}, "status": status,
                "metrics": {"converged": True, "warnings": [], **metrics} if status == "done" else None, "error": "Traceback\nValueError: boom"}

    rows = [row(8, 0), row(8, 1, converged=False), row(4, 0, warnings=["quantized_beats_continuous"]), row(4, 1, status="failed")]
    lines = sweep_limitations(rows=rows, n_cells=5, compare={"axis": "model.latent_dim", "pair_by": "seed", "min_n": 3}, claims_n_done=2, runs_missing=[])
    text = "\n".join(lines)
    assert "Only 3 of 5 cells are done (1 failed)" in text and "ValueError: boom" in text
    assert "claims.json was written when 2 cells were done; the database now has 3" in text
    assert "Seeds per arm: model.latent_dim=8: 2 (0, 1), model.latent_dim=4: 1 (0)." in text
    assert "with one seed there is no spread" in text
    assert "Not trained to convergence (stopped at the epoch limit): model.latent_dim=8, seed=1." in text
    assert "Audit warning `quantized_beats_continuous` fired in 1 cell(s)." in text


def test_codebook_block_reads_both_weight_evaluation_formats():
    block = {"name": "kmeans-K4-mu-train", "code_agreement": 0.9}
    assert codebook_block(typed({"with_codebook": block})).model_dump(exclude_unset=True) == block
    assert codebook_block(typed({"codebook": block})).model_dump(exclude_unset=True) == block  # files written before the key was renamed
    assert codebook_block(typed({"codebook": None})) is None and codebook_block(typed({})) is None


def test_user_strings_cannot_inject_html_or_links_into_markdown():
    from posthoc_vq.report.document import Report, Section, Table, to_markdown

    hostile = '<script>alert(1)</script>[x](javascript:alert(2))'
    table = Table(["arm", hostile], [{"arm": hostile, hostile: "a|b"}], hostile, key="t", notes=[hostile])
    section = Section("s", hostile, paragraphs=[f"run `{hostile}` again"], items=[hostile], missing=[hostile], tables=[table])
    md = to_markdown(Report(title=hostile, kind="run", source=hostile, header=[(hostile, hostile)], sections=[section], generated="now"))
    import re

    assert "<script>" not in md and not re.search(r"(?<!\\)\]\(javascript:", md)  # an escaped bracket or parenthesis is no link
    assert "&lt;script&gt;" in md and "a\\|b" in md  # shown, not interpreted
    assert md.count('<a id="s"></a>') == 1  # the report's own anchors stay HTML
