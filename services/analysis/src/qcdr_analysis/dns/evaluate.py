"""Per-family evaluation of the classifier over a labelled CSV (``label,family,domain,source``).

Used by the evaluation test and bench/dga.py on shared/corpora/dga/labeled_domains.csv, which is
read in place and never used for training or threshold choice.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qcdr_analysis.dns.classifier import Model, load_classifier

# Families whose names are built from word lists: the issue reports them apart from the rest.
DICTIONARY_FAMILIES = frozenset({"suppobox", "matsnu", "gozi", "nymaim2", "rovnix"})


@dataclass(frozen=True)
class FamilyScore:
    family: str
    count: int
    detected: int
    dictionary: bool

    @property
    def tpr(self) -> float:
        return self.detected / self.count if self.count else 0.0


@dataclass(frozen=True)
class Evaluation:
    families: list[FamilyScore]
    legit: int
    false_positives: int
    false_positive_names: list[tuple[str, float]]

    @property
    def fpr(self) -> float:
        return self.false_positives / self.legit if self.legit else 0.0

    def macro(self, dictionary: bool) -> float:
        chosen = [f.tpr for f in self.families if f.dictionary == dictionary]
        return float(np.mean(chosen)) if chosen else 0.0

    def macro_all(self) -> float:
        return float(np.mean([f.tpr for f in self.families]))


def read(path: Path) -> list[tuple[str, str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return [(r["label"], r["family"], r["domain"]) for r in csv.DictReader(fh)]


def evaluate(rows: list[tuple[str, str, str]], model: Model | None = None) -> Evaluation:
    m = model or load_classifier()
    _, scores = m.score_names([d for _, _, d in rows])
    hits = scores >= m.threshold
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    legit = fp = 0
    fps: list[tuple[str, float]] = []
    for (label, family, domain), hit, score in zip(rows, hits, scores, strict=True):
        if label == "legit":
            legit += 1
            if hit:
                fp += 1
                fps.append((domain, float(score)))
        else:
            counts[family][0] += 1
            counts[family][1] += int(hit)
    families = [FamilyScore(f, n, d, f in DICTIONARY_FAMILIES) for f, (n, d) in sorted(counts.items())]
    return Evaluation(families, legit, fp, sorted(fps, key=lambda p: -p[1]))
