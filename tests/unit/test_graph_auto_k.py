"""``n_neighbors='auto'``: the smallest connecting k against brute force, and auto == that fixed k."""

import json
import warnings

import numpy as np
import pytest
from scipy.sparse.csgraph import connected_components

from posthoc_vq.config import QuantizeConfig
from posthoc_vq.latents import LatentSet
from posthoc_vq.quantize.codebooks import fit_on_latents
from posthoc_vq.quantize.latent.geodesic import GeodesicKMedoids
from posthoc_vq.quantize.latent.graph import (
    AUTO_MAX_NEIGHBORS,
    AUTO_SAFETY,
    DisconnectedGraphWarning,
    auto_knn_graph,
    build_knn_graph,
)
from posthoc_vq.quantize.latent.hybrid import HybridKMeansGeodesic
from posthoc_vq.quantize.latent.store import load_codebook, save_codebook


def two_clusters(n=60, d=3, seed=0):
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(0, 1, (n, d)), rng.normal(40, 1, (n, d))]).astype(np.float32)


def one_blob(n=120, d=3, seed=1):
    return np.random.default_rng(seed).normal(0, 1, (n, d)).astype(np.float32)


def brute_force_smallest_k(Z, symmetry="union"):
    """Smallest k whose graph, built from scratch for every k, has one component."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DisconnectedGraphWarning)
        for k in range(1, len(Z)):
            g = build_knn_graph(Z, k, symmetry=symmetry, join_components=False)
            if connected_components(g.adjacency, directed=False)[0] == 1:
                return k
    return None


@pytest.mark.parametrize("symmetry", ["union", "mutual"])
def test_smallest_connected_k_matches_brute_force_on_two_clusters(symmetry):
    Z = two_clusters()
    graph, search = auto_knn_graph(Z, symmetry=symmetry)
    smallest = brute_force_smallest_k(Z, symmetry)
    assert search["smallest_connected_k"] == smallest
    if symmetry == "union":  # far clusters link only once a point's k nearest must leave its own 60
        assert smallest == 60
    assert search["n_neighbors"] == graph.n_neighbors == min(AUTO_SAFETY * smallest, len(Z) - 1, AUTO_MAX_NEIGHBORS)
    assert search["safety_factor"] == 2 and search["max_neighbors"] == 200
    assert len(search["tried"]) <= 2 * np.ceil(np.log2(len(Z)))  # doubling then bisection, not a scan


def test_single_blob_connects_at_a_small_k():
    Z = one_blob()
    graph, search = auto_knn_graph(Z)
    assert search["smallest_connected_k"] == brute_force_smallest_k(Z) <= 5
    assert search["n_neighbors"] == 2 * search["smallest_connected_k"]
    # for the exact search, the graph is the one build_knn_graph gives at the chosen k
    fixed = build_knn_graph(Z, search["n_neighbors"])
    assert (graph.adjacency != fixed.adjacency).nnz == 0


def test_cap_applies_when_no_k_connects():
    rng = np.random.default_rng(0)  # 3 clusters of 300: union connects at k = 300 > cap
    Z = np.concatenate([rng.normal(c, 1, (300, 2)) for c in (0, 100, 200)]).astype(np.float32)
    with pytest.warns(DisconnectedGraphWarning, match="joining"):
        graph, search = auto_knn_graph(Z)
    assert search["smallest_connected_k"] is None and search["n_neighbors"] == AUTO_MAX_NEIGHBORS
    assert graph.joined_edges == 2


@pytest.mark.parametrize("cls", [GeodesicKMedoids, HybridKMeansGeodesic])
@pytest.mark.parametrize("make", [two_clusters, one_blob])
def test_auto_is_the_fixed_k_chosen_by_the_rule(cls, make):
    Z = make()
    auto = cls(6, n_neighbors="auto", random_state=4).fit(Z)
    k = auto.n_neighbors_
    assert auto.graph_stats_["auto_search"] == auto.auto_search_ and auto.auto_search_["n_neighbors"] == k
    fixed = cls(6, n_neighbors=k, random_state=4).fit(Z)
    assert fixed.auto_search_ is None and "auto_search" not in fixed.graph_stats_ and fixed.n_neighbors_ == k
    Q = make(seed=7)
    assert np.array_equal(auto.medoid_indices_, fixed.medoid_indices_)
    assert np.array_equal(auto.predict(Q), fixed.predict(Q))
    assert np.array_equal(auto.transform(Q), fixed.transform(Q))


def test_codebook_json_records_the_choice_and_reloads_identically(tmp_path):
    Z = two_clusters()
    latents = LatentSet(Z, np.zeros(len(Z), dtype=np.int64), "train", "mu", None)
    q = QuantizeConfig(method="geodesic", n_neighbors="auto", K=6)
    est, meta = fit_on_latents(latents, q)
    assert meta["quantize"]["n_neighbors"] == "auto"
    assert meta["graph"]["auto_search"]["smallest_connected_k"] == 60
    assert meta["graph"]["n_neighbors"] == est.n_neighbors_ == 119
    save_codebook(tmp_path / "cb", est, meta)
    record = json.loads((tmp_path / "cb" / "codebook.json").read_text())
    assert record["params"]["n_neighbors"] == "auto"
    assert record["graph"]["auto_search"]["n_neighbors"] == record["state"]["n_neighbors"] == 119
    loaded, _ = load_codebook(tmp_path / "cb", expected_dim=3)
    assert loaded.n_neighbors == "auto" and loaded.n_neighbors_ == 119
    assert loaded.graph_stats_ == est.graph_stats_
    Q = two_clusters(seed=3)
    assert np.array_equal(loaded.predict(Q), est.predict(Q))
    assert np.array_equal(loaded.transform(Q), est.transform(Q))


def test_config_and_cli_accept_auto(monkeypatch):
    from posthoc_vq import cli
    from posthoc_vq.quantize import codebooks

    assert QuantizeConfig(n_neighbors="auto").default_name() == QuantizeConfig(n_neighbors=7).default_name()
    with pytest.raises(ValueError):
        QuantizeConfig(n_neighbors="many")
    with pytest.raises(ValueError):
        QuantizeConfig(n_neighbors=0)
    seen = []

    class Stop(Exception):
        pass

    def fake_fit(run, q, data_dir=None, progress=None, device=None):
        seen.append(q)
        raise Stop

    monkeypatch.setattr(codebooks, "fit_codebook_for_run", fake_fit)
    for value, expected in (("auto", "auto"), ("12", 12)):
        with pytest.raises(Stop):
            cli.main(["quantize", "RUN", "--method", "geodesic", "--n-neighbors", value])
        assert seen[-1].n_neighbors == expected and seen[-1].method == "geodesic"
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["quantize", "RUN", "--n-neighbors", "many"])
