"""Class-conditional codebooks: one k-means codebook per class, checked against k-means (own and
scikit-learn's) on each class alone; global codes, bits, label errors, persistence, and the labels'
way through the pipeline helpers (predict_codes, quantize_latents, path_labels, fit_on_latents)."""

import json
import math

import numpy as np
import pytest
from sklearn.cluster import KMeans as SkKMeans

from posthoc_vq.config import QuantizeConfig
from posthoc_vq.errors import ConfigError
from posthoc_vq.evaluation.generation import quantize_latents, sample_codes
from posthoc_vq.evaluation.interpolation import path_labels, quantize_paths
from posthoc_vq.latents import LatentSet
from posthoc_vq.quantize.codebooks import fit_on_latents
from posthoc_vq.quantize.latent.base import ClassLabelError, predict_codes
from posthoc_vq.quantize.latent.class_conditional import ClassConditionalKMeans
from posthoc_vq.quantize.latent.kmeans import KMeans
from posthoc_vq.quantize.latent.store import load_codebook, make_estimator, save_codebook

CLASSES = np.array([2, 5, 9])  # not 0..n-1: positions in classes_ and labels differ


def labelled(n_per_class=(300, 200, 250), d=4, seed=0):
    """Points of three classes and their labels (N,) in CLASSES: per class, 4 blobs on the corners of a
    square of side 8, shifted by a class offset of a few units (so classes overlap in space)."""
    rng = np.random.default_rng(seed)
    corners = np.zeros((4, d))
    corners[:, :2] = 8.0 * np.array([[0, 0], [0, 1], [1, 0], [1, 1]])
    shifts = np.random.default_rng(100).normal(0, 2, (len(CLASSES), d))  # fixed: held-out sets share the classes
    Z, y = [], []
    for c, n, shift in zip(CLASSES, n_per_class, shifts):
        Z.append(corners[rng.integers(0, 4, n)] + shift + rng.normal(0, 0.7, (n, d)))
        y.append(np.full(n, c))
    order = rng.permutation(sum(n_per_class))  # classes interleaved, as in a real fit set
    return np.concatenate(Z)[order].astype(np.float32), np.concatenate(y)[order].astype(np.int64)


@pytest.fixture(scope="module")
def fitted():
    Z, y = labelled()
    return ClassConditionalKMeans(12, max_iter=50, random_state=4).fit(Z, y), Z, y  # K_c = 4


# ---------------------------------------------------------------------------- the per-class codebooks


def test_each_class_block_is_kmeans_fitted_on_that_class_alone(fitted):
    est, Z, y = fitted
    assert est.codes_per_class_ == 4 and est.classes_.tolist() == CLASSES.tolist()
    assert est.codebook_.shape == (12, 4) and est.class_counts_.tolist() == [300, 200, 250]
    total = 0.0
    for i, c in enumerate(CLASSES):
        Zc = Z[y == c]
        own = KMeans(4, max_iter=50, random_state=4 + i).fit(Zc)  # the rule: class position i seeds random_state + i
        np.testing.assert_array_equal(est.codebook_[4 * i : 4 * i + 4], own.codebook_)
        np.testing.assert_array_equal(est.labels_[y == c], own.labels_ + 4 * i)
        assert est.inertia_per_class_[i] == pytest.approx(own.inertia_)
        ref = SkKMeans(4, n_init=10, random_state=0).fit(Zc)  # scikit-learn on the class alone, best of 10 starts
        assert abs(est.inertia_per_class_[i] - ref.inertia_) <= 0.01 * ref.inertia_
        total += own.inertia_
    assert est.inertia_ == pytest.approx(total)


