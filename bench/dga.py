"""DGA classifier: per-family TPR over shared/corpora/dga/labeled_domains.csv (evaluation only) and
classifications per second (issue #6).

    uv run python bench/dga.py [--write-doc docs/DETECTION.md]

The corpus is read in place: ``$QCDR_SHARED_DIR`` or the ``shared/`` folder beside the checkout.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from doc import machine, update_section  # type: ignore[import-not-found,unused-ignore]
from qcdr_analysis.dns.classifier import classify, load_classifier
from qcdr_analysis.dns.evaluate import Evaluation, evaluate, read
from qcdr_common.testing.plugin import shared_dir

GOAL_TPR, GOAL_FPR = 0.90, 0.01


def throughput(domains: list[str], batch: int = 1000) -> float:
    classify(domains[:batch])  # warm the lexicon and caches
    start = time.perf_counter()
    for i in range(0, len(domains), batch):
        classify(domains[i : i + batch])
    return len(domains) / (time.perf_counter() - start)


def document(ev: Evaluation, rate: float) -> str:
    model = load_classifier()
    met = ev.fpr <= GOAL_FPR and ev.macro(False) >= GOAL_TPR
    lines = [
        "## DGA classifier (issue #6)",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d} on {machine()} by `uv run python bench/dga.py`.",
        "Corpus: `shared/corpora/dga/labeled_domains.csv`, evaluation only (never training, never the",
        f"threshold). Threshold {model.threshold:.4f}, chosen for FPR <= {model.meta['target_fpr']:.0%}",
        f"on generated benign validation names (validation FPR {model.meta['validation_fpr']:.2%}).",
        "",
        f"- Legit names: {ev.legit:,}; false positives {ev.false_positives} "
        f"(**FPR {ev.fpr:.2%}**, goal <= 1 %)",
        f"- Macro TPR, non-dictionary families: **{ev.macro(False):.3f}** (goal >= 0.90)",
        f"- Macro TPR, dictionary families (reported separately): **{ev.macro(True):.3f}**",
        f"- Macro TPR, all families: {ev.macro_all():.3f}",
        f"- Classifications/s (batches of 1,000, one core): **{rate:,.0f}**",
        f"- Goal {'met' if met else '**not met**'}.",
        "",
        "| family | names | TPR | kind |",
        "|---|---:|---:|---|",
    ]
    for f in sorted(ev.families, key=lambda f: (f.dictionary, -f.tpr, f.family)):
        lines.append(f"| {f.family} | {f.count:,} | {f.tpr:.3f} | {'dictionary' if f.dictionary else ''} |")
    lines += [
        "",
        "Where it falls short: the features are lexical, the benign side is generated from word",
        "lists (wordfreq, 24 languages with Cyrillic transliterated) plus invented brand words,",
        "romaji and pinyin initials, because no permissive list of popular domains ships with the",
        "product; real site names are still more varied than the generator, so the FPR on real names",
        "is well above the validation FPR. Some legit names are themselves machine-made (spam",
        "labels such as a word plus random letters on new gTLDs). Short pronounceable families",
        "(pitou, vawtrak, symmi, pushdo, ngioweb) and short random ones (qsnatch, conficker) overlap",
        "real short names; names copied from real sites (charbot, fosniw) and word-list families are",
        "lexically site names. Since the third pass the model also sees log-likelihood ratios of each",
        "label under trigram models of the project's own generator output (all families, and the",
        "pronounceable ones alone) against the benign trigram model; that lowered the FPR on real",
        "names from 1.96 % to 1.70 % at a slightly higher macro TPR (0.786 to 0.788), not enough for",
        "the goal. Tried and not kept: 300 trees (no gain; earlier, 400 trees of depth 5 doubled the",
        "FPR on real names), a second transliteration of umlauts and",
        "of Cyrillic 'й' in the lexicon (no gain). The per-pod aggregation (several distinct names,",
        "NXDOMAIN ratio) is what keeps single misses and false positives from paging anyone.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write-doc", type=Path)
    args = parser.parse_args()
    shared = shared_dir()
    if shared is None:
        sys.exit("shared/ not found (set QCDR_SHARED_DIR)")
    rows = read(shared / "corpora" / "dga" / "labeled_domains.csv")
    ev = evaluate(rows)
    rate = throughput([d for _, _, d in rows][:20000])
    body = document(ev, rate)
    print(body)
    if args.write_doc:
        update_section(args.write_doc, "dga", body)


if __name__ == "__main__":
    main()
