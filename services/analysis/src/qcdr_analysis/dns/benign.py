"""Benign names for training: built from the wordfreq lexicon the way people name sites (words,
compounds, words with numbers, acronyms, blends, romanised Chinese and Japanese), with the TLD shares
that DGA and site names each have. Real site names come from sites.py beside these.

The evaluation corpus (shared/corpora/dga) is never read here.
"""

from __future__ import annotations

import string
from functools import lru_cache
from random import Random

import numpy as np

from qcdr_analysis.dns.text import lexicon


def items(text: str) -> tuple[str, ...]:
    return tuple(text.split())


LETTERS = string.ascii_lowercase
VOWELS = "aeiou"
CC_TLDS = items(
    "ru cn de uk fr it nl pl br in jp kr es ca au ch se no be at cz ua tw hk vn id tr ir mx ar co "
    "cc tv ws me io su kz by eu us la tk to"
)
NEW_GTLDS = items("xyz top online site club shop store tech space website live life app dev")
PRIVATE = items("ddns.net duckdns.org dyndns.org no-ip.org github.io herokuapp.com")
# Internal names a cluster resolves every minute: unknown suffixes that are not suspicious.
INTERNAL = items("local internal lan corp home intranet localdomain svc.cluster.local home.arpa")
SECOND_LEVEL = items("co.uk com.br com.cn com.au co.jp co.in com.mx com.tr co.za com.ua")


def pick_tld(rng: Random, dga: bool) -> str:
    r = rng.random()
    # Shares from public DGA write-ups: more "info/biz/ccTLD" among DGAs, mostly ".com" among sites.
    cuts = (0.30, 0.42, 0.50, 0.62, 0.84, 0.94, 0.97) if dga else (0.52, 0.60, 0.68, 0.71, 0.90, 0.96, 0.98)
    if r < cuts[0]:
        return "com"
    if r < cuts[1]:
        return "net"
    if r < cuts[2]:
        return "org"
    if r < cuts[3]:
        return rng.choice(("info", "biz", "name", "pro", "mobi"))
    if r < cuts[4]:
        return rng.choice(CC_TLDS)
    if r < cuts[5]:
        return rng.choice(NEW_GTLDS)
    if r < cuts[6]:
        return rng.choice(SECOND_LEVEL)
    return rng.choice(PRIVATE)


