"""Training data the product may ship: DGA families and benign-looking names, both generated here.

Each DGA family follows a published *description* of how a class of malware builds names (a seeded
pseudo-random or hash stream mapped to letters, a date as seed, hex digests, concatenated dictionary
words, pronounceable syllables, ...). None is a port of any malware's code; the point is the shape of
the names, not bit-exact domains. The benign side is built from the wordfreq lexicon the way people
name sites: words, compounds, words with numbers, acronyms, blends and romanised Chinese syllables.

The evaluation corpus (shared/corpora/dga) is never read here.
"""

from __future__ import annotations

import base64
import hashlib
import string
from collections.abc import Callable
from datetime import date, timedelta
from functools import lru_cache
from random import Random

import numpy as np

from qcdr_analysis.dns.text import lexicon


def _items(text: str) -> tuple[str, ...]:
    return tuple(text.split())


LETTERS = string.ascii_lowercase
DIGITS = string.digits
VOWELS = "aeiou"
CONSONANTS = "bcdfghjklmnpqrstvwxyz"
CC_TLDS = _items(
    "ru cn de uk fr it nl pl br in jp kr es ca au ch se no be at cz ua tw hk vn id tr ir mx ar co "
    "cc tv ws me io su kz by eu us la tk to"
)
NEW_GTLDS = _items("xyz top online site club shop store tech space website live life app dev")
PRIVATE = _items("ddns.net duckdns.org dyndns.org no-ip.org github.io herokuapp.com")
# Dynamic-DNS suffixes named in public write-ups of Kraken- and Symmi-style DGAs.
DYNAMIC = _items("ddns.net dyndns.org duckdns.org no-ip.biz hopto.org zapto.org mooo.com dynserv.com")
# Alternative roots (EmerDNS, OpenNIC) that BazarBackdoor-style DGAs use: not ICANN suffixes.
ALT_ROOTS = _items("bazar emc coin lib bit bbs geek oss")
# Internal names a cluster resolves every minute: unknown suffixes that are not suspicious.
INTERNAL = _items("local internal lan corp home intranet localdomain svc.cluster.local home.arpa")
SECOND_LEVEL = _items("co.uk com.br com.cn com.au co.jp co.in com.mx com.tr co.za com.ua")


def _tld(rng: Random, dga: bool) -> str:
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


def _stream(seed: bytes) -> bytes:
    """A long deterministic byte stream from a seed (SHA-256 in counter mode)."""
    return b"".join(hashlib.sha256(seed + i.to_bytes(2, "big")).digest() for i in range(4))


