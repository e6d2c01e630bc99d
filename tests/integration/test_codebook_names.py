"""Two quantize configs that fit different codebooks never share a default name, and a sweep never reuses a
codebook fitted with other settings under the same name (it once evaluated a k=50 graph for every k)."""

import itertools

import pytest

from posthoc_vq.config import QuantizeConfig
from posthoc_vq.errors import ConfigError
from posthoc_vq.experiments.job import _check_same_codebook
from posthoc_vq.quantize.codebooks import fit_codebook_for_run

VARIANTS = {
    "method": ["kmeans", "geodesic", "hybrid", "residual", "random-prior"],
    "n_neighbors": [50, 10, "auto"],
    "symmetry": ["union", "mutual"],
    "random_state": [0, 1],
    "max_iter": [None, 5],
}


def test_configs_that_fit_different_codebooks_have_different_default_names():
    seen: dict[str, dict] = {}
    for values in itertools.product(*VARIANTS.values()):
        q = QuantizeConfig(**dict(zip(VARIANTS, values)))
        settings = q.fitted_settings()
        if q.method not in ("geodesic", "hybrid"):  # graph settings do not change other methods' codebooks
            settings |= {"n_neighbors": None, "symmetry": None}
        if q.method == "random-prior":
            settings["max_iter"] = None
        name = q.default_name()
        assert seen.setdefault(name, settings) == settings, f"{name} names two different codebooks"
    assert QuantizeConfig(method="geodesic").default_name() == "geodesic-K1024-mu-train"  # defaults keep their names
    assert QuantizeConfig(method="geodesic", n_neighbors=10).default_name() == "geodesic-K1024-mu-train-k10"


def test_a_sweep_refuses_a_codebook_fitted_with_other_settings(make_digits_run):
    run = make_digits_run(epochs=2)
    q = QuantizeConfig(method="geodesic", K=8, n_neighbors=10, threads=1)
    name, _, _ = fit_codebook_for_run(run, q)
    _check_same_codebook(run, name, q.model_copy(update={"threads": 2}))  # threads do not change the codebook
    with pytest.raises(ConfigError, match=r"fitted with other settings \(n_neighbors: 10 there, 15 here\)"):
        _check_same_codebook(run, name, q.model_copy(update={"n_neighbors": 15, "name": name}))
