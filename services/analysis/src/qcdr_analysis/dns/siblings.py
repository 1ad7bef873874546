"""Registered domains derived from one seed, which a lexical score cannot see.

Some DGAs make names that each read like a real site: a counter on a fixed word (Fosniw's
``koreasys0.com``, ``koreasys1.com``, ...) or a seed name whose first characters are replaced
(Banjori's ``kwtoestnessbiophysicalohax.com``, ``eitaestnessbiophysicalohax.com``). One such name
is unremarkable; a pod asking for several *different* registered domains that are variants of one
another is not what a configured service does (its numbered hosts are subdomains of one domain).

Each label gets the keys it shares with its siblings. Two labels with a key in common are
siblings when they differ; the tracker counts distinct labels per key inside its window.
"""

from __future__ import annotations

import re

from qcdr_analysis.dns.domains import split

_DIGITS = re.compile(r"\d+")
# A counter needs a word around it: "163.com" and "360.cn" are real sites, not one pattern.
MIN_COUNTER_LETTERS = 4
# A replaced head (1 to 4 characters) needs a long common stem, so that names which merely end
# alike ("-online", "shop") are not siblings.
MAX_HEAD = 4
MIN_STEM = 12


def sibling_keys(domain: str) -> tuple[str, tuple[str, ...]]:
    """The registrable label of ``domain`` and the keys that relate it to its siblings."""
    name = split(domain)
    label = name.label
    if not label or name.idn:
        return label, ()
    keys: list[str] = []
    if any(c.isdigit() for c in label):
        skeleton = _DIGITS.sub("#", label)
        if sum(c.isalpha() for c in skeleton) >= MIN_COUNTER_LETTERS:
            keys.append(f"n:{skeleton}")
    # widest head first: names that share label[3:] share label[4:] too, and the pattern a reader
    # wants is the one that covers the group
    for head in range(MAX_HEAD, 0, -1):
        if len(label) - head >= MIN_STEM:
            keys.append(f"h{head}:{label[head:]}")
    return label, tuple(keys)


def describe(key: str) -> str:
    """A key as a reader would write the pattern: ``koreasys#`` or ``????estnessbiophysicalohax``."""
    kind, _, rest = key.partition(":")
    return rest if kind == "n" else "?" * int(kind[1:]) + rest
