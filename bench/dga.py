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

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from doc import machine, update_section  # type: ignore[import-not-found,unused-ignore]
from qcdr_analysis.dns.classifier import classify, load_classifier
from qcdr_analysis.dns.evaluate import Evaluation, evaluate, evaluate_pods, operating_curve, read, score
from qcdr_analysis.dns.sites import preload_hosts
from qcdr_common.testing.plugin import shared_dir

GOAL_TPR, GOAL_FPR = 0.90, 0.01
# families whose names are variants of one seed: a site (charbot), a word compound (banjori), a word
# and a counter (fosniw); what the per-pod sibling rule catches
SEED_VARIANTS = frozenset({"banjori", "charbot", "fosniw"})


def throughput(domains: list[str], batch: int = 1000, passes: int = 3) -> float:
    classify(domains[:batch])  # warm the lexicon and caches
    # CPU time of this process (scoring is single-threaded): other work on a shared machine does
    # not count against the classifier. The best of three passes: on a virtual machine time the
    # host takes away can still be charged to the process, and it only ever adds.
    best = float("inf")
    for _ in range(passes):
        start = time.process_time()
        for i in range(0, len(domains), batch):
            classify(domains[i : i + batch])
        best = min(best, time.process_time() - start)
    return len(domains) / best


def unseen_fpr(rows: list[tuple[str, str, str]], ev: Evaluation) -> tuple[int, float]:
    """Legit names also on the HSTS preload list (the benign training source), and the FPR on the
    rest: the figure for names the model cannot have met in training."""
    hosts = preload_hosts()
    legit = [d for label, _, d in rows if label == "legit"]
    seen = {d for d in legit if d in hosts or f"www.{d}" in hosts}
    fps = sum(d not in seen for d, _ in ev.false_positive_names)
    return len(seen), fps / max(len(legit) - len(seen), 1)


def pods_section(rows: list[tuple[str, str, str]]) -> list[str]:
    """The per-pod detector on pods of 5, 10 and 20 corpus names (what the product pages on)."""
    lines = [
        "",
        "### Per pod (what raises a finding)",
        "",
        "The product does not page on one name: `PodDgaTracker` raises when a pod asks for 3 or more",
        "distinct DGA-looking registered domains within 10 minutes, for mostly NXDOMAIN answers (which",
        "the corpus cannot show), or for 3 or more registered domains that are variants of one seed",
        "whatever their scores: a counter on a word (fosniw's koreasys0.com, koreasys1.com) or a seed",
        "name with up to four leading letters replaced on a stem of 12 or more (banjori). No three of",
        "the 5,519 legit names are variants of one seed (tested), so the sibling rule raises for none",
        "of them even if one pod asked for all. Pods made of corpus names: each asks for N distinct",
        "names of one family (up to 50 pods a family), or N of the legit names (every legit name in",
        "some pod). Not the issue's gate (which is per name); the filer's to weigh.",
        "",
        "| names a pod | pods raised among legit | macro TPR (non-dictionary) | dictionary "
        "| families under 0.9 |",
        "|---:|---:|---:|---:|---|",
    ]
    for n in (5, 10, 20):
        pods = evaluate_pods(rows, names_per_pod=n)
        low = ", ".join(
            f"{f.family} {f.tpr:.2f}" for f in pods.families if not f.dictionary and f.tpr < GOAL_TPR
        )
        lines.append(
            f"| {n} | {pods.legit_raised}/{pods.legit_pods} ({pods.fpr:.2%}) | {pods.macro(False):.3f} "
            f"| {pods.macro(True):.3f} | {low} |"
        )
    return lines


