"""scikit-learn conformance of every codebook estimator: ``check_estimator`` plus named input checks.

The estimators are clusterers (``predict``: code indices, ``labels_``: those of the fitted
points) and transformers (``transform``: distances to the codes) whose results are float32.
Instances are small (K = 3, a 5-neighbour graph, few iterations) so each ``check_estimator``
run takes about a second. The named checks fit with class labels (:func:`labels_of`; ignored by
the estimators that need none) and pass them on to the estimators that need them (``needs_labels``).
"""

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.utils import estimator_checks
from sklearn.utils.estimator_checks import check_estimator

from posthoc_vq.quantize.latent.base import ClassLabelError
from posthoc_vq.quantize.latent.store import METHODS, make_estimator

# tiny blob sets give kNN graphs of several components, joined as documented
pytestmark = pytest.mark.filterwarnings("ignore::posthoc_vq.quantize.latent.graph.DisconnectedGraphWarning")

SMALL = {
    "kmeans": {"n_clusters": 3, "max_iter": 20},
    "geodesic": {"n_clusters": 3, "n_neighbors": 5, "max_iter": 3},
    "hybrid": {"n_clusters": 3, "n_neighbors": 5, "max_iter": 3, "kmeans_max_iter": 5},
    "residual": {"n_clusters": 3, "n_stages": 2, "max_iter": 20},
    "random-prior": {"n_clusters": 3},
    "class-conditional": {"n_clusters": 3, "max_iter": 20},
}
#: graph methods again with n_neighbors='auto' (k chosen at fit time by the connectivity rule)
AUTO = {f"{m}-auto": (m, {**SMALL[m], "n_neighbors": "auto"}) for m in ("geodesic", "hybrid")}

_LAZY_TRANSFORM_CACHE = (
    "transform memoises the (N_fit, K) graph distances from every fitted node to every medoid in a private "
    "attribute on its first call (computing them in fit would cost K Dijkstra runs even when transform is never "
    "used), so __dict__ changes during the first transform; predict leaves it unchanged"
)

_LABELS_REQUIRED = (
    "the check calls fit, predict or transform without y, and a class-conditional codebook codes each vector with its "
    "class's codebook, so it refuses to run without the class labels (ClassLabelError, by design: ClassConditionalKMeans docstring)"
)
_K_BELOW_CLASSES = (
    "the check sets n_clusters to 1 or 2 (or keeps 3) and fits y of more classes than that; the class-conditional "
    "rule K_c = floor(K / n_classes) then leaves a class no code, which fit refuses (ClassLabelError naming K and the classes)"
)

#: check name -> why it fails, per method. Each must really fail (asserted below), so a fix
#: that makes one pass also has to remove it from here.
EXPECTED_FAILED = {
    "kmeans": {},
    "geodesic": {"check_dict_unchanged": _LAZY_TRANSFORM_CACHE},
    "hybrid": {"check_dict_unchanged": _LAZY_TRANSFORM_CACHE},
    "residual": {
        "check_clustering": "predict and labels_ are (n_samples, n_stages): one code per residual stage, by design "
        "(ResidualKMeans docstring); check_clustering requires (n_samples,) labels",
    },
    "random-prior": {},
    "class-conditional": {
        **dict.fromkeys((
            "check_clustering", "check_dict_unchanged", "check_estimators_dtypes", "check_estimators_pickle", "check_f_contiguous_array_estimator",
            "check_fit_idempotent", "check_transformer_data_not_an_array", "check_transformer_general", "check_transformer_preserve_dtypes",
        ), _LABELS_REQUIRED),
        **dict.fromkeys((
            "check_dont_overwrite_parameters", "check_dtype_object", "check_fit2d_1feature", "check_fit2d_predict1d",
            "check_methods_sample_order_invariance", "check_methods_subset_invariance",
        ), _K_BELOW_CLASSES),
    },
}
#: The same for the checks run outside check_estimator (test_checks_outside_check_estimator).
EXPECTED_FAILED_OUTSIDE = {
    "class-conditional": dict.fromkeys(("check_dataframe_column_names_consistency", "check_inplace_ensure_writeable"), _LABELS_REQUIRED),
}
#: Passed by every method, unless declared an expected failure above.
REQUIRED_PASSED = {"check_n_features_in", "check_complex_data", "check_estimator_sparse_array", "check_estimators_empty_data_messages", "check_transformer_general"}
#: Skipped, not failed: array-API checks need SCIPY_ARRAY_API=1 set before scipy is imported.
ALLOWED_SKIPS = {"check_array_api_input"}


