"""ForestArrays / CentroidArrays: scores equal scikit-learn's, bytes round-trip, bad bytes refused."""

from __future__ import annotations

import dataclasses
import io
import json
import zipfile
from typing import Any

import numpy as np
import pytest
import sklearn
from qcdr_analysis.anomaly.forest import CentroidArrays, ForestArrays
from sklearn.cluster import KMeans
from sklearn.ensemble import IsolationForest

TOLERANCE = 1e-9

CASES: list[tuple[int, int, dict[str, Any]]] = [
    (400, 3, {}),
    (1000, 12, {"n_estimators": 100}),
    (300, 5, {"contamination": 0.05}),
    (2000, 8, {"max_samples": 64, "contamination": 0.1}),
    (600, 16, {"max_features": 0.5}),
    (800, 7, {"max_features": 0.8, "bootstrap": True, "max_samples": 0.3}),
    (250, 4, {"max_features": 2, "n_estimators": 17}),
    (5, 3, {"n_estimators": 10}),  # fewer rows than the default 256 samples
    (1, 3, {"n_estimators": 5}),  # one row: sklearn's denominator is 0
]


def _data(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    # clusters, heavy tails and repeated values, so ties land on thresholds
    x = rng.normal(size=(n, d)) * rng.uniform(0.1, 10, size=d) + rng.integers(0, 3, size=(n, 1)) * 5
    x[:, 0] = np.round(x[:, 0])
    return x


@pytest.mark.parametrize(("n", "d", "params"), CASES)
def test_scores_equal_sklearn(n: int, d: int, params: dict[str, Any]) -> None:
    rng = np.random.default_rng(n * 31 + d)
    model = IsolationForest(random_state=d, **params).fit(_data(rng, n, d))
    forest = ForestArrays.from_sklearn(model)
    queries = np.vstack([_data(rng, 700, d), _data(rng, 50, d) * 20])
    for batch in (queries[:1], queries[:37], queries):
        assert np.max(np.abs(forest.score_samples(batch) - model.score_samples(batch))) <= TOLERANCE
    assert np.max(np.abs(forest.decision_function(queries) - model.decision_function(queries))) <= TOLERANCE
    again = ForestArrays.from_npz_bytes(forest.to_npz_bytes())
    assert np.array_equal(again.score_samples(queries), forest.score_samples(queries))
    assert again.offset == model.offset_


def test_missing_values_and_thresholds_exactly_hit() -> None:
    rng = np.random.default_rng(7)
    train = _data(rng, 1500, 6)
    train[rng.random(train.shape) < 0.05] = np.nan
    model = IsolationForest(random_state=0, max_features=0.7).fit(train)
    forest = ForestArrays.from_sklearn(model)
    queries = _data(rng, 1000, 6)
    queries[rng.random(queries.shape) < 0.1] = np.nan
    # rows sitting exactly on (float32-rounded) split thresholds
    trees = forest.feature >= 0
    queries[:200, 0] = forest.threshold[trees][:200]
    queries[200:210] = np.inf
    assert np.max(np.abs(forest.score_samples(queries) - model.score_samples(queries))) <= TOLERANCE


def test_feature_names_travel_with_the_model() -> None:
    rng = np.random.default_rng(3)
    model = IsolationForest(random_state=0, n_estimators=10).fit(_data(rng, 300, 4))
    named = dataclasses.replace(
        ForestArrays.from_sklearn(model), feature_names=("exec", "conn", "cpu", "mem")
    )
    again = ForestArrays.from_npz_bytes(named.to_npz_bytes())
    assert again.feature_names == ("exec", "conn", "cpu", "mem")
    assert again.sklearn_version == sklearn.__version__


def test_wrong_width_is_refused() -> None:
    model = IsolationForest(random_state=0, n_estimators=5).fit(np.zeros((20, 3)) + np.arange(20)[:, None])
    with pytest.raises(ValueError, match="3 features"):
        ForestArrays.from_sklearn(model).score_samples(np.zeros((2, 4)))


@pytest.fixture(scope="module")
def forest_bytes() -> bytes:
    rng = np.random.default_rng(5)
    model = IsolationForest(random_state=0, n_estimators=20, max_features=0.5).fit(_data(rng, 500, 6))
    return ForestArrays.from_sklearn(model).to_npz_bytes()


def _members(data: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def _repack(members: dict[str, Any], **changes: Any) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **{**members, **changes})
    return buffer.getvalue()


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda b: b"",
        lambda b: b"not a zip at all",
        lambda b: b[: len(b) // 2],
        lambda b: b[:100] + bytes(200) + b[300:],
    ],
)
def test_corrupt_bytes_raise_value_error(forest_bytes: bytes, corrupt: Any) -> None:
    with pytest.raises(ValueError, match="isolation forest archive"):
        ForestArrays.from_npz_bytes(corrupt(forest_bytes))


