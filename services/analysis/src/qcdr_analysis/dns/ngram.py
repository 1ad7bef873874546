"""A character 6-gram model of benign names (Witten-Bell interpolation), scored in batches.

The trigram models of text.py and features.py see two letters of context. Six letters let the
model know whole syllables and word pieces of many languages ("zhijia", "cevir", "liyoruz"), so
a real name in a language the lexicon barely covers still reads as text, where a random draw of
the same letters does not. Trained on benign text only (the lexicon's words and the site names
of sites.py's ``lm`` part, which neither the trees nor the threshold see), it asks "does this
look like a name people write" rather than "does this look like our generators", which is what
the discriminative models tried before over-fitted to (docs/DETECTION.md).

Witten-Bell: ``P(c | h) = (C(h c) + T(h) P(c | h')) / (C(h) + T(h))`` where ``T(h)`` counts the
distinct letters seen after ``h`` and ``h'`` is ``h`` without its first letter; an unseen ``h``
passes the shorter context's estimate through. Each order is kept as sorted integer codes with
their log-probabilities, so a batch is scored with one ``searchsorted`` per order.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from qcdr_common.logging import get_logger

from qcdr_analysis.dns.text import ALPHABET

log = get_logger(__name__)

ORDER = 6
FORMAT = 1  # of the cached archive (see benign_model)
STALE_AFTER_S = 7 * 86400.0  # cached models of other sources unused this long are removed
# Codes: 0 unused (so a context padded with start markers differs from a shorter one), the
# alphabet from 1, then the end and start markers.
_CODE = {c: i + 1 for i, c in enumerate(ALPHABET)}
END = len(ALPHABET) + 1
START = END + 1
BASE = START + 1
# what can follow a context: a character of the alphabet or the end of the label
_OUTCOMES = len(ALPHABET) + 1
WORST = 3

Ints = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]


@dataclass(frozen=True, eq=False)
class NgramModel:
    """Per order k (context length k, 0..ORDER-1): the seen (context, next) codes, sorted, with
    log P(next | context); for k >= 1 also the seen contexts with log T(h) / (C(h) + T(h)), the
    weight an unseen next character gets from the shorter context."""

    order: int
    unigram: Floats  # log P(c) for every code (order 0, smoothed towards uniform)
    keys: tuple[Ints, ...]
    logp: tuple[Floats, ...]
    contexts: tuple[Ints, ...]
    backoff: tuple[Floats, ...]

    @property
    def ngrams(self) -> int:
        return sum(len(k) for k in self.keys)

    @property
    def digest(self) -> str:
        """Identifies the training text: model.json records it, so a model scored with another
        lexicon or site list than the one it was trained with is noticed."""
        h = hashlib.sha256()
        for keys, logp in zip(self.keys, self.logp, strict=True):
            h.update(keys.tobytes())
            h.update(np.round(logp, 6).tobytes())
        return h.hexdigest()[:16]

    def position_logp(self, labels: Sequence[str]) -> tuple[Floats, Ints]:
        """log P of every character and of the end of every label, and the label each belongs to."""
        windows, owner = _windows(labels, self.order)
        last = self.order - 1
        nxt = windows[:, last]
        lp = self.unigram[nxt]
        code = nxt.copy()
        for k in range(1, self.order):
            # the context grows by one character to the left: code = (h_k ... h_1, next)
            code = code + windows[:, last - k] * BASE**k
            keys = self.keys[k]
            i = np.minimum(np.searchsorted(keys, code), len(keys) - 1)
            seen = keys[i] == code
            contexts = self.contexts[k]
            ctx = code // BASE
            j = np.minimum(np.searchsorted(contexts, ctx), len(contexts) - 1)
            known = contexts[j] == ctx
            lp = np.where(seen, self.logp[k][i], np.where(known, self.backoff[k][j] + lp, lp))
        return lp, owner

    def features(self, labels: Sequence[str]) -> Floats:
        """(mean log P per position, mean of the WORST lowest) for each label: shape (n, 2)."""
        out = np.zeros((len(labels), 2))
        if not labels:
            return out
        lp, owner = self.position_logp(labels)
        n = np.bincount(owner, minlength=len(labels))
        out[:, 0] = np.bincount(owner, weights=lp, minlength=len(labels)) / n
        # the WORST lowest per label: sort by (label, log P), rank within the label
        order = np.lexsort((lp, owner))
        ranked_owner = owner[order]
        first = np.searchsorted(ranked_owner, np.arange(len(labels)))
        rank = np.arange(len(order)) - first[ranked_owner]
        low = rank < WORST
        worst_sum = np.bincount(ranked_owner[low], weights=lp[order][low], minlength=len(labels))
        out[:, 1] = worst_sum / np.minimum(n, WORST)
        return out


# Byte -> code: the alphabet, the two markers (written as bytes 1 and 2), anything else as '-'.
_LUT = np.full(256, _CODE["-"], dtype=np.int64)
for _char, _code in _CODE.items():
    _LUT[ord(_char)] = _code
_LUT[1], _LUT[2] = START, END


def _windows(labels: Sequence[str], order: int) -> tuple[Ints, Ints]:
    """One row per predicted position: the ``order - 1`` codes before it, then its own code."""
    pad = "\x01" * (order - 1)
    # one string for the batch: a per-character Python loop cost more than the scoring itself
    text = "".join([f"{pad}{label}\x02" for label in labels]).encode("ascii", errors="replace")
    flat = _LUT[np.frombuffer(text, dtype=np.uint8)]
    predicted = np.fromiter((len(label) + 1 for label in labels), dtype=np.int64, count=len(labels))
    ends = np.cumsum(predicted + order - 1)  # one past each label's end marker
    owner = np.repeat(np.arange(len(labels)), predicted)
    # position of every predicted code: its label's first predicted slot plus its rank in the label
    rank = np.arange(int(predicted.sum())) - np.repeat(np.cumsum(predicted) - predicted, predicted)
    pos = np.repeat(ends - predicted, predicted) + rank
    windows = flat[pos[:, None] + np.arange(-(order - 1), 1)[None, :]]
    return windows, owner


def build(labels: Sequence[str], order: int = ORDER) -> NgramModel:
    """Witten-Bell interpolated model of ``labels``, lowest order first."""
    windows, _ = _windows(labels, order)
    last = order - 1
    code = windows[:, last].copy()
    # order 0: P(c) = (C(c) + T / V) / (N + T), every outcome possible
    uniq, count = np.unique(code, return_counts=True)
    total, types = float(count.sum()), float(len(uniq))
    unigram = np.full(BASE, np.log(types / (total + types) / _OUTCOMES))
    unigram[uniq] = np.log((count + types / _OUTCOMES) / (total + types))
    keys: list[Ints] = [uniq]
    logps: list[Floats] = [unigram[uniq]]
    contexts: list[Ints] = [np.zeros(0, dtype=np.int64)]
    backoffs: list[Floats] = [np.zeros(0)]
    for k in range(1, order):
        code = code + windows[:, last - k] * BASE**k
        uniq, count = np.unique(code, return_counts=True)
        ctx, first, types_h = np.unique(uniq // BASE, return_index=True, return_counts=True)
        total_h = np.add.reduceat(count, first).astype(np.float64)
        per = np.repeat(np.arange(len(ctx)), types_h)
        # the same n-gram without its first context character: always seen one order down
        shorter = uniq % BASE**k
        lower = logps[k - 1][np.searchsorted(keys[k - 1], shorter)]
        t = types_h[per].astype(np.float64)
        prob = (count + t * np.exp(lower)) / (total_h[per] + t)
        keys.append(uniq)
        logps.append(np.log(prob))
        contexts.append(ctx)
        backoffs.append(np.log(types_h / (total_h + types_h)))
    return NgramModel(order, unigram, tuple(keys), tuple(logps), tuple(contexts), tuple(backoffs))


def _sources_key() -> str:
    """What the benign model is built from: the installed word and site packages and the code
    that reads them. A change to any gives another key, so a cached model is never stale."""
    h = hashlib.sha256(f"{FORMAT}:{ORDER}".encode())
    for package in ("wordfreq", "hstspreload"):
        h.update(f"{package}={metadata.version(package)}".encode())
    here = Path(__file__).parent
    for module in ("ngram.py", "text.py", "sites.py", "domains.py"):
        h.update((here / module).read_bytes())
    return h.hexdigest()[:20]


def cache_dir() -> Path:
    """``$QCDR_CACHE_DIR``, else ``$XDG_CACHE_HOME/qcdr``, else ``~/.cache/qcdr``."""
    if explicit := os.environ.get("QCDR_CACHE_DIR"):
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "qcdr"


def save(model: NgramModel, path: Path) -> None:
    """Write ``model`` as an npz archive, atomically (concurrent writers each replace it whole)."""
    arrays: dict[str, Any] = {"unigram": model.unigram}
    for k in range(model.order):
        arrays |= {f"keys{k}": model.keys[k], f"logp{k}": model.logp[k]}
        arrays |= {f"contexts{k}": model.contexts[k], f"backoff{k}": model.backoff[k]}
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as fh:
        np.savez(fh, **arrays)
    Path(fh.name).replace(path)


def load(path: Path, order: int = ORDER) -> NgramModel:
    """Read what :func:`save` wrote; ValueError when it is not that (then build again)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
        model = NgramModel(
            order,
            arrays["unigram"].astype(np.float64),
            tuple(arrays[f"keys{k}"].astype(np.int64) for k in range(order)),
            tuple(arrays[f"logp{k}"].astype(np.float64) for k in range(order)),
            tuple(arrays[f"contexts{k}"].astype(np.int64) for k in range(order)),
            tuple(arrays[f"backoff{k}"].astype(np.float64) for k in range(order)),
        )
    except (KeyError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"unreadable n-gram model {path}: {exc}") from exc
    well_formed = len(model.unigram) == BASE and all(
        len(model.keys[k]) == len(model.logp[k]) and len(model.contexts[k]) == len(model.backoff[k])
        for k in range(order)
    )
    if not well_formed:
        raise ValueError(f"n-gram model {path} has arrays of mismatched lengths")
    return model