def test_every_registered_method_is_covered():
    assert set(SMALL) == set(EXPECTED_FAILED) == set(METHODS) and set(EXPECTED_FAILED_OUTSIDE) <= set(METHODS)


@pytest.mark.parametrize("case", sorted(METHODS) + sorted(AUTO))
def test_check_estimator(case):
    method, params = AUTO.get(case, (case, SMALL.get(case)))
    expected = EXPECTED_FAILED[method]
    results = check_estimator(make_estimator(method, **params), expected_failed_checks=expected or None, on_skip=None)
    status = {}
    for r in results:
        status.setdefault(r["check_name"], set()).add(r["status"])
    assert {name for name, s in status.items() if "xfail" in s} == set(expected), "a declared expected failure passed: remove it"
    assert {name for name, s in status.items() if "skipped" in s} <= ALLOWED_SKIPS
    assert {name for name, s in status.items() if s == {"passed"}} >= REQUIRED_PASSED - set(expected)


@pytest.mark.parametrize("check", ["check_param_validation", "check_dataframe_column_names_consistency", "check_inplace_ensure_writeable"])
@pytest.mark.parametrize("case", sorted(METHODS) + sorted(AUTO))
def test_checks_outside_check_estimator(case, check):
    """Checks scikit-learn runs on its own estimators but ``check_estimator`` does not: the
    declared ``_parameter_constraints``, feature names of DataFrames, read-only input."""
    method, params = AUTO.get(case, (case, SMALL.get(case)))
    est = make_estimator(method, **params)
    reason = EXPECTED_FAILED_OUTSIDE.get(method, {}).get(check)
    if reason is None:
        getattr(estimator_checks, check)(type(est).__name__, est)
    else:  # declared: it must really fail, for the declared reason
        with pytest.raises(ClassLabelError, match="needs each vector's class label"):
            getattr(estimator_checks, check)(type(est).__name__, est)


# ---------------------------------------------------------------------------- named input checks


def blobs(n=60, d=4, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 4, (3, d))
    return (centers[rng.integers(0, 3, n)] + rng.normal(0, 0.5, (n, d))).astype(np.float32)


def labels_of(Z):
    """(N,) int64 class labels of points: which side of the mean of the first coordinate they lie on (two classes)."""
    Z = np.asarray(Z).real
    return (Z[:, 0] > Z[:, 0].mean()).astype(np.int64)


def lab(est, y):
    """Keyword arguments giving labels ``y`` to an estimator that needs them; nothing for the others."""
    return {"y": y} if est.needs_labels else {}


@pytest.mark.parametrize("method", sorted(METHODS))
def test_n_features_in_is_set_by_fit_and_checked_by_predict(method):
    Z = blobs()
    y = labels_of(Z)
    est = make_estimator(method, **SMALL[method]).fit(Z, y)
    assert est.n_features_in_ == Z.shape[1] == est.dim
    for name in ("predict", "transform"):
        with pytest.raises(ValueError, match=rf"X has 3 features, but {type(est).__name__} is expecting 4 features as input"):
            getattr(est, name)(Z[:, :3], **lab(est, y))


@pytest.mark.parametrize("method", sorted(METHODS))
def test_complex_input_raises_value_error(method):
    Z = blobs()
    y = labels_of(Z)
    with pytest.raises(ValueError, match="Complex data not supported"):
        make_estimator(method, **SMALL[method]).fit(Z + 1j * Z, y)
    est = make_estimator(method, **SMALL[method]).fit(Z, y)
    for name in ("predict", "transform"):
        with pytest.raises(ValueError, match="Complex data not supported"):
            getattr(est, name)(Z + 1j * Z, **lab(est, y))


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("container", [sp.csr_matrix, sp.csr_array])
def test_sparse_input_raises_a_clear_error(method, container):
    Z = blobs()
    y = labels_of(Z)
    with pytest.raises(TypeError, match="Sparse data was passed for X, but dense data is required"):
        make_estimator(method, **SMALL[method]).fit(container(Z), y)
    est = make_estimator(method, **SMALL[method]).fit(Z, y)
    with pytest.raises(TypeError, match="Sparse data was passed for X, but dense data is required"):
        est.predict(container(Z), **lab(est, y))


