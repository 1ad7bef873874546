"""Isolation Forest and k-means models as plain numpy arrays: scored vectorised, stored without pickle.

scikit-learn's ``IsolationForest.score_samples`` walks each tree through joblib (about 5 ms a call
below ~100 rows), far from the 2 µs/row the detector stack needs. :class:`ForestArrays` exports the
fitted trees to concatenated node arrays and walks every (row, tree) pair at once, one depth level
per step, with numpy gathers over an ``(n_rows, n_trees)`` matrix of node indices. It computes what
``IsolationForest._compute_score_samples`` computes, term for term (tests hold it to 1e-9):

- rows are cast to float32 (as ``validate_data`` does) and compared ``x <= threshold`` against the
  float64 thresholds; a NaN goes where the node's ``missing_go_to_left`` says, else right;
- a tree sees the columns ``estimators_features_[t]`` only when ``max_features`` is below the
  number of features (otherwise sklearn trains and scores it on the unpermuted rows);
- a leaf contributes ``depth + c(n_node_samples) - 1`` (root depth 1) with
  ``c(n) = 2 (ln(n - 1) + γ) - 2 (n - 1) / n`` (0 for n ≤ 1, 1 for n = 2), and
  ``score = -2 ** (-sum / (n_trees * c(max_samples_)))``.

Both models persist as ``np.savez`` archives read back with ``allow_pickle=False`` plus a JSON
header (format, sklearn version, features); anything unexpected in them raises ``ValueError``.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, Self

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from sklearn.cluster import KMeans
    from sklearn.ensemble import IsolationForest

FORMAT_VERSION = 1
FOREST_FORMAT = "qcdr.isolation_forest"
CENTROIDS_FORMAT = "qcdr.kmeans_centroids"
HEADER_KEY = "header"
# Rows walked at once: the (rows x trees) index matrices then stay in the CPU cache.
ROW_CHUNK = 512

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]


def average_path_length(n: npt.ArrayLike) -> Floats:
    """``c(n)``: the mean depth of an unsuccessful search in a binary search tree of n items."""
    values = np.asarray(n, dtype=np.float64)
    out = np.zeros(values.shape)
    out[values == 2] = 1.0
    big = values > 2
    out[big] = 2.0 * (np.log(values[big] - 1.0) + np.euler_gamma) - 2.0 * (values[big] - 1.0) / values[big]
    return out


# --- npz with a JSON header ------------------------------------------------------------------


def _dump(header: dict[str, Any], arrays: dict[str, np.ndarray[Any, Any]]) -> bytes:
    buffer = io.BytesIO()
    raw = np.frombuffer(json.dumps(header, sort_keys=True).encode(), dtype=np.uint8)
    members: dict[str, Any] = {HEADER_KEY: raw, **arrays}
    np.savez(buffer, **members)
    return buffer.getvalue()


def _load(
    data: bytes, fmt: str, spec: dict[str, tuple[type[np.generic], int]]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and arrays, each array checked for its dtype and number of dimensions."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            names = set(npz.files)
            expected = {HEADER_KEY, *spec}
            if names != expected:
                raise ValueError(f"archive holds {sorted(names)}, expected {sorted(expected)}")
            arrays = {name: npz[name] for name in sorted(names)}
            # np.load hands back a member that is not an .npy array as raw bytes
            if not all(isinstance(a, np.ndarray) for a in arrays.values()):
                raise ValueError("an archive member is not a numpy array")
    except ValueError:
        raise
    except (OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise ValueError(f"not a readable model archive: {exc}") from exc
    raw = arrays.pop(HEADER_KEY)
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise ValueError("the header is not a byte string")
    try:
        header = json.loads(raw.tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"the header is not JSON: {exc}") from exc
    if not isinstance(header, dict) or header.get("format") != fmt:
        raise ValueError(f"not a {fmt} archive")
    if header.get("version") != FORMAT_VERSION:
        raise ValueError(f"format version {header.get('version')!r} is not {FORMAT_VERSION}")
    for name, (dtype, ndim) in spec.items():
        array = arrays[name]
        if array.dtype != np.dtype(dtype) or array.ndim != ndim:
            raise ValueError(f"{name}: {array.dtype}[{array.ndim}d], expected {np.dtype(dtype)}[{ndim}d]")
    return header, arrays


def _int(header: dict[str, Any], key: str, low: int) -> int:
    value = header.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"header {key!r} must be an integer >= {low}")
    return value


def _float(header: dict[str, Any], key: str) -> float:
    value = header.get(key)
    if not isinstance(value, int | float) or isinstance(value, bool) or not np.isfinite(value):
        raise ValueError(f"header {key!r} must be a finite number")
    return float(value)


def _names(header: dict[str, Any], n_features: int) -> tuple[str, ...] | None:
    names = header.get("feature_names")
    if names is None:
        return None
    if not isinstance(names, list) or len(names) != n_features or not all(isinstance(n, str) for n in names):
        raise ValueError(f"header 'feature_names' must be {n_features} strings")
    return tuple(names)


def _sklearn_version() -> str:
    # imported here: loading and scoring a stored model needs no sklearn
    import sklearn

    return str(sklearn.__version__)


def _feature_names(model: Any) -> tuple[str, ...] | None:
    names = getattr(model, "feature_names_in_", None)
    return None if names is None else tuple(str(n) for n in names)


def _rows(data: npt.ArrayLike, n_features: int, dtype: type[np.floating[Any]]) -> npt.NDArray[Any]:
    matrix = np.ascontiguousarray(data, dtype=dtype)
    if matrix.ndim != 2 or matrix.shape[1] != n_features:
        raise ValueError(f"expected rows of {n_features} features, got shape {matrix.shape}")
    return matrix


# --- Isolation Forest ------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ForestArrays:
    """A fitted ``IsolationForest`` as arrays. Node arrays hold every tree's nodes end to end
    (tree ``t`` is ``tree_offsets[t]:tree_offsets[t + 1]``); ``feature``, ``left`` and ``right``
    are tree-local as in sklearn (``-1`` children and ``-2`` feature at leaves)."""

    feature: Ints
    threshold: Floats
    left: Ints
    right: Ints
    missing_left: npt.NDArray[np.bool_]
    value: Floats  # at leaves: depth + c(n_node_samples) - 1; 0 elsewhere
    depth: Ints  # root = 1
    tree_offsets: Ints
    estimator_features: Ints  # (n_trees, max_features): columns each tree was trained on
    n_features: int
    max_samples: int
    offset: float
    feature_names: tuple[str, ...] | None = None
    sklearn_version: str = ""

    @classmethod
    def from_sklearn(cls, model: IsolationForest) -> Self:
        trees = [est.tree_ for est in model.estimators_]
        sizes = np.array([t.node_count for t in trees], dtype=np.int64)
        feature = np.concatenate([t.feature for t in trees]).astype(np.int64)
        left = np.concatenate([t.children_left for t in trees]).astype(np.int64)
        right = np.concatenate([t.children_right for t in trees]).astype(np.int64)
        samples = np.concatenate([t.n_node_samples for t in trees])
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        depth = _node_depths(left, right, offsets)
        is_leaf = left == -1
        value = np.where(is_leaf, depth + average_path_length(samples) - 1.0, 0.0)
        return cls(
            feature=feature,
            threshold=np.concatenate([t.threshold for t in trees]).astype(np.float64),
            left=left,
            right=right,
            missing_left=np.concatenate([t.missing_go_to_left for t in trees]).astype(bool),
            value=value,
            depth=depth,
            tree_offsets=offsets,
            estimator_features=np.array(model.estimators_features_, dtype=np.int64),
            n_features=int(model.n_features_in_),
            max_samples=int(model._max_samples),
            offset=float(model.offset_),
            feature_names=_feature_names(model),
            sklearn_version=_sklearn_version(),
        )

    @property
    def n_trees(self) -> int:
        return len(self.tree_offsets) - 1

    @cached_property
    def _plan(self) -> _ForestPlan:
        return _ForestPlan.of(self)

    def score_samples(self, rows: npt.ArrayLike) -> Floats:
        """The same as ``IsolationForest.score_samples(X)`` (lower is more abnormal)."""
        matrix = _rows(rows, self.n_features, np.float32)
        plan = self._plan
        total = np.empty(len(matrix))
        for start in range(0, len(matrix), ROW_CHUNK):
            total[start : start + ROW_CHUNK] = plan.path_sums(matrix[start : start + ROW_CHUNK])
        denominator = self.n_trees * float(average_path_length(self.max_samples))
        if denominator == 0:  # one training row: sklearn sets the ratio to 1
            return np.full(len(matrix), -0.5)
        return -(2.0 ** (-(total / denominator)))

    def decision_function(self, rows: npt.ArrayLike) -> Floats:
        return self.score_samples(rows) - self.offset

    def to_npz_bytes(self) -> bytes:
        header = {
            "format": FOREST_FORMAT,
            "version": FORMAT_VERSION,
            "sklearn_version": self.sklearn_version,
            "n_features": self.n_features,
            "feature_names": list(self.feature_names) if self.feature_names is not None else None,
            "max_samples": self.max_samples,
            "offset": self.offset,
        }
        return _dump(header, {name: getattr(self, name) for name in _FOREST_ARRAYS})

    @classmethod
    def from_npz_bytes(cls, data: bytes) -> Self:
        try:
            header, arrays = _load(data, FOREST_FORMAT, _FOREST_ARRAYS)
            n_features = _int(header, "n_features", 1)
            forest = cls(
                **arrays,
                n_features=n_features,
                max_samples=_int(header, "max_samples", 1),
                offset=_float(header, "offset"),
                feature_names=_names(header, n_features),
                sklearn_version=str(header.get("sklearn_version", "")),
            )
            forest.validate()
        except ValueError as exc:
            raise ValueError(f"invalid isolation forest archive: {exc}") from exc
        return forest

    def validate(self) -> None:
        """Raise ValueError unless the arrays form well-shaped trees (every walk ends at a leaf)."""
        n = len(self.feature)
        for name in ("threshold", "left", "right", "missing_left", "value", "depth"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} nodes, feature has {n}")
        offsets = self.tree_offsets
        if len(offsets) < 2 or offsets[0] != 0 or offsets[-1] != n or np.any(np.diff(offsets) < 1):
            raise ValueError("tree_offsets must rise from 0 to the node count, each tree non-empty")
        sizes = np.diff(offsets)
        local_size = np.repeat(sizes, sizes)
        leaf = self.left == -1
        if np.any(leaf != (self.right == -1)):
            raise ValueError("a node has exactly one child")
        inner = ~leaf
        for name in ("left", "right"):
            child = getattr(self, name)[inner]
            if np.any(child < 1) or np.any(child >= local_size[inner]):
                raise ValueError(f"{name} points outside its tree")
        tree_of = np.repeat(np.arange(len(sizes)), sizes)
        roots = offsets[:-1]
        if np.any(self.depth[roots] != 1):
            raise ValueError("a root's depth is not 1")
        base = offsets[tree_of]
        for name in ("left", "right"):
            # depth rising by one along every edge rules out cycles
            child = base[inner] + getattr(self, name)[inner]
            if np.any(self.depth[child] != self.depth[inner] + 1):
                raise ValueError("node depths do not follow the tree")
        features = self.estimator_features
        if (
            features.ndim != 2
            or features.shape[0] != len(sizes)
            or not 1 <= features.shape[1] <= self.n_features
        ):
            raise ValueError("estimator_features must be (n_trees, 1..n_features)")
        if np.any(features < 0) or np.any(features >= self.n_features):
            raise ValueError("estimator_features names a column outside the rows")
        if np.any(self.feature[inner] < 0) or np.any(self.feature[inner] >= features.shape[1]):
            raise ValueError("a split names a feature its tree does not have")
        if not np.all(np.isfinite(self.value)) or np.isnan(self.threshold[inner]).any():
            raise ValueError("leaf values must be finite and thresholds not NaN")


_FOREST_ARRAYS: dict[str, tuple[type[np.generic], int]] = {
    "feature": (np.int64, 1),
    "threshold": (np.float64, 1),
    "left": (np.int64, 1),
    "right": (np.int64, 1),
    "missing_left": (np.bool_, 1),
    "value": (np.float64, 1),
    "depth": (np.int64, 1),
    "tree_offsets": (np.int64, 1),
    "estimator_features": (np.int64, 2),
}


def _node_depths(left: Ints, right: Ints, offsets: Ints) -> Ints:
    """Depth of every node (root 1), level by level over all trees at once."""
    depth = np.zeros(len(left), dtype=np.int64)
    tree_of = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    frontier = offsets[:-1].copy()
    level = 1
    while len(frontier):
        depth[frontier] = level
        inner = frontier[left[frontier] != -1]
        base = offsets[tree_of[inner]]
        frontier = np.concatenate([base + left[inner], base + right[inner]])
        level += 1
    return depth


@dataclass(frozen=True)
class _ForestPlan:
    """Traversal arrays derived from :class:`ForestArrays`: global node ids, leaves that loop to
    themselves (so every walk can take the same number of steps), columns already mapped through
    ``estimator_features`` and thresholds made exact in float32."""

    roots: npt.NDArray[np.int32]
    children: npt.NDArray[np.int32]  # (2 * n_nodes,): [left, right] of node i at 2i, 2i + 1
    column: npt.NDArray[np.int32]
    threshold: npt.NDArray[np.float32]
    missing_left: npt.NDArray[np.bool_] | None
    value: Floats
    steps: int
    n_features: int

    @classmethod
    def of(cls, forest: ForestArrays) -> _ForestPlan:
        offsets = forest.tree_offsets
        sizes = np.diff(offsets)
        tree_of = np.repeat(np.arange(len(sizes)), sizes)
        node = np.arange(len(forest.feature))
        leaf = forest.left == -1
        base = offsets[tree_of]
        left = np.where(leaf, node, base + forest.left)
        right = np.where(leaf, node, base + forest.right)
        local = np.where(leaf, 0, forest.feature)
        if forest.estimator_features.shape[1] == forest.n_features:
            column = local  # sklearn ignores the (permuted) subsets when every feature is used
        else:
            column = forest.estimator_features[tree_of, local]
        # x32 <= t64 exactly when x32 <= the largest float32 not above t64.
        thr = forest.threshold.astype(np.float32)
        above = thr.astype(np.float64) > forest.threshold
        thr[above] = np.nextafter(thr[above], np.float32(-np.inf))
        missing = forest.missing_left & ~leaf
        return cls(
            roots=offsets[:-1].astype(np.int32),
            children=np.stack([left, right], axis=1).reshape(-1).astype(np.int32),
            column=column.astype(np.int32),
            threshold=thr,
            missing_left=missing if missing.any() else None,
            value=forest.value,
            steps=int(forest.depth.max()) - 1,
            n_features=forest.n_features,
        )

    def path_sums(self, rows: npt.NDArray[np.float32]) -> Floats:
        """Sum over trees of each row's leaf value, every (row, tree) pair walked at once."""
        n = len(rows)
        flat = rows.reshape(-1)
        row_base = (np.arange(n, dtype=np.int32) * np.int32(self.n_features))[:, None]
        node = np.broadcast_to(self.roots, (n, len(self.roots))).copy()
        nan_rows = self.missing_left is not None and bool(np.isnan(rows).any())
        for _ in range(self.steps):
            x = flat.take(row_base + self.column.take(node))
            go_right = ~(x <= self.threshold.take(node))  # NaN compares False: right
            if nan_rows and self.missing_left is not None:
                go_right &= ~(np.isnan(x) & self.missing_left.take(node))
            node = self.children.take(2 * node + go_right)
        values: Floats = self.value.take(node).sum(axis=1)
        return values