def curve_section(rows: list[tuple[str, str, str]], scores: npt.NDArray[np.float64]) -> list[str]:
    """Macro TPR at other corpus FPRs: how far the lexical score is from the goal."""
    points = operating_curve(rows, (0.005, 0.01, 0.02, 0.025, 0.03, 0.05, 0.10), scores=scores)
    reach = next((p for p in points if p.macro >= GOAL_TPR), None)
    lines = [
        "",
        "### How far from the goal",
        "",
        "The same scores with the threshold moved until a given share of the corpus's legit names",
        "passes it (a diagnostic: the shipped threshold comes from validation data, never from",
        "this table). "
        + (
            f"A macro TPR of 0.90 needs a corpus FPR of about {reach.fpr:.1%}."
            if reach
            else "No FPR up to 10 % reaches a macro TPR of 0.90."
        ),
        "",
        "| corpus FPR | threshold | macro TPR (non-dictionary) |",
        "|---:|---:|---:|",
    ]
    lines += [f"| {p.fpr:.1%} | {p.threshold:.4f} | {p.macro:.3f} |" for p in points]
    return lines


def document(
    ev: Evaluation,
    as_labelled: Evaluation,
    rate: float,
    unseen: tuple[int, float],
    pods: list[str],
    curve: list[str],
) -> str:
    model = load_classifier()
    nymaim = next(f for f in ev.families if f.family == "nymaim")
    raw = next(f for f in as_labelled.families if f.family == "nymaim")
    seed_free = float(
        np.mean([f.tpr for f in ev.families if not f.dictionary and f.family not in SEED_VARIANTS])
    )
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
        f"- Macro TPR, non-dictionary families: **{ev.macro(False):.3f}** (goal >= 0.90); "
        f"{as_labelled.macro(False):.3f} with the corpus's labels as they are (below)",
        f"- Macro TPR, dictionary families (reported separately): **{ev.macro(True):.3f}**",
        f"- Macro TPR, non-dictionary families without the three that vary one seed name "
        f"({', '.join(sorted(SEED_VARIANTS))}; Plohmann et al.'s 'permutation' scheme, which per name "
        f"look like the site or word they start from): {seed_free:.3f}",
        f"- Macro TPR, all families: {ev.macro_all():.3f}",
        f"- Classifications/s (batches of 1,000, one core, CPU time, best of three passes): **{rate:,.0f}**",
        f"- Goal {'met' if met else '**not met**'}.",
        "",
        "| family | names | TPR | kind |",
        "|---|---:|---:|---|",
    ]
    for f in sorted(ev.families, key=lambda f: (f.dictionary, -f.tpr, f.family)):
        lines.append(f"| {f.family} | {f.count:,} | {f.tpr:.3f} | {'dictionary' if f.dictionary else ''} |")
    lines += [
        "",
        "One label of the corpus is corrected (`evaluate.RELABELLED`, checked by a test): the chrmor",
        'sample calls Nymaim2\'s word pairs "nymaim" (searched-cookie.net, woundfinger.ws). Its 176',
        "rows have Nymaim2's shape in baderj's re-implementation (two words, a hyphen in 45 % vs 43 %,",
        "14.3 vs 14.5 letters, all 58 of their suffixes among Nymaim2's 68), none of Nymaim's (random",
        "letters, 8 on average, on com/net/org/info/biz only), so they count as nymaim2 here: nymaim's",
        f"TPR is that of its {nymaim.count} random names. As labelled, nymaim is {raw.tpr:.3f} over "
        f"{raw.count} names.",
        "",
        "What the model learns from: real site names from the Chromium HSTS preload list, read at",
        "training time from the `hstspreload` package (BSD-3-Clause; the list is under Chromium's",
        "BSD-style licence; attribution in `services/analysis/src/qcdr_analysis/dns/NOTICE`), one host",
        "per registered domain, Freenom's free TLDs kept at a quarter, split by a hash of the registered",
        "domain into disjoint parts for the site trigram model and the benign 6-gram model (30 %), the",
        "trees (50 %) and the threshold (20 %); beside them a smaller share of names generated from",
        "wordfreq (internal",
        "names, subdomains, other languages); and the project's own DGA generators, written from",
        "published descriptions. The corpus is never read by training.",
        "",
        "This pass (this table): four changes moved the FPR from 1.03 % to 0.94 % and the macro TPR",
        "(non-dictionary) from 0.829 to 0.858. (1) Free dynamic-DNS parents the Public Suffix List",
        "does not carry (FreeDNS's mooo.com and yi.org, ChangeIP's dynserv.com, ...) are now split like",
        "its private suffixes (`domains.SHARED_DYNAMIC_DNS`): before, `clwafrfuuxq.yi.org` was judged",
        "by its label 'yi' and scored 0, so half of Kraken's names were missed (kraken 0.80 -> 0.99),",
        "and the generators' names under mooo.com taught the trees the wrong label. (2) A generator of",
        "affixed invented words (an English prefix, made-up syllables, a suffix, up to three joined by",
        "hyphens), the shape public write-ups show for Ngioweb: ngioweb 0.10 -> 0.86. (3) Eight hex",
        "digits on legacy TLDs and DuckDNS (Orchard-style): orchard 0.47 -> 1.00. (4) Histogram",
        "gradient boosting (300 trees of depth 5) instead of exact-split boosting: the same accuracy",
        "within noise, and training takes 30 s instead of 4 minutes, which is what made the",
        "experiments of this pass possible.",
        "",
        "Tried and not kept in this pass: a CharBot generator after Peck et al. (2019: two characters",
        "of a popular site's label replaced, another TLD; bases from the part of the site list only",
        "the trigram model sees) lifted charbot from 0.19 to 0.42 but raised the threshold for every",
        "other family, macro unchanged, as the paper predicts for retraining; one trigram model per",
        "generator family with the best family's likelihood ratio as features (macro -0.008: the",
        "trees learn the generators' habits, not the real families'); larger training sets (5,000 per",
        "family, 70,000 sites) and larger or more regularised models (depth 7, 63 leaves, 800 trees):",
        "all within +-0.005 of each other at a corpus FPR of exactly 1 %, so the model is limited by",
        "what lexical features can tell apart, not by its size.",
        "",
        "Tried later (2026-12-05) and not kept: the suffix as a feature (its log share among real",
        "site names) with QSnatch- and Conficker-style generators drawing from every two-letter",
        "ccTLD and com/co/net/org second level of the suffix list, as their published TLD lists do.",
        "qsnatch rose from 0.30 to 0.40 and conficker from 0.53 to 0.70, but the corpus's legit",
        "names use rare suffixes (wroc.pl, edu.ng, in.th) far more often than the HSTS list does:",
        "corpus FPR 1.23 %, and at a corpus FPR of exactly 1 % the macro TPR fell to 0.850.",
        "The feature alone, without the wider draws, changed nothing (0.857).",
        "",
        "Tried on 2026-12-05 (second session) and not kept: the Vawtrak-style generator with the",
        "twelve-consonant table of Bader's write-up of its second DGA (c d f g h l m n r s t w)",
        "for half its names instead of all twenty consonants. vawtrak rose only from 0.40 to 0.46",
        "(validation: the model finds 60 % of the generator's own names, down from 75 %): common",
        "consonants between single vowels spell brand-like words (masarwum, rinatdargo). Macro",
        "0.8655 with FPR 0.96 %, within the noise of 0.005.",
        "",
        "Tried on 2026-12-05 (third session) and not kept: a discriminative character n-gram model",
        "beside the trees, the usual strong baseline of the DGA literature: logistic regression over",
        "hashed 1- to 4-grams of the label and suffix, fitted on the part of the site list only the",
        "trigram model sees against 4,000 generated names per family, its score one more feature.",
        "At the threshold validation chose it found more (corpus macro 0.874), but the corpus FPR rose to",
        "1.32 %, and at a corpus FPR of exactly 1 % the macro TPR was 0.855 (0.852 with 1- to 3-grams",
        "and stronger regularisation), against 0.867 without it: the n-grams learn what sets the HSTS",
        "list apart from the generators, which is not what sets the corpus's popular sites apart.",
        "",
        "Kept on 2026-12-05 (fourth session): a generative model of benign text with more context,",
        "the opposite of the discriminative attempt above. A character 6-gram model with Witten-Bell",
        "interpolation (`dns/ngram.py`) over the lexicon's words and the site names only the trigram",
        "models see gives two features: the mean log-probability of a label's characters and that of",
        "its three least likely. Six letters of context know syllables and word pieces of languages",
        "the lexicon barely covers, so Turkish, Polish or pinyin site names read as text where random",
        "draws do not. The macro TPR rose from 0.865 to 0.879 at about the same FPR (0.94 % -> 0.98 %);",
        "on the operating curve below, from 0.870 to 0.880 at a corpus FPR of 1 % and from 0.792 to",
        "0.826 at 0.5 %; with other training and validation seeds from 0.863 to 0.879, so the gain is",
        "above the noise. Per pod at 5 names it rose from 0.922 to 0.936. Scoring costs about 7 µs",
        "more a name in batches (classifications/s 11,800 before, 9,400-11,100 in five runs after).",
        "Variants measured at a corpus FPR of 1 %: orders 4, 5 and 6 gave 0.877, 0.882 and 0.884;",
        "words alone 0.874, site names alone 0.879; a DGA-side 5-gram model and its ratio to the",
        "benign one as further features 0.872 (the discriminative trap again); three times the words",
        "per language 0.880; dropping the trigram ratio features 0.881-0.885. The model is built",
        "where it is used from the installed packages (a few seconds, once: then it is read from",
        "`QCDR_CACHE_DIR`); model.json records its digest and the classifier warns when the installed",
        "word or site lists give another one. Tried on top of it and not kept, all within the noise",
        "at a corpus FPR of 1 % (0.880 with it alone): a right-to-left 6-gram model as well (0.887,",
        "but 0.876 at the threshold validation chose), an 8-gram model as well (0.882), and the",
        "least likely run of three or four characters (0.881).",
        "",
        "Measured on 2026-12-06 and not built: a typosquat test for CharBot, whether a label of seven",
        "or more letters is two substitutions or fewer from another site's label in the HSTS list",
        "(120,000 labels). It holds for 11.8 % of the corpus's legit names (mzltrack/moetrack,",
        "caresole/carezone: word-like labels have close neighbours) and for only 6.4 % of",
        "charbot's, whose bases are popular sites the HSTS list mostly does not hold.",
        "",
        "Where it falls short of 0.90: at 1 % FPR the remaining families overlap real names by",
        "construction. Short random labels (qsnatch, nymaim, conficker: four to seven letters) look",
        "like the many short acronym and brand names among real sites; pronounceable families with",
        "consonant pairs (vawtrak, pushdo) read like brand words; charbot changes two letters of real",
        "site names and fosniw puts a word and a number under 'app2.': lexically both are site names,",
        "as are the word-list families. The generators were written knowing these families' published",
        "shapes, so the table measures detection of known kinds of DGA, not of unseen ones.",
        "Changing only the random streams moves the macro TPR by about 0.005 and single families by",
        "up to 0.1, so smaller differences than that are noise. The per-pod aggregation (several",
        "distinct names, NXDOMAIN ratio, variants of one seed) is what keeps single misses and false",
        "positives from paging anyone, and what catches the families no lexical score can.",
        *curve,
        *pods,
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
    # first: run after the evaluation (64,000 names scored) the same loop measured 5,000-7,900
    # names/s in this process on 2026-12-06, against 8,000-9,000 in a process of its own
    rate = throughput([d for _, _, d in rows][:20000])
    scores = score(rows)  # the relabelled and the as-labelled rows are the same names
    ev = evaluate(rows, scores=scores)
    as_labelled = evaluate(
        read(shared / "corpora" / "dga" / "labeled_domains.csv", relabel=False), scores=scores
    )
    body = document(
        ev, as_labelled, rate, unseen_fpr(rows, ev), pods_section(rows), curve_section(rows, scores)
    )
    print(body)
    if args.write_doc:
        update_section(args.write_doc, "dga", body)


if __name__ == "__main__":
    main()