@lru_cache(maxsize=1)
def benign_model() -> NgramModel:
    """The model of the lexicon's words and the ``lm`` part of the site list: built once (a few
    seconds of CPU) and kept in :func:`cache_dir`, so later processes load it in milliseconds.
    Without a writable cache directory (a read-only container) it is built in every process."""
    path = cache_dir() / f"benign-ngrams-{_sources_key()}.npz"
    with contextlib.suppress(ValueError):
        return load(path)
    model = _build_benign()
    try:
        save(model, path)
    except OSError as exc:
        log.info("n-gram model not cached", path=str(path), error=str(exc))
    else:
        prune(path)
    return model


def prune(keep: Path, max_age_s: float = STALE_AFTER_S) -> None:
    """Remove cached models of other sources unused for ``max_age_s`` (each is ~20 MB and every
    upgrade writes a new one); a recent one may belong to another installed version, so it stays."""
    cutoff = time.time() - max_age_s
    for other in keep.parent.glob("benign-ngrams-*.npz"):
        with contextlib.suppress(OSError):  # gone already, or not ours to remove
            if other != keep and max(other.stat().st_atime, other.stat().st_mtime) < cutoff:
                other.unlink()


def _build_benign() -> NgramModel:
    # local imports: sites.py reads the HSTS package, which plain n-gram scoring does not need
    from qcdr_analysis.dns.domains import split
    from qcdr_analysis.dns.sites import site_names
    from qcdr_analysis.dns.text import lexicon

    sites = [split(n).label for n in site_names("lm")]
    return build([*lexicon().ranked, *sites])