def _header(members: dict[str, np.ndarray], **changes: Any) -> np.ndarray:
    header = {**json.loads(members["header"].tobytes()), **changes}
    return np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)


@pytest.mark.parametrize(
    "change",
    [
        lambda m: {"left": m["left"].astype(np.int32)},  # wrong dtype
        lambda m: {"threshold": m["threshold"][:-1]},  # wrong length
        lambda m: {"left": np.where(m["left"] > 0, m["left"] + 10_000, m["left"])},  # outside its tree
        lambda m: {"left": np.where(m["left"] > 0, 0, m["left"])},  # cycle to the root
        lambda m: {"estimator_features": m["estimator_features"] + 100},
        lambda m: {"tree_offsets": m["tree_offsets"][::-1].copy()},
        lambda m: {"value": np.full_like(m["value"], np.nan)},
        lambda m: {"extra": np.zeros(3)},
        lambda m: {"header": _header(m, version=99)},
        lambda m: {"header": _header(m, format="something.else")},
        lambda m: {"header": _header(m, n_features="six")},
        lambda m: {"header": np.frombuffer(b"{not json", dtype=np.uint8)},
    ],
)
def test_inconsistent_archives_raise_value_error(forest_bytes: bytes, change: Any) -> None:
    members = _members(forest_bytes)
    with pytest.raises(ValueError, match="isolation forest archive"):
        ForestArrays.from_npz_bytes(_repack(members, **change(members)))


def test_a_pickle_inside_the_archive_is_refused(forest_bytes: bytes) -> None:
    members = _members(forest_bytes)
    evil = np.empty(1, dtype=object)
    evil[0] = {"payload": "would be unpickled"}
    buffer = io.BytesIO()
    tampered: dict[str, Any] = {**members, "value": evil}
    np.savez(buffer, **tampered)
    with pytest.raises(ValueError, match="isolation forest archive"):
        ForestArrays.from_npz_bytes(buffer.getvalue())
    # a raw pickle stored as a member file is not an .npy array either
    raw = io.BytesIO()
    with zipfile.ZipFile(raw, "w") as archive:
        for name, array in members.items():
            member = io.BytesIO()
            np.save(member, array)
            archive.writestr(f"{name}.npy", member.getvalue() if name != "value" else b"\x80\x04K\x01.")
    with pytest.raises(ValueError, match="isolation forest archive"):
        ForestArrays.from_npz_bytes(raw.getvalue())


# --- k-means ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "d", "k"), [(500, 3, 4), (2000, 12, 8), (300, 16, 2)])
def test_centroid_distances_match_sklearn(n: int, d: int, k: int) -> None:
    rng = np.random.default_rng(n + d + k)
    x = _data(rng, n, d)
    model = KMeans(n_clusters=k, n_init=3, random_state=0).fit(x)
    cents = CentroidArrays.from_sklearn(model, x)
    queries = _data(rng, 400, d)
    expected = model.transform(queries).min(axis=1)
    assert np.max(np.abs(cents.distances(queries) - expected)) <= 1e-7 * max(1.0, float(expected.max()))
    assert np.array_equal(cents.nearest(queries)[0], model.predict(queries))
    labels = model.predict(x)
    assert cents.counts.tolist() == np.bincount(labels, minlength=k).tolist()
    own = np.linalg.norm(x - model.cluster_centers_[labels], axis=1)
    for c in range(k):
        assert cents.mean_distance[c] == pytest.approx(own[labels == c].mean())
        assert cents.quantile_distance[c] == pytest.approx(np.quantile(own[labels == c], 0.95))
    rel = cents.relative_distances(queries)
    assert np.all(rel >= 0)
    again = CentroidArrays.from_npz_bytes(cents.to_npz_bytes())
    assert np.array_equal(again.distances(queries), cents.distances(queries))
    assert again.quantile == cents.quantile


def test_centroid_archives_are_checked() -> None:
    rng = np.random.default_rng(1)
    x = _data(rng, 200, 4)
    data = CentroidArrays.from_sklearn(
        KMeans(n_clusters=3, n_init=2, random_state=0).fit(x), x
    ).to_npz_bytes()
    members = _members(data)
    for change in (
        {"counts": members["counts"][:-1]},
        {"centroids": members["centroids"].astype(np.float32)},
        {"mean_distance": -members["mean_distance"]},
        {"header": _header(members, n_features=5)},
    ):
        with pytest.raises(ValueError, match="k-means archive"):
            CentroidArrays.from_npz_bytes(_repack(members, **change))
    with pytest.raises(ValueError, match="k-means archive"):
        CentroidArrays.from_npz_bytes(data[:50])
    with pytest.raises(ValueError, match="isolation forest archive"):
        ForestArrays.from_npz_bytes(data)  # a k-means archive is not a forest