@lru_cache(maxsize=1)
def _words() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(words by frequency for site names, the 12,000 most frequent for word-list DGAs)."""
    ranked = lexicon().ranked
    return tuple(w for w in ranked if 3 <= len(w) <= 10), ranked[:12000]


@lru_cache(maxsize=1)
def _foreign() -> tuple[tuple[str, ...], ...]:
    """Site-name words of the non-English languages, each most frequent first."""
    langs = lexicon().by_language
    return tuple(tuple(w for w in ws if 3 <= len(w) <= 12) for lang, ws in langs.items() if lang != "en")


# --- DGA families -----------------------------------------------------------------------------


def lcg_letters(rng: Random) -> str:
    # Linear congruential generator, each step's high bits pick a letter.
    state = rng.getrandbits(32)
    out = []
    for _ in range(rng.randint(8, 22)):
        state = (state * 1103515245 + 12345) & 0x7FFFFFFF
        out.append(LETTERS[(state >> 16) % 26])
    return "".join(out)


def date_hash(rng: Random) -> str:
    # Date + counter hashed; bytes reduced to letters and digits (Zeus/GameOver-style descriptions).
    day = date(2015, 1, 1) + timedelta(days=rng.randint(0, 3000))
    stream = _stream(f"{day.isoformat()}:{rng.randint(0, 9999)}".encode())
    alphabet = LETTERS + DIGITS if rng.random() < 0.5 else LETTERS
    return "".join(alphabet[b % len(alphabet)] for b in stream[: rng.randint(10, 30)])


def hex_digest(rng: Random) -> str:
    digest = hashlib.md5(rng.randbytes(8), usedforsecurity=False).hexdigest()
    return digest[: rng.choice((8, 12, 13, 16, 20, 32))]


def base32_name(rng: Random) -> str:
    return base64.b32encode(rng.randbytes(16)).decode().lower().rstrip("=")[: rng.randint(12, 26)]


def alnum(rng: Random) -> str:
    alphabet = LETTERS + DIGITS
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(8, 20)))


def short_random(rng: Random) -> str:
    alphabet = LETTERS + DIGITS if rng.random() < 0.4 else LETTERS
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(4, 11)))


def reduced_alphabet(rng: Random) -> str:
    # Some families draw from a handful of letters only (a per-campaign character set).
    alphabet = rng.sample(LETTERS, rng.randint(5, 10))
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(8, 18)))


def syllables(rng: Random) -> str:
    # Pronounceable names: alternating consonant and vowel draws (Simda/Pitou-style descriptions).
    parts = []
    for _ in range(rng.randint(2, 6)):
        s = rng.choice(CONSONANTS) + rng.choice(VOWELS)
        if rng.random() < 0.3:
            s += rng.choice(CONSONANTS)
        parts.append(s)
    name = "".join(parts)
    if rng.random() < 0.15:
        name += "-" + syllables(rng)
    return name


def word_concat(rng: Random) -> str:
    # Concatenated dictionary words (Suppobox/Matsnu-style descriptions).
    _, words = _words()
    k = rng.choice((2, 2, 2, 3, 3, 4))
    sep = "-" if rng.random() < 0.15 else ""
    return sep.join(rng.choice(words) for _ in range(k))


def mutated_head(rng: Random) -> str:
    # A fixed seed phrase whose first characters are replaced each round (Banjori-style).
    _, words = _words()
    base = "".join(rng.choice(words) for _ in range(rng.randint(2, 4)))
    k = 4 if rng.random() < 0.7 else rng.randint(3, 5)
    return "".join(rng.choice(LETTERS) for _ in range(k)) + base[k:]


def encoded_date(rng: Random) -> str:
    # A date, base64-encoded and lower-cased (descriptions of Sisron-like names).
    day = date(2012, 1, 1) + timedelta(days=rng.randint(0, 5000))
    raw = day.strftime(rng.choice(("%d%m%Y", "%Y%m%d", "%d%m%y")))
    return base64.b64encode(raw.encode()).decode().lower().rstrip("=")


def letters_digits_mixed(rng: Random) -> str:
    # Random letters with digit pairs sprinkled in (several banking-trojan descriptions).
    out = []
    for _ in range(rng.randint(6, 14)):
        out.append(rng.choice(LETTERS))
        if rng.random() < 0.25:
            out.append(str(rng.randint(10, 99)))
    return "".join(out)


def cv_alternating(rng: Random) -> str:
    # Consonant and vowel draws alternate, each uniform over its set with "y" among the vowels
    # (published descriptions of Simda-, Vawtrak- and Pitou-style pronounceable names). Uniform
    # consonants make "q", "x", "z" as common as "t": pronounceable, yet unlike any language.
    consonants = CONSONANTS.replace("y", "")
    vowels = VOWELS + "y"
    first_vowel = rng.random() < 0.3
    out = []
    for i in range(rng.randint(6, 15)):
        out.append(rng.choice(vowels if (i % 2 == 0) == first_vowel else consonants))
    return "".join(out)


ONSETS = _items(
    "b c d f g h j k l m n p r s t v w x z "
    "bl br ch cl cr dr fl fr gl gr kr pl pr sc sh sk sl sp st str th tr wh"
)
NUCLEI = _items("a e i o u y a e i o u ai au ea ee ei ie oa oo ou ue")
CODAS = _items("b c d f g k l m n p r s t x z ck ct ft ld lt mp nd ng nk nt rd rk rn rt sk st")


def syllable_chain(rng: Random) -> str:
    # Pseudo-syllables (onset, vowel, optional coda) drawn from tables and chained, as public
    # analyses describe for Ngioweb- and Pushdo-style names: word-like pieces that are no words.
    parts = []
    for _ in range(rng.randint(2, 5)):
        part = rng.choice(ONSETS) + rng.choice(NUCLEI)
        if rng.random() < 0.4:
            part += rng.choice(CODAS)
        parts.append(part)
    return "".join(parts)


def dynamic_random(rng: Random) -> str:
    # Random letters under a dynamic-DNS provider (Kraken/Symmi-style); the suffix is added here,
    # so the name is returned whole.
    label = "".join(rng.choice(LETTERS) for _ in range(rng.randint(6, 13)))
    return f"{label}.{rng.choice(DYNAMIC)}"


def alt_root(rng: Random) -> str:
    # Letters on an alternative root (BazarBackdoor-style, EmerDNS ".bazar"): the name is whole.
    if rng.random() < 0.5:
        label = "".join(rng.choice(LETTERS) for _ in range(rng.randint(10, 16)))
    else:
        label = cv_alternating(rng)
    return f"{label}.{rng.choice(ALT_ROOTS)}"


SHORT_TLDS = (*CC_TLDS, *_items("info biz ws cc cf ga ml tk"))


def short_cctld(rng: Random) -> str:
    # Short random letters on a wide ccTLD set (Conficker/QSnatch-style): the name is whole.
    label = "".join(rng.choice(LETTERS) for _ in range(rng.randint(4, 11)))
    return f"{label}.{rng.choice(SHORT_TLDS)}"


# Families that return a whole name (their own suffix) rather than a label.
WHOLE_NAME = frozenset({"dynamic_random", "alt_root", "short_cctld"})

# Word-list families are generated for tests and reports but left out of training by default:
# with lexical features alone their names are compound site names ("pickyourownchristmastree"),
# and teaching the model otherwise costs false positives on real sites (docs/DETECTION.md).
DICTIONARY_FAMILIES = frozenset({"word_concat"})

DGA_FAMILIES: dict[str, Callable[[Random], str]] = {
    "lcg_letters": lcg_letters,
    "date_hash": date_hash,
    "hex_digest": hex_digest,
    "base32": base32_name,
    "alnum": alnum,
    "short_random": short_random,
    "reduced_alphabet": reduced_alphabet,
    "syllables": syllables,
    "word_concat": word_concat,
    "mutated_head": mutated_head,
    "encoded_date": encoded_date,
    "letters_digits_mixed": letters_digits_mixed,
    "cv_alternating": cv_alternating,
    "syllable_chain": syllable_chain,
    "dynamic_random": dynamic_random,
    "alt_root": alt_root,
    "short_cctld": short_cctld,
}

# --- benign names -----------------------------------------------------------------------------

PINYIN_INITIALS = _items("b p m f d t n l g k h j q x zh ch sh r z c s y w")
PINYIN_FINALS = _items("a o e i u ai ei ao ou an en ang eng ong ia ie iao iu ian in iang ing uo ui uan un")
SUBDOMAINS = _items("www mail api cdn app m static login blog shop news img docs portal my")


def _common(rng: Random) -> str:
    # Site names favour frequent words: squaring a uniform draw skews toward the top ranks.
    if rng.random() < 0.3:
        # A third of real names are built from other languages (Czech, Hungarian, transliterated
        # Russian, ...), which the English-first ranking would almost never reach.
        words = rng.choice(_foreign())
    else:
        words, _ = _words()
    return words[int(len(words) * rng.random() ** 2)]


SHORT_WORDS = _items("a i my the of to in on at by and for go de la le el da do di du il e o y")


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


ROMAJI = _items(
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
    name = f"{benign_label(rng)}.{_tld(rng, dga=False)}"
    if rng.random() < 0.2:
        name = f"{rng.choice(SUBDOMAINS)}.{name}"
    return name


def dga(rng: Random, family: str) -> str:
    name = DGA_FAMILIES[family](rng)
    return name if family in WHOLE_NAME else f"{name}.{_tld(rng, dga=True)}"


def dataset(
    seed: int, per_family: int, n_benign: int, dictionary: bool = False
) -> tuple[list[str], list[int], list[str]]:
    """Names, labels (1 = DGA) and family names (``benign`` for 0), deterministic for a seed."""
    rng = Random(seed)
    names: list[str] = []
    labels: list[int] = []
    families: list[str] = []
    for family in DGA_FAMILIES:
        if family in DICTIONARY_FAMILIES and not dictionary:
            continue
        for _ in range(per_family):
            names.append(dga(rng, family))
            labels.append(1)
            families.append(family)
    for _ in range(n_benign):
        names.append(benign(rng))
        labels.append(0)
        families.append("benign")
    return names, labels, families
