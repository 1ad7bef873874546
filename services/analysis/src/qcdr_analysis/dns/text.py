"""Benign language resources: a word lexicon and a character trigram model of benign text.

Both come from the ``wordfreq`` package at run time (code Apache-2.0; its word lists are
CC-BY-SA 4.0 and stay inside the installed package, nothing is copied into this repository).
Several Latin-script languages are mixed in because popular domains are not all English.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import islice

import numpy as np
import numpy.typing as npt
import wordfreq

# Top words per language: English dominates domain names, the others cover brand and site names
# built from other European languages, Indonesian/Turkish/Polish habits and (transliterated)
# Cyrillic. Real site names from Central/Eastern Europe were the largest group of false positives
# when only Western languages were in the model.
LANGUAGES: dict[str, int] = {
    "en": 60000,
    "de": 8000,
    "fr": 8000,
    "es": 8000,
    "it": 6000,
    "pt": 6000,
    "nl": 4000,
    "id": 4000,
    "tr": 3000,
    "pl": 4000,
    "sv": 3000,
    "cs": 3000,
    "sk": 2000,
    "hu": 3000,
    "fi": 2000,
    "ro": 2000,
    "da": 2000,
    "nb": 2000,
    "sh": 2000,
    "ms": 2000,
    "vi": 1500,
    "ru": 5000,
    "uk": 2000,
    "bg": 1500,
}
# Common Latin transliteration of Cyrillic letters (how Russian/Ukrainian sites spell their names).
_CYRILLIC = dict(
    zip(
        "абвгдеёжзийклмнопрстуфхцчшщъыьэюяієїґ",
        [
            "a",
            "b",
            "v",
            "g",
            "d",
            "e",
            "e",
            "zh",
            "z",
            "i",
            "y",
            "k",
            "l",
            "m",
            "n",
            "o",
            "p",
            "r",
            "s",
            "t",
            "u",
            "f",
            "h",
            "ts",
            "ch",
            "sh",
            "sch",
            "-",
            "y",
            "-",
            "e",
            "yu",
            "ya",
            "i",
            "e",
            "yi",
            "g",
        ],
        strict=True,
    )
)
# Latin letters that NFKD does not split into a base letter and a mark.
_CYRILLIC.update({"ł": "l", "ø": "o", "ß": "ss", "æ": "ae", "œ": "oe", "đ": "d", "ı": "i", "ð": "d"})
ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789-"
BOUNDARY = len(ALPHABET)  # index of the start/end marker
SIZE = len(ALPHABET) + 1
_INDEX = {c: i for i, c in enumerate(ALPHABET)}
# A three-letter word only counts as a word if it is common; rare ones ("xkq" in some chat corpus)
# would let random strings look segmentable.
_MIN_ZIPF_3 = 4.0
_MIN_ZIPF_LONG = 2.0
MAX_WORD = 16
SMOOTHING = 0.1


def _fold(word: str) -> str:
    """Latin letters without diacritics ("schwäbisch" -> "schwabisch"), Cyrillic transliterated."""
    w = "".join(_CYRILLIC.get(c, c) for c in word.lower()).replace("-", "")
    return "".join(c for c in unicodedata.normalize("NFKD", w) if not unicodedata.combining(c))


def _clean(word: str) -> str | None:
    w = _fold(word)
    return w if w and all(c in _INDEX for c in w) else None


@dataclass(frozen=True)
class Lexicon:
    words: frozenset[str]
    ranked: tuple[str, ...]  # lexicon words, each language most frequent first, languages in order
    by_language: dict[str, tuple[str, ...]]  # the same words per language, most frequent first
    # trigram log-probabilities log P(c | a, b) indexed [a, b, c] over ALPHABET + boundary
    logp: npt.NDArray[np.float64]


def _by_frequency(lang: str) -> Iterator[tuple[str, float]]:
    """(word, frequency), most frequent first: what ``wordfreq.get_frequency_dict`` holds, in its
    order, read bucket by bucket (a bucket is one frequency in centibels) without building the
    dict of every word of the language, which cost more than the rest of the lexicon."""
    for index, bucket in enumerate(wordfreq.get_frequency_list(lang)):
        freq = wordfreq.cB_to_freq(-index)
        for word in bucket:
            yield word, freq


@lru_cache(maxsize=1)
def lexicon() -> Lexicon:
    """Build the lexicon and trigram model (about a second, once per process)."""
    words: set[str] = set()
    ranked: list[str] = []
    by_language: dict[str, list[str]] = {}
    a: list[int] = []
    b: list[int] = []
    c: list[int] = []
    weights: list[float] = []
    for lang, n in LANGUAGES.items():
        mine = by_language.setdefault(lang, [])
        for raw, freq in islice(_by_frequency(lang), n):
            w = _clean(raw)
            if w is None or any(ch.isdigit() for ch in w):
                continue
            zipf = math.log10(freq) + 9.0
            if (len(w) >= 4 and zipf >= _MIN_ZIPF_LONG) or (len(w) == 3 and zipf >= _MIN_ZIPF_3):
                if w not in words:
                    ranked.append(w)
                words.add(w)
                mine.append(w)
            seq = [BOUNDARY, BOUNDARY, *(_INDEX[ch] for ch in w), BOUNDARY]
            a.extend(seq[:-2])
            b.extend(seq[1:-1])
            c.extend(seq[2:])
            # Weight by log-frequency so common words shape the model without drowning the rest.
            weights.extend([max(zipf, 1.0)] * (len(seq) - 2))
    flat = (np.array(a) * SIZE + np.array(b)) * SIZE + np.array(c)
    counts = np.bincount(flat, weights=np.array(weights), minlength=SIZE**3).astype(np.float64)
    counts = counts.reshape(SIZE, SIZE, SIZE) + SMOOTHING
    logp = np.log(counts / counts.sum(axis=2, keepdims=True))
    langs = {k: tuple(v) for k, v in by_language.items()}
    return Lexicon(frozenset(words), tuple(ranked), langs, logp)


def encode(label: str) -> npt.NDArray[np.int64]:
    """Indices of ``label`` framed by two start markers and one end marker; unknown chars map to '-'."""
    dash = _INDEX["-"]
    return np.array([BOUNDARY, BOUNDARY, *(_INDEX.get(c, dash) for c in label), BOUNDARY], dtype=np.int64)


def trigram_scores(lex: Lexicon, label: str) -> npt.NDArray[np.float64]:
    idx = encode(label)
    return lex.logp[idx[:-2], idx[1:-1], idx[2:]]


def trigram_counts(labels: Sequence[str]) -> npt.NDArray[np.int64]:
    """Flat trigram counts (index ``(a * SIZE + b) * SIZE + c``) over labels, framed as ``encode`` does."""
    if not labels:
        return np.zeros(SIZE**3, dtype=np.int64)
    flat = np.concatenate([_flat(encode(label)) for label in labels])
    return np.bincount(flat, minlength=SIZE**3).astype(np.int64)


def _flat(idx: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    out: npt.NDArray[np.int64] = (idx[:-2] * SIZE + idx[1:-1]) * SIZE + idx[2:]
    return out


def trigram_logp(counts: npt.NDArray[np.float64], smoothing: float = SMOOTHING) -> npt.NDArray[np.float64]:
    """log P(c | a, b) as a (SIZE, SIZE, SIZE) array from flat counts, additively smoothed."""
    grid = counts.astype(np.float64).reshape(SIZE, SIZE, SIZE) + smoothing
    out: npt.NDArray[np.float64] = np.log(grid / grid.sum(axis=2, keepdims=True))
    return out


def segment(words: frozenset[str], s: str) -> tuple[int, int]:
    """Best cover of ``s`` by dictionary words: (characters covered, words used).

    Dynamic programme over prefixes maximising covered characters, then preferring fewer words,
    so "facebooklogin" covers 13 chars with 3 words and "xqzvbt" covers almost nothing.
    """
    n = len(s)
    best: list[tuple[int, int]] = [(0, 0)] * (n + 1)  # (covered, -words)
    for i in range(1, n + 1):
        cov, neg = best[i - 1]
        top = (cov, neg)
        for j in range(max(0, i - MAX_WORD), i - 2):
            if s[j:i] in words:
                c, k = best[j]
                cand = (c + i - j, k - 1)
                if cand > top:
                    top = cand
        best[i] = top
    cov, neg = best[n]
    return cov, -neg


def entropy(s: str) -> float:
    if not s:
        return 0.0
    n = len(s)
    counts: dict[str, int] = {}
    for c in s:
        counts[c] = counts.get(c, 0) + 1
    return -sum(k / n * math.log2(k / n) for k in counts.values())