# --- k-means ---------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class CentroidArrays:
    """A fitted ``KMeans`` as centroids plus how far their training members lay from them."""

    centroids: Floats  # (k, n_features)
    counts: Ints  # training rows nearest each centroid
    mean_distance: Floats
    quantile_distance: Floats  # the ``quantile`` of member distances (0 for an empty cluster)
    quantile: float
    feature_names: tuple[str, ...] | None = None
    sklearn_version: str = ""

    @property
    def n_features(self) -> int:
        return int(self.centroids.shape[1])

    @classmethod
    def from_sklearn(cls, model: KMeans, rows: npt.ArrayLike, *, quantile: float = 0.95) -> Self:
        if not 0.0 < quantile <= 1.0:
            raise ValueError("quantile must be in (0, 1]")
        base = cls(
            centroids=np.array(model.cluster_centers_, dtype=np.float64),
            counts=np.zeros(len(model.cluster_centers_), dtype=np.int64),
            mean_distance=np.zeros(len(model.cluster_centers_)),
            quantile_distance=np.zeros(len(model.cluster_centers_)),
            quantile=quantile,
            feature_names=_feature_names(model),
            sklearn_version=_sklearn_version(),
        )
        nearest, dist = base.nearest(rows)
        k = len(base.centroids)
        counts = np.bincount(nearest, minlength=k).astype(np.int64)
        sums = np.bincount(nearest, weights=dist, minlength=k)
        mean = np.divide(sums, counts, out=np.zeros(k), where=counts > 0)
        high = np.zeros(k)
        order = np.lexsort((dist, nearest))  # members of each cluster together, nearest first
        starts = np.concatenate([[0], np.cumsum(counts)])
        for c in np.flatnonzero(counts):
            high[c] = np.quantile(dist[order[starts[c] : starts[c + 1]]], quantile)
        return cls(
            centroids=base.centroids,
            counts=counts,
            mean_distance=mean,
            quantile_distance=high,
            quantile=quantile,
            feature_names=base.feature_names,
            sklearn_version=base.sklearn_version,
        )

    def nearest(self, rows: npt.ArrayLike) -> tuple[Ints, Floats]:
        """Each row's nearest centroid and its Euclidean distance to it."""
        matrix = _rows(rows, self.n_features, np.float64)
        c = self.centroids
        squared = (matrix * matrix).sum(axis=1)[:, None] - 2.0 * matrix @ c.T + (c * c).sum(axis=1)[None, :]
        index = squared.argmin(axis=1).astype(np.int64)
        # the expansion can round below zero; the exact difference is recomputed for the winner
        diff = matrix - c[index]
        return index, np.sqrt((diff * diff).sum(axis=1))

    def distances(self, rows: npt.ArrayLike) -> Floats:
        return self.nearest(rows)[1]

    def relative_distances(self, rows: npt.ArrayLike) -> Floats:
        """Distance over the nearest cluster's quantile radius (inf past a zero radius)."""
        index, dist = self.nearest(rows)
        radius = self.quantile_distance[index]
        with np.errstate(divide="ignore", invalid="ignore"):
            out: Floats = np.where(
                radius > 0, dist / np.where(radius > 0, radius, 1.0), np.where(dist > 0, np.inf, 0.0)
            )
        return out

    def to_npz_bytes(self) -> bytes:
        header = {
            "format": CENTROIDS_FORMAT,
            "version": FORMAT_VERSION,
            "sklearn_version": self.sklearn_version,
            "n_features": self.n_features,
            "feature_names": list(self.feature_names) if self.feature_names is not None else None,
            "quantile": self.quantile,
        }
        return _dump(header, {name: getattr(self, name) for name in _CENTROID_ARRAYS})

    @classmethod
    def from_npz_bytes(cls, data: bytes) -> Self:
        try:
            return cls._from_archive(*_load(data, CENTROIDS_FORMAT, _CENTROID_ARRAYS))
        except ValueError as exc:
            raise ValueError(f"invalid k-means archive: {exc}") from exc

    @classmethod
    def _from_archive(cls, header: dict[str, Any], arrays: dict[str, Any]) -> Self:
        n_features = _int(header, "n_features", 1)
        quantile = _float(header, "quantile")
        centroids = arrays["centroids"]
        k = centroids.shape[0]
        if k < 1 or centroids.shape[1] != n_features:
            raise ValueError(f"centroids have shape {centroids.shape}, expected (k >= 1, {n_features})")
        for name in ("counts", "mean_distance", "quantile_distance"):
            if arrays[name].shape != (k,):
                raise ValueError(f"{name} has shape {arrays[name].shape}, expected ({k},)")
        if not np.all(np.isfinite(centroids)) or np.any(arrays["counts"] < 0) or not 0.0 < quantile <= 1.0:
            raise ValueError("centroids must be finite, counts non-negative and the quantile in (0, 1]")
        for name in ("mean_distance", "quantile_distance"):
            if not np.all(np.isfinite(arrays[name])) or np.any(arrays[name] < 0):
                raise ValueError(f"{name} must be finite and non-negative")
        return cls(
            **arrays,
            quantile=quantile,
            feature_names=_names(header, n_features),
            sklearn_version=str(header.get("sklearn_version", "")),
        )


_CENTROID_ARRAYS: dict[str, tuple[type[np.generic], int]] = {
    "centroids": (np.float64, 2),
    "counts": (np.int64, 1),
    "mean_distance": (np.float64, 1),
    "quantile_distance": (np.float64, 1),
}
