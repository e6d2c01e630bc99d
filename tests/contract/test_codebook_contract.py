"""One contract, every codebook estimator: scikit-learn style fit/predict/transform/inverse_transform.

Every fit gets class labels ``y`` (:func:`blob_labels`; estimators that need none ignore them), and
every other call passes them to the estimators that need them (``needs_labels``: class-conditional).
"""

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from posthoc_vq.quantize.latent.store import METHODS, load_codebook, make_estimator, save_codebook

K = 8
PARAMS = {
    "kmeans": {"n_clusters": K, "max_iter": 50},
    "geodesic": {"n_clusters": K, "n_neighbors": 10, "max_iter": 5},
    "hybrid": {"n_clusters": K, "n_neighbors": 10, "max_iter": 5},
    "residual": {"n_clusters": K, "n_stages": 2, "max_iter": 50},
    "random-prior": {"n_clusters": K},
    "class-conditional": {"n_clusters": K, "max_iter": 50},  # 2 classes of blob_labels: K_c = 4, so K codes and log2(K) bits
}
#: case id -> (method, constructor arguments): every method, plus graph methods with n_neighbors='auto'
CASES = {
    **{method: (method, params) for method, params in PARAMS.items()},
    **{f"{m}-auto": (m, {**PARAMS[m], "n_neighbors": "auto"}) for m in ("geodesic", "hybrid")},
}


CENTERS = np.random.default_rng(0).normal(0, 4, (5, 6))


def blobs(n=400, d=6, seed=0):
    """Points around 5 fixed centres; ``seed`` draws which centre and the noise (held-out sets share the centres)."""
    rng = np.random.default_rng(seed)
    return (CENTERS[rng.integers(0, 5, n), :d] + rng.normal(0, 0.7, (n, d))).astype(np.float32)


def blob_labels(Z):
    """(N,) class labels of blob points: their nearest centre's index modulo 2 (two classes, of 3 and 2 blobs)."""
    return np.argmin(((Z[:, None, :] - CENTERS[None, :, : Z.shape[1]]) ** 2).sum(-1), 1) % 2


def lab(est, Z):
    """Keyword arguments giving ``Z``'s labels to an estimator that needs them; nothing for the others."""
    return {"y": blob_labels(Z)} if est.needs_labels else {}


def test_every_registered_method_is_covered():
    assert set(PARAMS) == set(METHODS)


@pytest.fixture(scope="module", params=sorted(CASES))
def fitted(request):
    method, params = CASES[request.param]
    Z = blobs()
    est = make_estimator(method, random_state=3, **params)
    assert est.fit(Z, blob_labels(Z)) is est
    return method, est, Z


def test_learned_state_shapes_and_types(fitted):
    method, est, Z = fitted
    stages = PARAMS[method].get("n_stages", 1)
    assert est.codebook_.shape == (stages * K, Z.shape[1]) and est.codebook_.dtype == np.float32
    assert est.n_codes == K and est.dim == Z.shape[1]
    assert est.bits_per_vector == pytest.approx(stages * np.log2(K))


def test_predict_transform_inverse_transform_agree(fitted):
    method, est, Z = fitted
    codes = est.predict(Z, **lab(est, Z))
    stages = PARAMS[method].get("n_stages", 1)
    assert codes.dtype == np.int64 and codes.min() >= 0 and codes.max() < K
    assert codes.shape == ((len(Z), stages) if method == "residual" else (len(Z),))
    dist = est.transform(Z, **lab(est, Z))
    assert dist.shape == ((len(Z), stages, K) if method == "residual" else (len(Z), K))
    agree = np.mean(dist.argmin(-1) == codes)
    assert agree >= 0.99  # exact ties may break either way
    Zq = est.inverse_transform(codes)
    assert Zq.shape == Z.shape and np.array_equal(Zq, est.quantize(Z, **lab(est, Z)))
    if method in ("kmeans", "random-prior", "class-conditional"):
        assert np.allclose(dist[np.arange(len(Z)), codes], np.linalg.norm(Z - Zq, axis=1), atol=1e-3)


def test_codebooks_decode_from_real_points_for_graph_methods(fitted):
    method, est, Z = fitted
    if method in ("geodesic", "hybrid"):
        rows = {tuple(r) for r in Z}
        assert all(tuple(c) in rows for c in est.codebook_)


def test_deterministic_for_random_state_and_clone(fitted):
    method, est, Z = fitted
    again = clone(est).fit(Z, blob_labels(Z))
    assert np.array_equal(again.codebook_, est.codebook_)
    other = clone(est).set_params(random_state=11).fit(Z, blob_labels(Z))
    assert not np.array_equal(other.codebook_, est.codebook_)


def test_learned_methods_beat_the_random_prior(fitted):
    method, est, Z = fitted
    baseline = make_estimator("random-prior", n_clusters=K, random_state=3).fit(Z)
    err = np.mean(np.square(Z - est.quantize(Z, **lab(est, Z))))
    base = np.mean(np.square(Z - baseline.quantize(Z)))
    if method != "random-prior":
        assert err < 0.5 * base


def test_held_out_points_are_predicted(fitted):
    method, est, Z = fitted
    Q = blobs(n=100, seed=9)
    codes = est.predict(Q, **lab(est, Q))
    assert len(codes) == 100
    if method != "random-prior":  # held-out distortion is close to the fit set's, far below the data variance
        held_out, fitted_err = np.mean(np.square(Q - est.quantize(Q, **lab(est, Q)))), np.mean(np.square(Z - est.quantize(Z, **lab(est, Z))))
        assert held_out < 2 * fitted_err < np.mean(np.square(Q - Q.mean(0)))


def test_save_load_round_trip(fitted, tmp_path):
    method, est, Z = fitted
    save_codebook(tmp_path / "cb", est, {"note": "x"})
    loaded, meta = load_codebook(tmp_path / "cb", expected_dim=Z.shape[1])
    assert meta["method"] == method and meta["note"] == "x"
    assert np.array_equal(loaded.predict(Z, **lab(est, Z)), est.predict(Z, **lab(est, Z)))
    assert np.array_equal(loaded.codebook_, est.codebook_)


def test_input_errors(fitted):
    method, est, Z = fitted
    with pytest.raises(NotFittedError):
        clone(est).predict(Z, **lab(est, Z))
    with pytest.raises(ValueError, match="dimension 3 but the codebook was fitted on dimension 6"):
        est.predict(Z[:, :3], **lab(est, Z))
    with pytest.raises(ValueError, match="NaN"):
        est.predict(np.full_like(Z[:2], np.nan), **lab(est, Z[:2]))
    if est.needs_labels:  # without labels: a clear error, not a crash
        with pytest.raises(ValueError, match=f"the {method} codebook needs each vector's class label: call predict"):
            est.predict(Z)