@lru_cache(maxsize=1)
def word_lists() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(words by frequency for site names, the 12,000 most frequent for word-list DGAs)."""
    ranked = lexicon().ranked
    return tuple(w for w in ranked if 3 <= len(w) <= 10), ranked[:12000]


@lru_cache(maxsize=1)
def _foreign() -> tuple[tuple[str, ...], ...]:
    """Site-name words of the non-English languages, each most frequent first."""
    langs = lexicon().by_language
    return tuple(tuple(w for w in ws if 3 <= len(w) <= 12) for lang, ws in langs.items() if lang != "en")


PINYIN_INITIALS = items("b p m f d t n l g k h j q x zh ch sh r z c s y w")
PINYIN_FINALS = items("a o e i u ai ei ao ou an en ang eng ong ia ie iao iu ian in iang ing uo ui uan un")
SUBDOMAINS = items("www mail api cdn app m static login blog shop news img docs portal my")


def _common(rng: Random) -> str:
    # Site names favour frequent words: squaring a uniform draw skews toward the top ranks.
    if rng.random() < 0.3:
        # A third of real names are built from other languages (Czech, Hungarian, transliterated
        # Russian, ...), which the English-first ranking would almost never reach.
        words = rng.choice(_foreign())
    else:
        words, _ = word_lists()
    return words[int(len(words) * rng.random() ** 2)]


SHORT_WORDS = items("a i my the of to in on at by and for go de la le el da do di du il e o y")


def _part(rng: Random) -> str:
    """One piece of a compound site name: mostly a word, sometimes a short word or a name piece.

    Real compound names are rarely all dictionary words ("redbarnfarmofnorthfield": "of" and
    "barn" are too short or rare to count), so the benign side must not be either.
    """
    r = rng.random()
    if r < 0.72:
        return _common(rng)
    if r < 0.84:
        return rng.choice(SHORT_WORDS)
    if r < 0.92:
        word = _common(rng)
        return word[: rng.randint(2, max(2, min(5, len(word))))]
    return rng.choice(PINYIN_INITIALS) + rng.choice(PINYIN_FINALS)


ROMAJI = items(
    "a i u e o ka ki ku ke ko sa shi su se so ta chi tsu te to na ni nu ne no ha hi fu he ho ma mi "
    "mu me mo ya yu yo ra ri ru re ro wa n ga gi gu ge go za ji zu ze zo da de do ba bi bu be bo pa "
    "pi pu pe po kyo sho ryu"
)


def _invented(rng: Random) -> str:
    """A made-up brand word sampled from the benign trigram model: pronounceable, not a word,
    with the letter habits of real text (unlike uniform consonant draws)."""
    lex = lexicon()
    letters = 26  # letters only: brand words rarely carry digits or hyphens mid-word
    a = b = len(lex.logp) - 1
    out: list[str] = []
    target = rng.randint(4, 10)
    while len(out) < target:
        p = np.exp(lex.logp[a, b, :letters])
        c = int(np.searchsorted(np.cumsum(p / p.sum()), rng.random()))
        out.append(LETTERS[min(c, letters - 1)])
        a, b = b, min(c, letters - 1)
    return "".join(out)


def benign_label(rng: Random) -> str:
    r = rng.random()
    if r < 0.12:
        # Brand-like names nobody's dictionary has: invented words, Japanese romaji, and Chinese
        # sites' pinyin initials ("yxdzqb"), all common among popular domains.
        kind = rng.random()
        if kind < 0.5:
            return _invented(rng)
        if kind < 0.8:
            return "".join(rng.choice(ROMAJI) for _ in range(rng.randint(2, 5)))
        initials = "".join(rng.choice(PINYIN_INITIALS)[0] for _ in range(rng.randint(3, 6)))
        return initials + (str(rng.randint(1, 999)) if rng.random() < 0.3 else "")
    r = rng.random()
    if r < 0.22:
        return _common(rng)
    if r < 0.40:
        return _common(rng) + _part(rng) if rng.random() < 0.5 else _part(rng) + _common(rng)
    if r < 0.50:
        # Long descriptive names ("pickyourownchristmastree") are common among real sites.
        return "".join(_part(rng) for _ in range(rng.randint(3, 6)))
    if r < 0.58:
        word = _common(rng)
        num = str(rng.choice((rng.randint(1, 99), rng.randint(100, 9999))))
        return num + word if rng.random() < 0.3 else word + num
    if r < 0.64:
        return "-".join(_part(rng) for _ in range(rng.randint(2, 5)))
    if r < 0.67:
        return "".join(rng.choice(LETTERS) for _ in range(rng.randint(2, 4)))
    if r < 0.70:
        # Short letter-digit mixes ("go2", "a4vn", "e21cn"): shorthand and numbers in brands.
        head = "".join(rng.choice(LETTERS) for _ in range(rng.randint(1, 3)))
        tail = "".join(rng.choice(LETTERS) for _ in range(rng.randint(0, 3)))
        return head + str(rng.randint(0, 99)) + tail
    if r < 0.73:
        return str(rng.randint(10, 99999))
    if r < 0.80:
        a, b = _common(rng), _common(rng)
        return a[: rng.randint(3, max(3, len(a)))] + b[: rng.randint(2, max(2, len(b)))]
    if r < 0.88:
        return "".join(
            rng.choice(PINYIN_INITIALS) + rng.choice(PINYIN_FINALS) for _ in range(rng.randint(2, 4))
        )
    if r < 0.93:
        # Vowel-dropped brand spellings ("flickr").
        word = _common(rng) + (_common(rng) if rng.random() < 0.5 else "")
        return word[0] + "".join(c for c in word[1:] if c not in VOWELS or rng.random() < 0.5)
    if r < 0.97:
        acronym = "".join(rng.choice(LETTERS) for _ in range(rng.randint(2, 4)))
        return acronym + _common(rng) if rng.random() < 0.5 else _common(rng) + acronym
    return _common(rng)[: rng.randint(3, 6)] + rng.choice(("ly", "ify", "io", "er", "hub", "box"))


def benign(rng: Random) -> str:
    if rng.random() < 0.03:
        return f"{benign_label(rng)}.{rng.choice(INTERNAL)}"
    name = f"{benign_label(rng)}.{pick_tld(rng, dga=False)}"
    if rng.random() < 0.2:
        name = f"{rng.choice(SUBDOMAINS)}.{name}"
    return name
