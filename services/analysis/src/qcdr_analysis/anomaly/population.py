"""Population models: one Isolation Forest and one k-means over every ready workload's windows.

Rows are windows in the units of their own workload's baseline (standard deviations from its
mean), so one model covers a cluster of very different workloads: what it learns is which
*combinations* of deviations are normal. One model instead of one per workload keeps memory flat
(a fitted forest is ~1 MB) and lets a workload with few windows borrow from the others.

Fitting is scikit-learn's; scoring uses the fitted trees and centroids exported to arrays
(:mod:`qcdr_analysis.anomaly.forest`), which is exact and cheap per window where scikit-learn
pays ~5 ms per call. Thresholds come from quantiles of the training scores, not from a guessed
contamination. Models are stored as arrays (npz without pickles), never as pickled estimators.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import orjson

from qcdr_analysis.anomaly.forest import CentroidArrays, ForestArrays

FORMAT = 1


@dataclass(frozen=True)
class PopulationModel:
    forest: ForestArrays
    forest_threshold: float  # anomaly score (−score_samples) above which a window votes
    centroids: CentroidArrays
    kmeans_threshold: float  # distance to the nearest centroid above which a window votes
    rows: int
    workloads: int
    fitted_at: datetime  # event time of the fit
    features: tuple[str, ...]

    def votes(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(forest scores, forest flags, k-means distances, k-means flags) for standardized rows."""
        scores = -self.forest.score_samples(rows)
        distances = self.centroids.distances(rows)
        return scores, scores > self.forest_threshold, distances, distances > self.kmeans_threshold

    def meta(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "forest_threshold": self.forest_threshold,
            "kmeans_threshold": self.kmeans_threshold,
            "rows": self.rows,
            "workloads": self.workloads,
            "fitted_at": self.fitted_at.isoformat(),
            "features": list(self.features),
            "clusters": int(self.centroids.centroids.shape[0]),
        }

    def to_bytes(self) -> tuple[bytes, bytes, bytes]:
        """(meta JSON, forest npz, centroids npz)."""
        return orjson.dumps(self.meta()), self.forest.to_npz_bytes(), self.centroids.to_npz_bytes()

    @classmethod
    def from_bytes(cls, meta: bytes, forest: bytes, centroids: bytes) -> PopulationModel:
        info = orjson.loads(meta)
        if info.get("format") != FORMAT:
            raise ValueError(f"population model format {info.get('format')!r} is not {FORMAT}")
        return cls(
            forest=ForestArrays.from_npz_bytes(forest),
            forest_threshold=float(info["forest_threshold"]),
            centroids=CentroidArrays.from_npz_bytes(centroids),
            kmeans_threshold=float(info["kmeans_threshold"]),
            rows=int(info["rows"]),
            workloads=int(info["workloads"]),
            fitted_at=datetime.fromisoformat(info["fitted_at"]),
            features=tuple(info["features"]),
        )


def fit(
    rows: np.ndarray,
    workloads: int,
    *,
    features: tuple[str, ...],
    fitted_at: datetime,
    trees: int,
    forest_quantile: float,
    max_clusters: int,
    kmeans_quantile: float,
    kmeans_margin: float,
    seed: int,
) -> PopulationModel:
    """Fit both models on ``rows`` (already standardized); CPU-bound, run it in a thread."""
    # imported here, not at the top: scikit-learn takes ~3 s to import, and every analysis process
    # (serve, consume, db upgrade) paid it at start-up though only a refit needs it
    from sklearn.cluster import KMeans
    from sklearn.ensemble import IsolationForest

    forest_model = IsolationForest(n_estimators=trees, max_samples=min(256, rows.shape[0]), random_state=seed)
    forest_model.fit(rows)
    forest = ForestArrays.from_sklearn(forest_model)
    train_scores = -forest.score_samples(rows)
    forest_threshold = float(np.quantile(train_scores, forest_quantile))
    clusters = max(2, min(max_clusters, int(math.sqrt(rows.shape[0] / 2))))
    kmeans_model = KMeans(n_clusters=clusters, n_init=3, random_state=seed).fit(rows)
    centroids = CentroidArrays.from_sklearn(kmeans_model, rows)
    distances = centroids.distances(rows)
    kmeans_threshold = float(np.quantile(distances, kmeans_quantile)) * kmeans_margin
    return PopulationModel(
        forest=forest,
        forest_threshold=forest_threshold,
        centroids=centroids,
        kmeans_threshold=kmeans_threshold,
        rows=int(rows.shape[0]),
        workloads=workloads,
        fitted_at=fitted_at,
        features=features,
    )
