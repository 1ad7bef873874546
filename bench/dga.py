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
from qcdr_analysis.dns.sites import preload_hosts
from qcdr_common.testing.plugin import shared_dir

GOAL_TPR, GOAL_FPR = 0.90, 0.01


def throughput(domains: list[str], batch: int = 1000) -> float:
    classify(domains[:batch])  # warm the lexicon and caches
    # CPU time of this process (scoring is single-threaded): other work on a shared machine does
    # not count against the classifier.
    start = time.process_time()
    for i in range(0, len(domains), batch):
        classify(domains[i : i + batch])
    return len(domains) / (time.process_time() - start)


def unseen_fpr(rows: list[tuple[str, str, str]], ev: Evaluation) -> tuple[int, float]:
    """Legit names also on the HSTS preload list (the benign training source), and the FPR on the
    rest: the figure for names the model cannot have met in training."""
    hosts = preload_hosts()
    legit = [d for label, _, d in rows if label == "legit"]
    seen = {d for d in legit if d in hosts or f"www.{d}" in hosts}
    fps = sum(d not in seen for d, _ in ev.false_positive_names)
    return len(seen), fps / max(len(legit) - len(seen), 1)


def document(ev: Evaluation, rate: float, unseen: tuple[int, float]) -> str:
    model = load_classifier()
    met = ev.fpr <= GOAL_FPR and ev.macro(False) >= GOAL_TPR
    lines = [
        "## DGA classifier (issue #6)",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d} on {machine()} by `uv run python bench/dga.py`.",
        "Corpus: `shared/corpora/dga/labeled_domains.csv`, evaluation only (never training, never the",
        f"threshold). Threshold {model.threshold:.4f}, chosen for FPR <= {model.meta['target_fpr']:.0%}",
        f"on held-out real site names and generated benign names (validation FPR "
        f"{model.meta['validation_fpr']:.2%}).",
        "",
        f"- Legit names: {ev.legit:,}; false positives {ev.false_positives} "
        f"(**FPR {ev.fpr:.2%}**, goal <= 1 %); {unseen[0]} of them are also on the HSTS preload list "
        f"the benign training names come from, FPR on the others {unseen[1]:.2%}",
        f"- Macro TPR, non-dictionary families: **{ev.macro(False):.3f}** (goal >= 0.90)",
        f"- Macro TPR, dictionary families (reported separately): **{ev.macro(True):.3f}**",
        f"- Macro TPR, all families: {ev.macro_all():.3f}",
        f"- Classifications/s (batches of 1,000, one core, CPU time): **{rate:,.0f}**",
        f"- Goal {'met' if met else '**not met**'}.",
        "",
        "| family | names | TPR | kind |",
        "|---|---:|---:|---|",
    ]
    for f in sorted(ev.families, key=lambda f: (f.dictionary, -f.tpr, f.family)):
        lines.append(f"| {f.family} | {f.count:,} | {f.tpr:.3f} | {'dictionary' if f.dictionary else ''} |")
    lines += [
        "",
        "What the model learns from: real site names from the Chromium HSTS preload list, read at",
        "training time from the `hstspreload` package (BSD-3-Clause; the list is under Chromium's",
        "BSD-style licence; attribution in `services/analysis/src/qcdr_analysis/dns/NOTICE`), one host",
        "per registered domain, Freenom's free TLDs kept at a quarter, split by a hash of the registered",
        "domain into disjoint parts for the site trigram model (30 %), the trees (50 %) and the",
        "threshold (20 %); beside them a smaller share of names generated from wordfreq (internal",
        "names, subdomains, other languages); and the project's own DGA generators, written from",
        "published descriptions. The corpus is never read by training.",
        "",
        "This pass (this table): real site names replaced most of the generated benign names. With",
        "40,000 real and 20,000 generated benign names for the trees and 20,000 and 8,000 for the",
        "threshold, they alone brought the FPR on real names from 1.70 % to 0.78 % (macro 0.782); with",
        "the generated share cut to 8,000 and 3,000 the corpus FPR tracks the 1 % validation target",
        "(so it sits at the edge of the goal rather than under it) and the",
        "headroom went into detection. New generators from published descriptions: Vawtrak's second",
        "DGA (a vowel, then one or two consonants), Symmi-style letter pairs on dynamic DNS,",
        "Pitou-style doubled vowels, Pushdo-style closed syllables, Simda-style syllables with 'y',",
        "QSnatch-style five or six letters and digits on free TLDs, a downloader's permutations of a",
        "few letters under hosting suffixes, and BazarBackdoor's buggy '.bazaar' variant. Pitou went",
        "from 0.04 to 0.85, symmi and unnamed_downloader above 0.9, simda from 0.79 to 0.88. A",
        "trigram model of real site names adds four likelihood-ratio features (DGA against site names",
        "rather than against words). Macro TPR (non-dictionary) went from 0.788 to 0.829.",
        "",
        "Where it falls short of 0.90: at 1 % FPR the remaining families overlap real names by",
        "construction. Short random labels (qsnatch, nymaim, conficker) look like the many short",
        "acronym and brand names on the preload list; pronounceable families with consonant pairs",
        "(vawtrak, pushdo) read like brand words; ngioweb had no published description at hand;",
        "charbot changes two letters of real site names and fosniw puts a word and a digit under",
        "'app2.': lexically both are site names, as are the word-list families. Two families lost",
        "ground: orchard (32 names) fell from 0.81 to 0.47 and dmsniff (70) from 0.80 to 0.71, with the",
        "threshold up from 0.8575 to 0.8954. Tried and not kept:",
        "a logistic regression over each label's trigram frequencies as a further feature (fitted on",
        "a disjoint split; macro 0.814 against 0.816 without it), 300 trees of depth 5 (+0.003 macro,",
        "within run-to-run noise, for a 50 % larger model and fewer classifications per second), and",
        "the larger generated benign share of the first real-name run (FPR 0.96 %, macro 0.816: the",
        "generated names are harder than real ones, so the threshold lands higher than it needs to).",
        "Changing only the random streams moves the macro TPR by about 0.005 and single families by",
        "up to 0.1, so smaller differences than that are noise. The per-pod aggregation (several",
        "distinct names, NXDOMAIN ratio) is what keeps single misses and false positives from paging",
        "anyone.",
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
    body = document(ev, rate, unseen_fpr(rows, ev))
    print(body)
    if args.write_doc:
        update_section(args.write_doc, "dga", body)


if __name__ == "__main__":
    main()
