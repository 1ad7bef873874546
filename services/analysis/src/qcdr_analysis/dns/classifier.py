"""The DGA classifier: gradient-boosted trees over lexical features, shipped as JSON (no pickle).

``model.json`` is written by ``python -m qcdr_analysis.dns.train``; this module only evaluates it,
vectorised over a batch with numpy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
from qcdr_common.logging import get_logger

from qcdr_analysis.dns.domains import split
from qcdr_analysis.dns.features import FEATURES, MODEL_PATH, contrast_from_dict, matrix
from qcdr_analysis.dns.ngram import benign_model

__all__ = ["MODEL_PATH", "Forest", "Model", "Verdict", "classify", "load_classifier", "model_from_dict"]

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Verdict:
    domain: str
    registered: str
    score: float  # probability-like score in [0, 1]
    is_dga: bool
    reasons: tuple[str, ...]
    features: dict[str, float]


@dataclass(frozen=True)
class Forest:
    """Boosted regression trees in flat arrays, one row per tree, padded to the widest tree."""

    left: npt.NDArray[np.int64]
    right: npt.NDArray[np.int64]
    feature: npt.NDArray[np.int64]
    threshold: npt.NDArray[np.float64]
    value: npt.NDArray[np.float64]
    depth: int
    init: float
    learning_rate: float

    def raw(self, x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        # All trees step together: one (trees x names) array of node indices per level, so the
        # cost is a few numpy calls per level rather than per tree.
        trees = np.arange(self.left.shape[0])[:, None]
        rows = np.arange(x.shape[0])[None, :]
        node = np.zeros((self.left.shape[0], x.shape[0]), dtype=np.int64)
        for _ in range(self.depth):
            left = self.left[trees, node]
            feat = np.maximum(self.feature[trees, node], 0)
            go_left = x[rows, feat] <= self.threshold[trees, node]
            node = np.where(left < 0, node, np.where(go_left, left, self.right[trees, node]))
        total: npt.NDArray[np.float64] = self.value[trees, node].sum(axis=0)
        return self.init + self.learning_rate * total


@dataclass(frozen=True)
class Model:
    forest: Forest
    threshold: float
    meta: dict[str, Any]
    contrast: npt.NDArray[np.float64]  # trigram log-probabilities of generated DGA labels

    def scores(self, x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        if x.shape[0] == 0:
            return np.zeros(0)
        # Clipped: very confident rows would overflow exp, and 1e-22 is as good as 0 here.
        return 1.0 / (1.0 + np.exp(-np.clip(self.forest.raw(x), -50.0, 50.0)))

    def score_names(self, domains: Sequence[str]) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """(features, scores) for names; punycode labels score 0 (the model knows Latin text only)."""
        x = matrix(domains, contrast=self.contrast)
        scores = self.scores(x)
        idn = np.array([split(d).idn for d in domains], dtype=bool)
        if idn.any():
            scores[idn] = 0.0
        return x, scores


def model_from_dict(data: dict[str, Any]) -> Model:
    if list(data["features"]) != list(FEATURES):
        raise ValueError("model.json was trained on other features; re-run qcdr_analysis.dns.train")
    trees = data["trees"]
    width = max(len(t["left"]) for t in trees)

    def pad(key: str, fill: float, dtype: type) -> npt.NDArray[Any]:
        out: npt.NDArray[Any] = np.full((len(trees), width), fill, dtype=dtype)
        for i, t in enumerate(trees):
            out[i, : len(t[key])] = t[key]
        return out

    forest = Forest(
        left=pad("left", -1, np.int64),
        right=pad("right", -1, np.int64),
        feature=pad("feature", -1, np.int64),
        threshold=pad("threshold", 0.0, np.float64),
        value=pad("value", 0.0, np.float64),
        depth=int(data["max_depth"]),
        init=float(data["init"]),
        learning_rate=float(data["learning_rate"]),
    )
    if "dga_lm" not in data:
        raise ValueError("model.json has no DGA trigram model; re-run qcdr_analysis.dns.train")
    return Model(
        forest, float(data["threshold"]), dict(data.get("meta", {})), contrast_from_dict(data["dga_lm"])
    )


def threshold_at_fpr(benign_scores: npt.NDArray[np.float64], fpr: float) -> float:
    """The lowest threshold that lets at most ``fpr`` of ``benign_scores`` (sorted ascending) reach
    it; the small epsilon keeps an FPR given as k/n exactly (one read off an evaluation) at k."""
    k = math.floor(fpr * len(benign_scores) + 1e-9)
    if k >= len(benign_scores):
        return 0.0
    return float(np.nextafter(benign_scores[len(benign_scores) - k - 1], np.inf))


@lru_cache(maxsize=4)
def load_classifier(path: Path = MODEL_PATH) -> Model:
    model = model_from_dict(orjson.loads(path.read_bytes()))
    check_benign_ngrams(model)
    return model


def warm_classifier() -> None:
    """Load the model and lexicon (a few seconds, once per process; call it in a thread at
    start-up); a failure is logged, and the first use then loads (and reports) it again."""
    try:
        classify(["warm.example"])
    except Exception:  # start-up must not die of a model the first use reports on
        log.exception("dga_model_load_failed")


def check_benign_ngrams(model: Model) -> bool:
    """The benign 6-gram model is built from the installed wordfreq and hstspreload packages; with
    other versions than the model was trained with, scores drift from the evaluated ones. Warn
    (scoring still works, only less well than documented); False when they differ."""
    trained = model.meta.get("benign_ngrams", {}).get("digest")
    here = benign_model().digest
    if trained is not None and trained != here:
        log.warning(
            "the DGA model was trained with other word or site lists than installed here; "
            "its scores may differ from docs/DETECTION.md (re-run qcdr_analysis.dns.train)",
            trained=trained,
            installed=here,
        )
        return False
    return True


def _reasons(row: npt.NDArray[np.float64]) -> tuple[str, ...]:
    """Plain-language reasons a name looks machine-made (for the explanation, not the score)."""
    f = dict(zip(FEATURES, row.tolist(), strict=True))
    out = []
    if f["lm_mean"] < -3.6:
        out.append(f"unlike benign text (trigram log-likelihood {f['lm_mean']:.2f})")
    if f["word_coverage"] < 0.5 and f["length"] >= 8:
        out.append(f"few dictionary words ({f['word_coverage']:.0%} of letters)")
    if f["entropy"] >= 3.5:
        out.append(f"high entropy ({f['entropy']:.2f} bits)")
    if f["longest_consonant_run"] >= 5:
        out.append(f"{int(f['longest_consonant_run'])} consonants in a row")
    if f["digit_ratio"] >= 0.3 and f["letter_digit_switches"] >= 3:
        out.append(f"letters and digits interleaved ({f['digit_ratio']:.0%} digits)")
    if f["length"] >= 20:
        out.append(f"long label ({int(f['length'])} characters)")
    return tuple(out)


def classify(domains: Sequence[str], model: Model | None = None) -> list[Verdict]:
    """Score a batch of query names; one verdict per name, in order."""
    m = model or load_classifier()
    x, scores = m.score_names(domains)
    verdicts = []
    for domain, row, score in zip(domains, x, scores, strict=True):
        is_dga = bool(score >= m.threshold)
        verdicts.append(
            Verdict(
                domain=domain,
                registered=split(domain).registered,
                score=float(score),
                is_dga=is_dga,
                reasons=_reasons(row) if is_dga else (),
                features=dict(zip(FEATURES, (round(v, 4) for v in row.tolist()), strict=True)),
            )
        )
    return verdicts
