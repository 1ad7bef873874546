"""Pronounceable DGA families: consonant and vowel draws, syllable tables, vowel pairs.

Each follows a published *description* of how a class of malware builds names (DGArchive entries and
public write-ups of Simda, Vawtrak, Symmi, Pitou, Pushdo and Ngioweb-style names); none is a port of
any malware's code, and only the shape of the names matters, not bit-exact domains. Consonants are
drawn uniformly, as those descriptions say, so "q", "x" and "z" turn up as often as "t": the names
are pronounceable yet unlike any language's spelling.
"""

from __future__ import annotations

from random import Random

VOWELS = "aeiou"
CONSONANTS = "bcdfghjklmnpqrstvwxyz"
_CONS = CONSONANTS.replace("y", "")


def items(text: str) -> tuple[str, ...]:
    return tuple(text.split())


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


ONSETS = items(
    "b c d f g h j k l m n p r s t v w x z "
    "bl br ch cl cr dr fl fr gl gr kr pl pr sc sh sk sl sp st str th tr wh"
)
NUCLEI = items("a e i o u y a e i o u ai au ea ee ei ie oa oo ou ue")
CODAS = items("b c d f g k l m n p r s t x z ck ct ft ld lt mp nd ng nk nt rd rk rn rt sk st")


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


def vowel_clusters(rng: Random) -> str:
    # An LCG picks whether the name starts with a vowel; each vowel is followed by one or two
    # consonants, each consonant run by a vowel (the second Vawtrak DGA as Fidelis describes it).
    out: list[str] = []
    vowel = rng.random() < 0.5
    target = rng.randint(7, 11)
    while len(out) < target:
        if vowel:
            out.append(rng.choice(VOWELS))
        else:
            out.extend(rng.choice(_CONS) for _ in range(rng.choice((1, 2, 2))))
        vowel = not vowel
    return "".join(out[:target])


def letter_pairs(rng: Random) -> str:
    # Two-letter pieces, consonant-vowel, vowel-consonant or vowel-vowel, chained to 8-13 letters
    # (Symmi-style descriptions; the names sit under a dynamic-DNS suffix, added by the caller).
    out = ""
    target = rng.randint(8, 13)
    while len(out) < target:
        kind = rng.random()
        if kind < 0.45:
            out += rng.choice(_CONS) + rng.choice(VOWELS)
        elif kind < 0.8:
            out += rng.choice(VOWELS) + rng.choice(_CONS)
        else:
            out += rng.choice(VOWELS) + rng.choice(VOWELS)
    return out[:target]


def doubled_vowels(rng: Random) -> str:
    # Consonants between single or paired vowels, eight or nine letters, a consonant last
    # (Pitou-style descriptions: the last letter steps through the consonants, name by name).
    out = ""
    while len(out) < rng.choice((7, 8)):
        out += rng.choice(_CONS) + "".join(rng.choice(VOWELS) for _ in range(rng.choice((1, 2, 2))))
    return out[:8] + rng.choice(_CONS)


def closed_syllables(rng: Random) -> str:
    # Syllables of consonant, vowel (now and then two) and, mostly, a closing consonant, 9-12
    # letters (Pushdo-style descriptions).
    out = ""
    target = rng.randint(9, 12)
    while len(out) < target:
        nucleus = rng.choice(VOWELS) + (rng.choice(VOWELS) if rng.random() < 0.2 else "")
        out += rng.choice(_CONS) + nucleus + (rng.choice(_CONS) if rng.random() < 0.6 else "")
    return out[:target]


def y_syllables(rng: Random) -> str:
    # Consonant-vowel-consonant pieces with "y" as the commonest vowel, seven to ten letters
    # (Simda-style descriptions: consonant and vowel tables, the vowel table "eyuioa").
    out = []
    for i in range(rng.randint(7, 10)):
        out.append(rng.choice(_CONS) if i % 2 == 0 else rng.choice("aeiouyyy"))
    return "".join(out)


# English derivational affixes around invented stems: public write-ups of Ngioweb show names such
# as an "over"/"multi"/"sub" prefix, two to four made-up syllables and a "-ness"/"-ance"/"-ize"
# suffix, one to three of them joined by hyphens.
PREFIXES = items(
    "a ab ad anti auto bi co de dis e em en epi ex extra hyper il im in inter ir macro mega micro "
    "mini mis mono multi non omni over para post pre pro re semi sub super tele trans tri ultra un under"
)
SUFFIXES = items(
    "able ably age al ance ancy ant ary ate ation dom ence ency ent er ery ful hood ial ian ible ic "
    "ical ify ing ion ise ish ism ist ity ive ize less like ly ment ness or ory ous ship sion some "
    "tion ure ward wise"
)


def affixed_word(rng: Random) -> str:
    stem = "".join(rng.choice(_CONS) + rng.choice(VOWELS) for _ in range(rng.randint(2, 4)))
    return rng.choice(PREFIXES) + stem + rng.choice(SUFFIXES)


def affixed_words(rng: Random) -> str:
    return "-".join(affixed_word(rng) for _ in range(rng.choice((1, 1, 2, 2, 3))))
