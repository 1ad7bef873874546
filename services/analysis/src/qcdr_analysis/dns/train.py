"""Train the DGA classifier and write ``model.json`` (deterministic for a given lock file).

    uv run python -m qcdr_analysis.dns.train [--out PATH]

The benign side is real site names (sites.py: the HSTS preload list from the ``hstspreload``
package) plus names generated from the wordfreq lexicon (benign.py), and the benign 6-gram model
(ngram.py) is built from the lexicon and a separate part of the site list; the DGA side comes from the
project's own generators (generators.py, pronounceable.py). The threshold is the score that keeps
the false-positive rate at or under ``--fpr`` on a separate validation set (held-out site names
and generated benign names); the evaluation corpus in shared/ is never read.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from sklearn.ensemble import HistGradientBoostingClassifier

from qcdr_analysis.dns.classifier import MODEL_PATH, model_from_dict, threshold_at_fpr
from qcdr_analysis.dns.domains import split
from qcdr_analysis.dns.features import FEATURES, contrast_from_dict, contrast_to_dict, matrix
from qcdr_analysis.dns.generators import DGA_FAMILIES, dataset
from qcdr_analysis.dns.ngram import benign_model
from qcdr_analysis.dns.sites import Part, sample_sites, site_names
from qcdr_analysis.dns.text import trigram_counts

Dataset = tuple[list[str], list[int], list[str]]
TRAIN_SEED, VALIDATION_SEED, LM_SEED = 20240601, 20240602, 20240603
# Labels per family for the DGA-side trigram model: drawn from their own seed so the model the
# likelihood-ratio features use has not seen the names the trees are fitted on.
LM_PER_FAMILY, LM_SMOOTHING = 4000, 0.5
PRONOUNCEABLE = frozenset(
    {
        "syllables",
        "cv_alternating",
        "syllable_chain",
        "vowel_clusters",
        "pairs_dynamic",
        "doubled_vowels",
        "closed_syllables",
        "y_syllables",
    }
)
PER_FAMILY, N_BENIGN = 3000, 8000
VAL_PER_FAMILY, VAL_BENIGN = 800, 3000
# Real site names (sites.py, the HSTS preload list) beside the generated benign names: disjoint
# parts of the list for the trees and for the threshold.
N_SITES, VAL_SITES = 50000, 25000
# Histogram gradient boosting: the same kind of model as exact-split boosting at a tenth of the
# fitting time (seconds rather than minutes), so the whole training run stays under a minute.
PARAMS: dict[str, Any] = {
    "max_iter": 300,
    "max_depth": 5,
    "learning_rate": 0.1,
    "early_stopping": False,
    "random_state": 7,
}


def dga_language_model() -> list[dict[str, Any]]:
    """Trigram counts over generated DGA labels: all non-dictionary families (equal share each),
    then the pronounceable ones alone, then real site names (the part of sites.py that neither
    the trees nor the threshold see)."""
    names, _, families = dataset(LM_SEED, LM_PER_FAMILY, 0)
    labels = [split(n).label for n in names]
    pron = [label for label, f in zip(labels, families, strict=True) if f in PRONOUNCEABLE]
    site_labels = [split(n).label for n in site_names("lm")]
    return [
        contrast_to_dict(trigram_counts(labels), LM_SMOOTHING),
        contrast_to_dict(trigram_counts(pron), LM_SMOOTHING),
        contrast_to_dict(trigram_counts(site_labels), LM_SMOOTHING),
    ]


def _with_sites(data: Dataset, part: Part, n: int, seed: int) -> Dataset:
    names, labels, families = data
    sites = sample_sites(part, n, seed)
    return names + sites, labels + [0] * len(sites), families + ["site"] * len(sites)


def _export(
    clf: HistGradientBoostingClassifier, threshold: float, dga_lm: list[dict[str, Any]], meta: dict[str, Any]
) -> dict[str, Any]:
    # The fitted trees, read from the predictors scikit-learn builds (a private attribute, so the
    # lock file pins the version; train() checks the exported trees score what was fitted).
    trees = []
    for (predictor,) in clf._predictors:
        nodes = predictor.nodes
        leaf = nodes["is_leaf"].astype(bool)
        trees.append(
            {
                "left": np.where(leaf, -1, nodes["left"].astype(np.int64)).tolist(),
                "right": np.where(leaf, -1, nodes["right"].astype(np.int64)).tolist(),
                "feature": np.where(leaf, -2, nodes["feature_idx"].astype(np.int64)).tolist(),
                "threshold": [float(v) for v in nodes["num_threshold"]],
                "value": [float(v) for v in nodes["value"]],
            }
        )
    depth = max(int(predictor.nodes["depth"].max()) for (predictor,) in clf._predictors)
    return {
        "version": 2,
        "features": list(FEATURES),
        "max_depth": depth,
        # Leaf values already carry the learning rate.
        "learning_rate": 1.0,
        "init": float(np.ravel(clf._baseline_prediction)[0]),
        "threshold": threshold,
        "dga_lm": dga_lm,
        "meta": meta,
        "trees": trees,
    }


def train(target_fpr: float = 0.01) -> dict[str, Any]:
    started = time.perf_counter()
    dga_lm = dga_language_model()
    contrast = contrast_from_dict(dga_lm)
    names, labels, _ = _with_sites(dataset(TRAIN_SEED, PER_FAMILY, N_BENIGN), "train", N_SITES, TRAIN_SEED)
    x, y = matrix(names, contrast=contrast), np.array(labels)
    clf = HistGradientBoostingClassifier(**PARAMS).fit(x, y)

    v_names, v_labels, v_families = _with_sites(
        dataset(VALIDATION_SEED, VAL_PER_FAMILY, VAL_BENIGN), "validation", VAL_SITES, VALIDATION_SEED
    )
    vx, vy = matrix(v_names, contrast=contrast), np.array(v_labels)
    probe = _export(clf, 0.5, dga_lm, {})
    model = model_from_dict(probe)
    scores = model.scores(vx)
    # Keep sklearn and the JSON evaluator in lock-step: the shipped file must score what was fitted.
    if not np.allclose(scores, clf.predict_proba(vx)[:, 1], atol=1e-6):
        raise RuntimeError("exported trees disagree with scikit-learn")
    benign = np.sort(scores[vy == 0])
    threshold = threshold_at_fpr(benign, target_fpr)
    fam = np.array(v_families)
    tpr = {f: float(np.mean(scores[fam == f] >= threshold)) for f in DGA_FAMILIES if f in fam}
    ngrams = benign_model()
    meta = {
        "train_seed": TRAIN_SEED,
        "validation_seed": VALIDATION_SEED,
        "train_size": len(names),
        "validation_fpr": float(np.mean(benign >= threshold)),
        "target_fpr": target_fpr,
        "validation_tpr": tpr,
        "params": PARAMS,
        # the benign 6-gram model is built from installed packages where the model is used:
        # load_classifier compares this digest to tell when it differs from the one trained with
        "benign_ngrams": {"order": ngrams.order, "ngrams": ngrams.ngrams, "digest": ngrams.digest},
        "seconds": round(time.perf_counter() - started, 1),
    }
    return _export(clf, threshold, dga_lm, meta)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=MODEL_PATH)
    parser.add_argument("--fpr", type=float, default=0.01)
    args = parser.parse_args()
    data = train(args.fpr)
    args.out.write_bytes(orjson.dumps(data, option=orjson.OPT_SORT_KEYS))
    meta = data["meta"]
    print(f"wrote {args.out}: threshold {data['threshold']:.4f}, validation FPR {meta['validation_fpr']:.4f}")
    for family, tpr in meta["validation_tpr"].items():
        print(f"  {family:22s} TPR {tpr:.3f}")


if __name__ == "__main__":
    main()
