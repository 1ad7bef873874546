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
import numpy.typing as npt

from qcdr_analysis.dns.classifier import Model, load_classifier, threshold_at_fpr

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


def macro(families: list[FamilyScore], dictionary: bool) -> float:
    """Mean TPR over the word-list families (``dictionary``) or over the others."""
    chosen = [f.tpr for f in families if f.dictionary == dictionary]
    return float(np.mean(chosen)) if chosen else 0.0


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
        return macro(self.families, dictionary)

    def macro_all(self) -> float:
        return float(np.mean([f.tpr for f in self.families]))


# (family, source) -> the family the names are by construction. The chrmor sample labels Nymaim2's
# word-pair names "nymaim": its 176 rows (searched-cookie.net, woundfinger.ws) have Nymaim2's shape
# in baderj's re-implementation (two words, a hyphen in 45 % vs 43 %, 14.3 vs 14.5 letters, every
# one of their 58 suffixes among Nymaim2's 68), while baderj's nymaim is random letters (8 on
# average, no hyphen) on com/net/org/info/biz only. tests/analysis/test_dga_eval.py checks this.
RELABELLED = {("nymaim", "chrmor"): "nymaim2"}


def read(path: Path, *, relabel: bool = True) -> list[tuple[str, str, str]]:
    """(label, family, domain) rows; ``relabel``: families by construction (``RELABELLED``)."""
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    out = []
    for r in rows:
        family = r["family"]
        if relabel:
            family = RELABELLED.get((family, (r.get("source") or "").strip()), family)
        out.append((r["label"], family, r["domain"]))
    return out


def score(rows: list[tuple[str, str, str]], model: Model | None = None) -> npt.NDArray[np.float64]:
    """Every row's score: computed once, it serves both :func:`evaluate` and :func:`operating_curve`."""
    _, scores = (model or load_classifier()).score_names([d for _, _, d in rows])
    return scores


def evaluate(
    rows: list[tuple[str, str, str]],
    model: Model | None = None,
    scores: npt.NDArray[np.float64] | None = None,
) -> Evaluation:
    """``scores``: the rows' scores under ``model`` when already computed (:func:`score`)."""
    m = model or load_classifier()
    if scores is None:
        scores = score(rows, m)
    hits = scores >= m.threshold
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    legit = fp = 0
    fps: list[tuple[str, float]] = []
    for (label, family, domain), hit, value in zip(rows, hits, scores, strict=True):
        if label == "legit":
            legit += 1
            if hit:
                fp += 1
                fps.append((domain, float(value)))
        else:
            counts[family][0] += 1
            counts[family][1] += int(hit)
    families = [FamilyScore(f, n, d, f in DICTIONARY_FAMILIES) for f, (n, d) in sorted(counts.items())]
    return Evaluation(families, legit, fp, sorted(fps, key=lambda p: -p[1]))


@dataclass(frozen=True)
class OperatingPoint:
    """What the non-dictionary macro TPR would be at a threshold that lets ``fpr`` of the legit
    names through. A diagnostic of how far the lexical score is from a goal: the shipped threshold
    is chosen on validation data, never from this curve."""

    fpr: float
    threshold: float
    macro: float


def operating_curve(
    rows: list[tuple[str, str, str]],
    fprs: tuple[float, ...],
    model: Model | None = None,
    scores: npt.NDArray[np.float64] | None = None,
) -> list[OperatingPoint]:
    if scores is None:
        scores = score(rows, model)
    legit = np.sort(np.array([s for (label, _, _), s in zip(rows, scores, strict=True) if label == "legit"]))
    by_family: dict[str, list[float]] = defaultdict(list)
    for (label, family, _), s in zip(rows, scores, strict=True):
        if label != "legit" and family not in DICTIONARY_FAMILIES:
            by_family[family].append(float(s))
    points = []
    for fpr in fprs:
        threshold = threshold_at_fpr(legit, fpr)
        tprs = [float(np.mean(np.array(v) >= threshold)) for v in by_family.values()]
        points.append(OperatingPoint(fpr, threshold, float(np.mean(tprs)) if tprs else 0.0))
    return points


@dataclass(frozen=True)
class PodEvaluation:
    """The per-pod detector (``PodDgaTracker``) on pods made of corpus names: each pod asks for
    ``names_per_pod`` distinct names of one family (a bot walking its list) or of the legit
    names (a workload browsing popular sites), inside one window. No NXDOMAIN answers are
    assumed (the corpus has none), so only the distinct-names rule can raise."""

    names_per_pod: int
    families: list[FamilyScore]  # count = pods, detected = pods that raised
    legit_pods: int
    legit_raised: int

    @property
    def fpr(self) -> float:
        return self.legit_raised / self.legit_pods if self.legit_pods else 0.0

    def macro(self, dictionary: bool) -> float:
        return macro(self.families, dictionary)


def evaluate_pods(
    rows: list[tuple[str, str, str]],
    names_per_pod: int = 10,
    max_pods: int = 50,
    model: Model | None = None,
    seed: int = 6,
) -> PodEvaluation:
    # local imports: the tracker pulls in the findings contract, which plain scoring does not need
    import random
    from datetime import UTC, datetime, timedelta

    from qcdr_common.contracts.events.v1 import Workload

    from qcdr_analysis.dns.tracker import PodDgaTracker, Query

    rng = random.Random(seed)
    by_family: dict[str, list[str]] = defaultdict(list)
    for label, family, domain in rows:
        by_family["\x00legit" if label == "legit" else family].append(domain)
    tracker = PodDgaTracker(model=model or load_classifier())
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    raised: dict[str, list[bool]] = {}
    for family, names in sorted(by_family.items()):
        names = sorted(set(names))
        rng.shuffle(names)
        # every legit name in some pod (the false-positive side is what a cap would flatter)
        pods = (
            len(names) // names_per_pod
            if family == "\x00legit"
            else min(len(names) // names_per_pod, max_pods)
        )
        outcome = []
        for i in range(pods):
            chunk = names[i * names_per_pod : (i + 1) * names_per_pod]
            workload = Workload(cluster="eval", namespace=family.strip("\x00"), pod=f"pod-{i}")
            queries = [Query(d, t0 + timedelta(seconds=j), workload) for j, d in enumerate(chunk)]
            outcome.append(bool(tracker.observe(queries)))
        raised[family] = outcome
    legit = raised.pop("\x00legit", [])
    families = [
        FamilyScore(f, len(o), sum(o), f in DICTIONARY_FAMILIES) for f, o in sorted(raised.items()) if o
    ]
    return PodEvaluation(names_per_pod, families, len(legit), sum(legit))