@pytest.mark.parametrize("method", sorted(METHODS))
def test_empty_data_raises_value_error_naming_the_minimum(method):
    est = make_estimator(method, **SMALL[method])
    with pytest.raises(ValueError, match=r"Found array with 0 sample\(s\) \(shape=\(0, 4\)\) while a minimum of 1 is required"):
        est.fit(np.empty((0, 4), dtype=np.float32))
    with pytest.raises(ValueError, match=r"Found array with 0 feature\(s\) \(shape=\(12, 0\)\) while a minimum of 1 is required"):
        est.fit(np.empty((12, 0), dtype=np.float32))  # was a ZeroDivisionError in KMeans.fit


@pytest.mark.parametrize("method", sorted(set(METHODS) - {"random-prior"}))
def test_fewer_samples_than_codes_names_both(method):
    with pytest.raises(ValueError, match=r"n_samples=2 should be >= n_clusters=3"):
        make_estimator(method, **SMALL[method]).fit(blobs(n=2), labels_of(blobs(n=2)))


@pytest.mark.parametrize("method", sorted(METHODS))
def test_nan_and_invalid_parameters_raise_sklearn_errors(method):
    Z = blobs()
    y = labels_of(Z)
    bad = Z.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="Input X contains NaN"):
        make_estimator(method, **SMALL[method]).fit(bad, y)
    with pytest.raises(ValueError, match=rf"The 'n_clusters' parameter of {type(make_estimator(method)).__name__} must be an int in the range \[1, inf\)\. Got 0 instead"):
        make_estimator(method, **{**SMALL[method], "n_clusters": 0}).fit(Z, y)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_labels_tags_and_unchanged_input_handling(method):
    Z = blobs()
    y = labels_of(Z)
    est = make_estimator(method, **SMALL[method])
    tags = est.__sklearn_tags__()
    assert tags.estimator_type == "clusterer" and tags.transformer_tags.preserves_dtype == ["float32"]
    assert not tags.input_tags.sparse and not tags.input_tags.allow_nan
    labels = est.fit_predict(Z, y)
    assert np.array_equal(labels, est.labels_) and np.array_equal(labels, est.predict(Z, **lab(est, y)))
    assert labels.shape == ((len(Z), 2) if method == "residual" else (len(Z),))
    # float32 C-contiguous input is used as is (no copy); other dtypes, torch tensors and lists are converted
    assert np.shares_memory(est._validate_latents(Z, reset=False), Z)
    for other in (Z.astype(np.float64), torch.from_numpy(Z), Z.tolist(), np.asfortranarray(Z)):
        assert np.array_equal(est.predict(other, **lab(est, y)), labels)
    assert est.transform(Z.astype(np.float64), **lab(est, y)).dtype == np.float32
    assert est.predict(Z[:0], **lab(est, y[:0])).shape[0] == 0  # an empty batch still gives an empty result


@pytest.mark.parametrize("case", sorted(METHODS) + sorted(AUTO))
def test_loaded_state_sets_n_features_in(case):
    method, params = AUTO.get(case, (case, SMALL.get(case)))
    Z = blobs()
    y = labels_of(Z)
    est = make_estimator(method, **params).fit(Z, y)
    loaded = make_estimator(method, **params)
    loaded.load_state(est.state_tensors(), est.state_info())
    assert loaded.n_features_in_ == Z.shape[1]
    assert np.array_equal(loaded.predict(Z, **lab(est, y)), est.predict(Z, **lab(est, y)))
    with pytest.raises(ValueError, match="X has 3 features.*Z has dimension 3 but the codebook was fitted on dimension 4"):
        loaded.predict(Z[:, :3], **lab(est, y))