def test_codes_lie_in_their_class_block_and_transform_agrees(fitted):
    est, Z, y = fitted
    Q, yq = labelled(n_per_class=(40, 30, 20), seed=7)  # held-out points, same classes
    codes = est.predict(Q, yq)
    position = np.searchsorted(CLASSES, yq)
    assert codes.dtype == np.int64 and np.array_equal(codes // 4, position)
    assert np.array_equal(est.labels_ // 4, np.searchsorted(CLASSES, y))
    dist = est.transform(Q, yq)
    assert dist.shape == (len(Q), 12) and dist.dtype == np.float32
    own_block = (np.arange(12)[None, :] // 4) == position[:, None]
    assert np.isinf(dist[~own_block]).all() and np.isfinite(dist[own_block]).all()
    assert np.array_equal(dist.argmin(-1), codes)
    # the code is the nearest vector of the class's codebook (float64 check), even where another class's vector is nearer
    d_all = ((Q[:, None, :].astype(np.float64) - est.codebook_[None].astype(np.float64)) ** 2).sum(-1)  # (N, 12)
    d_own = np.where(own_block, d_all, np.inf)
    assert np.array_equal(codes, d_own.argmin(1))
    assert (d_all.argmin(1) // 4 != position).any()  # the data do overlap: the unconditional nearest code is sometimes another class's
    np.testing.assert_allclose(dist[np.arange(len(Q)), codes], np.linalg.norm(Q - est.codebook_[codes], axis=1), atol=1e-3)
    np.testing.assert_array_equal(est.quantize(Q, yq), est.inverse_transform(codes))
    np.testing.assert_array_equal(est.fit_transform(Z, y), est.transform(Z, y))


def test_a_vector_is_coded_in_its_labelled_class_even_when_it_lies_in_another():
    Z, y = labelled()
    est = ClassConditionalKMeans(12, random_state=0).fit(Z, y)
    x = Z[y == 9][:5]  # class-9 points, claimed to be of class 2: coded with class 2's codebook
    assert np.all(est.predict(x, np.full(5, 2)) < 4)
    assert np.all(est.predict(x, np.full(5, 9)) >= 8)


def test_bits_per_vector_is_label_plus_code_bits():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(10), 110)
    Z = (rng.normal(size=(len(y), 2)) + y[:, None]).astype(np.float32)
    est = ClassConditionalKMeans(1024, max_iter=3).fit(Z, y)
    assert est.codes_per_class_ == 102 and est.n_codes == 1020 and est.codebook_.shape == (1020, 2)
    assert est.bits_per_vector == math.log2(10) + math.log2(102)
    assert 9.99 < est.bits_per_vector <= 10.0  # at most the global K = 1024 codebook's 10 bits
    # the K - n_classes * K_c codes left over are not used: 12 over 5 classes is 2 per class, 10 codes
    five = ClassConditionalKMeans(12, max_iter=3).fit(Z[y < 5], y[y < 5])
    assert five.n_codes == 10 and five.bits_per_vector == math.log2(5) + 1.0
    one = ClassConditionalKMeans(4, max_iter=3).fit(Z[y == 3], y[y == 3])  # a single class: plain k-means, no label bits
    assert one.n_codes == 4 and one.bits_per_vector == 2.0


# ---------------------------------------------------------------------------- label errors


def test_missing_labels_are_a_clear_error_everywhere(fitted):
    est, Z, y = fitted
    for call, name in ((lambda: est.predict(Z), "predict"), (lambda: est.transform(Z), "transform"), (lambda: est.quantize(Z), "predict"),
                       (lambda: predict_codes(est, Z), "predict"), (lambda: ClassConditionalKMeans(12).fit(Z), "fit"),
                       (lambda: ClassConditionalKMeans(12).fit_predict(Z), "fit")):
        with pytest.raises(ClassLabelError, match=rf"the class-conditional codebook needs each vector's class label: call {name}\(Z, y=labels\).*quantize.method 'class-conditional'"):
            call()
    assert issubclass(ClassLabelError, ConfigError) and issubclass(ClassLabelError, ValueError)  # the CLI prints it and exits 2
    # the helper passes labels to the estimators that need them only
    km = KMeans(4, max_iter=5).fit(Z)
    assert np.array_equal(predict_codes(km, Z, None), km.predict(Z)) and np.array_equal(predict_codes(km, Z, y), km.predict(Z))
    assert np.array_equal(predict_codes(est, Z, y), est.predict(Z, y))


def test_a_class_absent_from_the_fit_set_names_the_class_and_its_count(fitted):
    est, Z, y = fitted
    y_bad = y[:10].copy()
    y_bad[[1, 4, 6]] = 7
    with pytest.raises(ClassLabelError, match=r"class 7 \(3 vectors\): not in the fit set of this class-conditional codebook, which has codes for classes \[2, 5, 9\] only; drop these vectors, or refit"):
        est.predict(Z[:10], y_bad)
    with pytest.raises(ClassLabelError, match=r"class 7 \(3 vectors\)"):
        est.transform(Z[:10], y_bad)


def test_a_class_with_fewer_vectors_than_its_codes_names_the_class_counts_and_the_fix():
    Z, y = labelled(n_per_class=(300, 3, 250))
    with pytest.raises(ClassLabelError, match=r"class 5 has 3 vectors, fewer than its K_c = floor\(K / n_classes\) = floor\(12 / 3\) = 4 codes per class; lower K to at most 9, or drop the class"):
        ClassConditionalKMeans(12).fit(Z, y)
    ClassConditionalKMeans(9, max_iter=5).fit(Z, y)  # the suggested K works: K_c = 3
    with pytest.raises(ClassLabelError, match=r"K=2 codes cannot be split over the 3 classes of the fit set.*raise K to at least 3"):
        ClassConditionalKMeans(2).fit(Z, y)


def test_labels_of_the_wrong_length_or_kind_are_a_clear_error(fitted):
    est, Z, y = fitted
    with pytest.raises(ClassLabelError, match=r"fit\(Z, y=labels\): y has shape \(5,\) but Z has 750 vectors; pass one class label per vector, y of shape \(750,\)"):
        ClassConditionalKMeans(12).fit(Z, y[:5])
    with pytest.raises(ClassLabelError, match=r"predict\(Z, y=labels\): y has shape \(749,\) but Z has 750 vectors"):
        est.predict(Z, y[:-1])
    with pytest.raises(ClassLabelError, match=r"transform\(Z, y=labels\): y has shape \(750, 1\)"):
        est.transform(Z, y[:, None])
    with pytest.raises(ClassLabelError, match="class labels must be integers, got dtype float64 with non-integer values"):
        est.predict(Z, y + 0.5)
    assert np.array_equal(est.predict(Z, y.astype(np.float64)), est.predict(Z, y))  # whole-valued floats are labels


# ---------------------------------------------------------------------------- persistence


def test_save_load_round_trip_keeps_classes_and_codes(fitted, tmp_path):
    est, Z, y = fitted
    record = json.loads(save_codebook(tmp_path / "cb", est, {"note": "x"}).read_text())
    assert record["method"] == "class-conditional" and record["n_codes"] == 12
    assert record["state"]["classes"] == [2, 5, 9] and record["state"]["codes_per_class"] == 4
    assert record["bits_per_vector"] == pytest.approx(math.log2(3) + 2.0)
    assert record["tensor_shapes"] == {"codebook": [12, 4]}  # no pickle: one tensor, the rest JSON
    loaded, meta = load_codebook(tmp_path / "cb", expected_dim=4)
    assert type(loaded) is ClassConditionalKMeans and meta["note"] == "x"
    assert loaded.classes_.tolist() == [2, 5, 9] and loaded.codes_per_class_ == 4 and loaded.bits_per_vector == est.bits_per_vector
    np.testing.assert_array_equal(loaded.codebook_, est.codebook_)
    np.testing.assert_array_equal(loaded.predict(Z, y), est.predict(Z, y))
    assert loaded.inertia_ == pytest.approx(est.inertia_)
    # a record whose classes disagree with the tensor is refused
    bad = make_estimator("class-conditional", n_clusters=12)
    with pytest.raises(ValueError, match=r"codebook has 12 vectors but 2 classes x codes_per_class 4 = 8"):
        bad.load_state(est.state_tensors(), {**est.state_info(), "classes": [2, 5]})


# ---------------------------------------------------------------------------- labels through the pipeline helpers


def test_grid_latents_code_every_token_with_its_images_class():
    rng = np.random.default_rng(1)
    labels = np.repeat([0, 1], 30)
    values = (rng.normal(size=(60, 3, 2, 2)) + 5 * labels[:, None, None, None]).astype(np.float32)  # (N, C, h, w)
    latents = LatentSet(values, labels, "train", "mu", None)
    est, meta = fit_on_latents(latents, QuantizeConfig(method="class-conditional", K=8, max_iter=20))
    assert est.codes_per_class_ == 4 and meta["tokens_per_image"] == 4
    assert meta["bits_per_image"] == pytest.approx(4 * (1.0 + 2.0))
    usage = meta["fit_usage"]["per_class"]
    assert usage["purity"] == 1.0  # every code is used by one class only
    assert [usage["classes"][c]["n_vectors"] for c in ("0", "1")] == [120, 120] and all(usage["classes"][c]["used"] <= 4 for c in ("0", "1"))
    codes = predict_codes(est, latents.tokens(), latents.token_labels())
    assert np.array_equal(codes // 4, latents.token_labels())
    zq = quantize_latents(est, values, labels)
    assert zq.shape == values.shape
    np.testing.assert_array_equal(zq[:, :, 1, 0], est.codebook_[codes.reshape(60, 2, 2)[:, 1, 0]])
    with pytest.raises(ClassLabelError, match="needs each vector's class label"):
        quantize_latents(est, values)
    # drawing codes from the codebook's prior needs no labels: a code names its class
    drawn = sample_codes(est, codes, 50, "empirical", seed=0)
    assert est.inverse_transform(drawn).shape == (50, 3)


def test_interpolation_points_take_the_class_of_the_nearer_end():
    assert path_labels(np.array([3, 1]), np.array([8, 2]), 5).tolist() == [[3, 3, 3, 8, 8], [1, 1, 1, 2, 2]]
    assert path_labels(np.array([3]), np.array([8]), 4).tolist() == [[3, 3, 8, 8]]
    Z, y = labelled()
    est = ClassConditionalKMeans(12, max_iter=20).fit(Z, y)
    a, b = Z[y == 2][:1], Z[y == 9][:1]
    paths = (np.linspace(0, 1, 5)[None, :, None] * (b - a)[:, None] + a[:, None]).astype(np.float32)  # (1, 5, D)
    quantized = quantize_paths(est, paths, path_labels(np.array([2]), np.array([9]), 5))
    assert np.array_equal(quantized[0, :3], est.quantize(paths[0, :3], np.full(3, 2)))
    assert np.array_equal(quantized[0, 3:], est.quantize(paths[0, 3:], np.full(2, 9)))


def test_a_fit_set_without_class_labels_is_refused():
    rng = np.random.default_rng(2)
    latents = LatentSet(rng.normal(size=(100, 4)).astype(np.float32), np.zeros(100, dtype=np.int64), "train", "mu", None)  # CelebA: all 0
    with pytest.raises(ConfigError, match=r"quantize.method=class-conditional needs each image's class label, but every image of fit set 'train' has the same label \(\[0\]\)"):
        fit_on_latents(latents, QuantizeConfig(method="class-conditional", K=8))
    fit_on_latents(latents, QuantizeConfig(method="kmeans", K=8, max_iter=5))  # the others need none
