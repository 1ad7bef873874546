"""Lexical features of a query name, computed for a batch into one float matrix."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from qcdr_analysis.dns.domains import Name, split
from qcdr_analysis.dns.ngram import benign_model
from qcdr_analysis.dns.text import SIZE, Lexicon, encode, entropy, lexicon, segment, trigram_logp

MODEL_PATH = Path(__file__).with_name("model.json")

FEATURES: tuple[str, ...] = (
    "length",
    "entropy",
    "digit_ratio",
    "vowel_ratio",
    "longest_consonant_run",
    "longest_digit_run",
    "hyphens",
    "lm_mean",
    "lm_worst3",
    "word_coverage",
    "words",
    "mean_word_length",
    "letter_digit_switches",
    "unique_ratio",
    "private_suffix",
    "tld_class",
    "subdomain_labels",
    "starts_with_digit",
    "known_suffix",
    "cv_alternation",
    "rare_letters",
    "lm_head",
    "lm_tail",
    "lr_mean",
    "lr_head",
    "lr_tail",
    "lr_top3",
    "lr_pron_mean",
    "lr_pron_top3",
    "site_mean",
    "lr_site_mean",
    "lr_site_top3",
    "lr_pron_site_mean",
    # computed for the whole batch by ngram.py (matrix() appends them)
    "ng_mean",
    "ng_worst3",
)
VOWELS = frozenset("aeiou")
# "y" acts as a vowel in pronounceable DGAs that alternate consonant and vowel draws.
VOWELS_Y = frozenset("aeiouy")
# Letters a uniform draw picks far more often than text does (pronounceable DGAs draw consonants
# uniformly, so "q", "x", "z" turn up as often as "t" or "n").
RARE = frozenset("jqxzvwk")
HEAD = 5
LEGACY = frozenset({"com", "net", "org", "edu", "gov", "mil", "int"})
OTHER_GENERIC = frozenset({"info", "biz", "name", "pro", "mobi", "xxx", "tel", "asia", "cat", "jobs"})
# Top-level names of alternative roots (EmerDNS, OpenNIC, Namecoin): no ICANN resolver answers
# them, so a workload asking is using its own resolution path, as BazarBackdoor did with ".bazar".
_ALT = "bazar bazaar coin emc lib bit bbs chan cyb dyn geek gopher indy libre neo null oss oz parody pirate"
ALT_ROOTS = frozenset(_ALT.split(" "))


def tld_class(name: Name) -> int:
    """0 legacy generic, 1 other old generic, 2 country code, 3 new generic, 4 none or internal,
    5 alternative root."""
    if not name.known_suffix:
        return 5 if name.suffix in ALT_ROOTS else 4
    if not name.suffix:
        return 4
    last = name.suffix.rsplit(".", 1)[-1]
    if last in LEGACY:
        return 0
    if last in OTHER_GENERIC:
        return 1
    return 2 if len(last) == 2 else 3


def _runs(s: str) -> tuple[int, int, int]:
    """Longest consonant run, longest digit run, letter/digit switches."""
    cons = digits = cur_c = cur_d = switches = 0
    prev_digit: bool | None = None
    for ch in s:
        if ch.isdigit():
            cur_d += 1
            cur_c = 0
        elif ch.isalpha() and ch not in VOWELS:
            cur_c += 1
            cur_d = 0
        else:
            cur_c = cur_d = 0
        cons, digits = max(cons, cur_c), max(digits, cur_d)
        if ch.isalnum():
            is_digit = ch.isdigit()
            if prev_digit is not None and is_digit != prev_digit:
                switches += 1
            prev_digit = is_digit
    return cons, digits, switches


def contrast_to_dict(counts: npt.NDArray[np.int64], smoothing: float) -> dict[str, Any]:
    """The generated-DGA trigram counts as sparse JSON arrays (model.json carries no pickle)."""
    index = np.flatnonzero(counts)
    return {"index": index.tolist(), "count": counts[index].tolist(), "smoothing": smoothing}


def contrast_from_dict(models: list[dict[str, Any]]) -> npt.NDArray[np.float64]:
    """Stacked trigram log-probabilities under [0] all generated DGA families, [1] the pronounceable
    ones, [2] real site names (sites.py)."""
    out = []
    for data in models:
        counts = np.zeros(SIZE**3, dtype=np.float64)
        counts[np.asarray(data["index"], dtype=np.int64)] = np.asarray(data["count"], dtype=np.float64)
        out.append(trigram_logp(counts, float(data["smoothing"])))
    return np.stack(out)


@lru_cache(maxsize=1)
def shipped_contrast() -> npt.NDArray[np.float64]:
    """The DGA-side trigram model of the shipped model.json (for callers that pass none)."""
    data = orjson.loads(MODEL_PATH.read_bytes())
    if "dga_lm" not in data:
        raise ValueError("model.json has no DGA trigram model; re-run qcdr_analysis.dns.train")
    return contrast_from_dict(data["dga_lm"])


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _ends(values: list[float]) -> tuple[float, float]:
    """Mean of the first HEAD values and of the rest (both the whole mean when short)."""
    if len(values) > HEAD:
        return _mean(values[:HEAD]), _mean(values[HEAD:])
    whole = _mean(values)
    return whole, whole


def vector(name: Name, lex: Lexicon, contrast: npt.NDArray[np.float64]) -> list[float]:
    label = name.label
    n = max(len(label), 1)
    letters = [c for c in label if c.isalpha()]
    n_letters = max(len(letters), 1)
    cons, digit_run, switches = _runs(label)
    idx = encode(label)
    i0, i1, i2 = idx[:-2], idx[1:-1], idx[2:]
    tri_arr = lex.logp[i0, i1, i2]
    # Log-likelihood ratio per trigram, generated-DGA model over benign model: positive where the
    # letters follow the habits of the project's own generators rather than of words. The second
    # row is against the pronounceable generators alone: their letters look most like words, so a
    # mixture dominated by uniform draws says little about them.
    # The third model is of real site names: against it, the same ratios ask "DGA or site name?"
    # rather than "DGA or word?", which is what separates pronounceable DGAs from brand names.
    models = contrast[:, i0, i1, i2]
    lrs = (models[:2] - tri_arr).tolist()
    site_lrs = (models[:2] - models[2]).tolist()
    site: list[float] = models[2].tolist()
    # Plain lists from here: a label has a dozen trigrams, where numpy's per-call cost dominates.
    tri: list[float] = tri_arr.tolist()
    lr, lr_pron = lrs[0], lrs[1]
    covered, used = 0, 0
    for part in label.split("-"):
        c, w = segment(lex.words, part)
        covered, used = covered + c, used + w
    pairs = [(a in VOWELS_Y, b in VOWELS_Y) for a, b in pairwise(letters)]
    # Head and tail of the label separately: Banjori-style names mutate the first letters of a
    # fixed word compound, so only the head reads as noise.
    head, tail = _ends(tri)
    lr_head, lr_tail = _ends(lr)
    return [
        float(len(label)),
        entropy(label),
        sum(c.isdigit() for c in label) / n,
        sum(c in VOWELS for c in letters) / n_letters,
        float(cons),
        float(digit_run),
        float(label.count("-")),
        _mean(tri),
        _mean(sorted(tri)[:3]),
        covered / n_letters,
        float(used),
        covered / used if used else 0.0,
        float(switches),
        len(set(label)) / n,
        float(name.private_suffix),
        float(tld_class(name)),
        float(len(name.subdomain.split("."))) if name.subdomain else 0.0,
        float(label[:1].isdigit()),
        float(name.known_suffix),
        sum(a != b for a, b in pairs) / len(pairs) if pairs else 0.0,
        sum(c in RARE for c in letters) / n_letters,
        head,
        tail,
        _mean(lr),
        lr_head,
        lr_tail,
        _mean(sorted(lr)[-3:]),
        _mean(lr_pron),
        _mean(sorted(lr_pron)[-3:]),
        _mean(site),
        _mean(site_lrs[0]),
        _mean(sorted(site_lrs[0])[-3:]),
        _mean(site_lrs[1]),
    ]


def matrix(
    domains: Sequence[str], lex: Lexicon | None = None, contrast: npt.NDArray[np.float64] | None = None
) -> npt.NDArray[np.float64]:
    """One feature row per name; ``contrast`` is the DGA-side trigram model (default: the shipped
    one). The last two columns come from the benign 6-gram model, for the whole batch at once."""
    lx = lex or lexicon()
    if not domains:
        return np.zeros((0, len(FEATURES)))
    dga_lm = shipped_contrast() if contrast is None else contrast
    names = [split(d) for d in domains]
    rows = np.array([vector(name, lx, dga_lm) for name in names], dtype=np.float64)
    benign = benign_model().features([name.label for name in names])
    return np.hstack([rows, benign])
