"""Lexical features of a query name, computed for a batch into one float matrix."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import numpy as np
import numpy.typing as npt

from qcdr_analysis.dns.domains import Name, split
from qcdr_analysis.dns.text import Lexicon, entropy, lexicon, segment, trigram_scores

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
_ALT = "bazar coin emc lib bit bbs chan cyb dyn geek gopher indy libre neo null oss oz parody pirate"
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


def vector(name: Name, lex: Lexicon) -> list[float]:
    label = name.label
    n = max(len(label), 1)
    letters = [c for c in label if c.isalpha()]
    n_letters = max(len(letters), 1)
    cons, digit_run, switches = _runs(label)
    tri = trigram_scores(lex, label)
    worst = np.sort(tri)[:3]
    covered, used = 0, 0
    for part in label.split("-"):
        c, w = segment(lex.words, part)
        covered, used = covered + c, used + w
    pairs = [(a in VOWELS_Y, b in VOWELS_Y) for a, b in pairwise(letters)]
    # Head and tail of the label separately: Banjori-style names mutate the first letters of a
    # fixed word compound, so only the head reads as noise.
    head = float(tri[:HEAD].mean()) if len(tri) > HEAD else float(tri.mean())
    tail = float(tri[HEAD:].mean()) if len(tri) > HEAD else float(tri.mean())
    return [
        float(len(label)),
        entropy(label),
        sum(c.isdigit() for c in label) / n,
        sum(c in VOWELS for c in letters) / n_letters,
        float(cons),
        float(digit_run),
        float(label.count("-")),
        float(tri.mean()),
        float(worst.mean()),
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
    ]


def matrix(domains: Sequence[str], lex: Lexicon | None = None) -> npt.NDArray[np.float64]:
    lx = lex or lexicon()
    if not domains:
        return np.zeros((0, len(FEATURES)))
    return np.array([vector(split(d), lx) for d in domains], dtype=np.float64)
