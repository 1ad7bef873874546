"""Training data the product may ship: DGA families and benign-looking names, both generated here.

Each DGA family follows a published *description* of how a class of malware builds names (a seeded
pseudo-random or hash stream mapped to letters, a date as seed, hex digests, concatenated dictionary
words, pronounceable syllables, ...). None is a port of any malware's code; the point is the shape of
the names, not bit-exact domains. Pronounceable families live in pronounceable.py, the benign side
in benign.py (generated) and sites.py (real site names).

The evaluation corpus (shared/corpora/dga) is never read here.
"""

from __future__ import annotations

import base64
import hashlib
import string
from collections.abc import Callable
from datetime import date, timedelta
from random import Random

from qcdr_analysis.dns.benign import (
    CC_TLDS,
    LETTERS,
    PRIVATE,
    benign,
    items,
    pick_tld,
    word_lists,
)
from qcdr_analysis.dns.pronounceable import (
    affixed_words,
    closed_syllables,
    cv_alternating,
    doubled_vowels,
    letter_pairs,
    syllable_chain,
    syllables,
    vowel_clusters,
    y_syllables,
)

DIGITS = string.digits
CONSONANTS = "bcdfghjklmnpqrstvwxyz"
# Dynamic-DNS suffixes named in public write-ups of Kraken- and Symmi-style DGAs.
DYNAMIC = items("ddns.net dyndns.org duckdns.org no-ip.biz hopto.org zapto.org mooo.com dynserv.com")
# Alternative roots (EmerDNS, OpenNIC) that BazarBackdoor-style DGAs use: not ICANN suffixes.
ALT_ROOTS = items("bazar emc coin lib bit bbs geek oss")


def _stream(seed: bytes) -> bytes:
    """A long deterministic byte stream from a seed (SHA-256 in counter mode)."""
    return b"".join(hashlib.sha256(seed + i.to_bytes(2, "big")).digest() for i in range(4))


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


def word_concat(rng: Random) -> str:
    # Concatenated dictionary words (Suppobox/Matsnu-style descriptions).
    _, words = word_lists()
    k = rng.choice((2, 2, 2, 3, 3, 4))
    sep = "-" if rng.random() < 0.15 else ""
    return sep.join(rng.choice(words) for _ in range(k))


def mutated_head(rng: Random) -> str:
    # A fixed seed phrase whose first characters are replaced each round (Banjori-style).
    _, words = word_lists()
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
    if rng.random() < 0.2:
        # The buggy variant Bader describes: an off-by-one lets characters just below "a" into the
        # first letters, and the root is spelt ".bazaar".
        k = rng.randint(1, 2)
        return "".join(rng.choice("[]^_`") for _ in range(k)) + label[k:] + ".bazaar"
    return f"{label}.{rng.choice(ALT_ROOTS)}"


SHORT_TLDS = (*CC_TLDS, *items("info biz ws cc cf ga ml tk"))


def short_cctld(rng: Random) -> str:
    # Short random letters on a wide ccTLD set (Conficker/QSnatch-style): the name is whole.
    label = "".join(rng.choice(LETTERS) for _ in range(rng.randint(4, 11)))
    return f"{label}.{rng.choice(SHORT_TLDS)}"


def pairs_dynamic(rng: Random) -> str:
    # Letter pairs under a dynamic-DNS suffix (Symmi-style): the name is whole.
    return f"{letter_pairs(rng)}.{rng.choice(DYNAMIC)}"


# Free and cheap TLDs of QSnatch-style descriptions, beside the generic ones.
FREE_TLDS = items("cf tk ml ga gq com net org biz info de cn mx rocks")


def short_alnum_free(rng: Random) -> str:
    # Five or six letters and digits from a hashed date, on free and cheap TLDs (QSnatch-style):
    # the name is whole.
    alphabet = LETTERS + DIGITS if rng.random() < 0.6 else LETTERS
    label = "".join(rng.choice(alphabet) for _ in range(rng.choice((5, 5, 5, 6))))
    return f"{label}.{rng.choice(FREE_TLDS)}"


def permuted_private(rng: Random) -> str:
    # Permutations of a few letters under a hosting suffix (descriptions of a downloader that
    # walks all orderings of a short seed): the name is whole.
    seed = rng.sample(LETTERS, rng.randint(3, 5))
    label = "".join(rng.choice(seed) for _ in range(rng.randint(5, 7)))
    return f"{label}.{rng.choice(PRIVATE)}"


# Hash-derived families that keep eight hex digits (a CRC-32 or the head of an MD5 of the date), as
# public write-ups of Orchard-style DGAs show, on legacy TLDs and dynamic DNS.
HEX_SUFFIXES = items("com net org duckdns.org")


def hex8(rng: Random) -> str:
    digest = hashlib.md5(rng.randbytes(8), usedforsecurity=False).hexdigest()[:8]
    return f"{digest}.{rng.choice(HEX_SUFFIXES)}"


# Families that return a whole name (their own suffix) rather than a label.
WHOLE_NAME = frozenset(
    {
        "dynamic_random",
        "alt_root",
        "short_cctld",
        "pairs_dynamic",
        "short_alnum_free",
        "permuted_private",
        "hex8",
    }
)

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
    "vowel_clusters": vowel_clusters,
    "pairs_dynamic": pairs_dynamic,
    "doubled_vowels": doubled_vowels,
    "closed_syllables": closed_syllables,
    "y_syllables": y_syllables,
    "short_alnum_free": short_alnum_free,
    "permuted_private": permuted_private,
    "affixed_words": affixed_words,
    "hex8": hex8,
}


def dga(rng: Random, family: str) -> str:
    name = DGA_FAMILIES[family](rng)
    return name if family in WHOLE_NAME else f"{name}.{pick_tld(rng, dga=True)}"


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
