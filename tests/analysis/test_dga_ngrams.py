"""The benign character 6-gram model of the DGA classifier (dns/ngram.py): Witten-Bell estimates
as the textbook defines them, proper distributions, and the shipped model's link to the word and
site lists it was trained with."""

from __future__ import annotations

import math
import os
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from random import Random

import numpy as np
import pytest
from qcdr_analysis.dns import ngram
from qcdr_analysis.dns.classifier import MODEL_PATH, check_benign_ngrams, load_classifier, model_from_dict
from qcdr_analysis.dns.ngram import NgramModel, benign_model, build, load, save
from qcdr_analysis.dns.text import ALPHABET
from qcdr_common.testing.logs import capture_logs

OUTCOMES = len(ALPHABET) + 1  # every character, or the end of the label


class ReferenceWittenBell:
    """Written straight from the definition with dictionaries, to hold the vectorised model to."""

    def __init__(self, labels: list[str], order: int) -> None:
        self.order = order
        self.count: list[dict[tuple[str, str], int]] = [defaultdict(int) for _ in range(order)]
        self.total: list[dict[str, int]] = [defaultdict(int) for _ in range(order)]
        for label in labels:
            text = "^" * (order - 1) + label + "$"
            for j in range(order - 1, len(text)):
                for k in range(order):
                    self.count[k][(text[j - k : j], text[j])] += 1
                    self.total[k][text[j - k : j]] += 1
        self.types: list[dict[str, int]] = [defaultdict(int) for _ in range(order)]
        for k in range(order):
            for h, _ in self.count[k]:
                self.types[k][h] += 1

    def logp(self, label: str) -> list[float]:
        text = "^" * (self.order - 1) + label + "$"
        out = []
        for j in range(self.order - 1, len(text)):
            p = 1.0 / OUTCOMES
            for k in range(self.order):
                h = text[j - k : j]
                if self.total[k].get(h, 0) == 0:
                    break  # an unseen context passes the shorter one's estimate on
                t = self.types[k][h]
                p = (self.count[k].get((h, text[j]), 0) + t * p) / (self.total[k][h] + t)
            out.append(math.log(p))
        return out


def _corpus(seed: int, n: int) -> list[str]:
    rng = Random(seed)
    return ["".join(rng.choice("abcdefgh-1") for _ in range(rng.randint(1, 10))) for _ in range(n)]


def test_the_vectorised_model_computes_witten_bell() -> None:
    labels = _corpus(1, 2000)
    model, reference = build(labels, order=4), ReferenceWittenBell(labels, 4)
    probes = [*labels[:40], "zzz", "a", "", "abcabcabcabcabc", "x-9q", "hgfedcba"]
    lp, owner = model.position_logp(probes)
    assert owner.tolist() == [i for i, p in enumerate(probes) for _ in range(len(p) + 1)]
    expected = [v for p in probes for v in reference.logp(p)]
    np.testing.assert_allclose(lp, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("context", ["", "ab", "abcde", "zzzzz", "h-1"])
def test_every_context_is_a_distribution_over_what_can_follow(context: str) -> None:
    model = build(_corpus(2, 3000), order=6)
    # the last position of context + c is P(c | context); the end of ``context`` itself is P(end)
    outcomes = [context + c for c in ALPHABET]
    lp, owner = model.position_logp([*outcomes, context])
    last = np.array([np.flatnonzero(owner == i)[-2] for i in range(len(outcomes))])
    end = np.flatnonzero(owner == len(outcomes))[-1]
    assert np.exp(lp[last]).sum() + np.exp(lp[end]) == pytest.approx(1.0, abs=1e-9)


def test_features_are_the_mean_and_the_three_worst_positions() -> None:
    labels = _corpus(3, 500)
    model = build(labels, order=5)
    probes = ["abc", "a", "", "qqqqzzzz", "hgf-1abc"]
    features = model.features(probes)
    lp, owner = model.position_logp(probes)
    for i in range(len(probes)):
        mine = np.sort(lp[owner == i])
        assert features[i, 0] == pytest.approx(mine.mean())
        assert features[i, 1] == pytest.approx(mine[:3].mean())
    assert model.features([]).shape == (0, 2)


def test_names_people_write_read_as_text_and_random_draws_do_not() -> None:
    model = benign_model()
    # Turkish, Polish and pinyin site names that were false positives of the trigram features
    written = ["sozcukcevir", "typujemy", "lieqizhijia", "kitchenware", "bundesliga"]
    drawn = ["xjwqkzvbrtp", "qzvkxjwbtrm", "hzslwjobdzp", "vnarbrqfxk", "zopdkcqbhz"]
    mean = model.features(written + drawn)[:, 0]
    assert mean[: len(written)].min() > mean[len(written) :].max()


def test_the_shipped_model_was_trained_with_the_installed_lists() -> None:
    """model.json records the digest of the 6-gram model it was trained with: after a change to
    the lexicon or the site split, retrain (python -m qcdr_analysis.dns.train)."""
    assert load_classifier(MODEL_PATH).meta["benign_ngrams"]["digest"] == benign_model().digest
    assert check_benign_ngrams(load_classifier(MODEL_PATH))


def test_a_model_trained_with_other_lists_is_reported() -> None:
    import orjson

    data = orjson.loads(MODEL_PATH.read_bytes())
    data["meta"]["benign_ngrams"]["digest"] = "0" * 16
    with capture_logs() as logs:
        assert not check_benign_ngrams(model_from_dict(data))
    assert any("other word or site lists" in entry["event"] for entry in logs)
    # the digest follows the training text
    assert build(["abc"]).digest != build(["abd"]).digest


@dataclass
class Cache:
    path: Path
    builds: int = 0


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cache]:
    """An empty cache directory, a small stand-in for the benign model's build, and a clean
    in-process cache before and after (other tests use the real model)."""
    state = Cache(tmp_path / "cache")
    monkeypatch.setenv("QCDR_CACHE_DIR", str(state.path))

    def small() -> NgramModel:
        state.builds += 1
        return build(_corpus(5, 200))

    monkeypatch.setattr(ngram, "_build_benign", small)
    benign_model.cache_clear()
    yield state
    benign_model.cache_clear()


def test_the_benign_model_is_built_once_and_then_read_from_the_cache(cache: Cache) -> None:
    first = benign_model()
    (stored,) = cache.path.glob("benign-ngrams-*.npz")
    benign_model.cache_clear()  # a new process
    again = benign_model()
    assert cache.builds == 1
    assert again.digest == first.digest
    np.testing.assert_array_equal(again.features(["abc", "zz"]), first.features(["abc", "zz"]))
    assert stored.exists()


def test_a_damaged_cache_file_is_built_again_and_replaced(cache: Cache) -> None:
    digest = benign_model().digest
    (stored,) = cache.path.glob("benign-ngrams-*.npz")
    stored.write_bytes(b"not an npz archive")
    benign_model.cache_clear()
    assert benign_model().digest == digest
    assert cache.builds == 2
    assert load(stored).digest == digest


def test_without_a_writable_cache_the_model_is_built_in_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cache: Cache
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("QCDR_CACHE_DIR", str(blocker / "cache"))  # a directory inside a file
    assert benign_model().ngrams > 0
    assert cache.builds == 1
    assert not (blocker / "cache").exists()


def test_an_archive_with_mismatched_arrays_is_refused(tmp_path: Path) -> None:
    model = build(_corpus(6, 100), order=3)
    path = tmp_path / "m.npz"
    save(model, path)
    assert load(path, order=3).digest == model.digest
    np.savez(path, unigram=model.unigram, keys0=model.keys[0], logp0=model.logp[0][:-1])
    with pytest.raises(ValueError, match="n-gram model"):
        load(path, order=1)


def test_building_removes_cached_models_of_other_sources_unused_for_a_week(cache: Cache) -> None:
    cache.path.mkdir(parents=True)
    old, recent = cache.path / "benign-ngrams-old.npz", cache.path / "benign-ngrams-recent.npz"
    unrelated = cache.path / "something-else.npz"
    for path in (old, recent, unrelated):
        path.write_bytes(b"x")
    week_ago = time.time() - 8 * 86400
    os.utime(old, (week_ago, week_ago))
    os.utime(unrelated, (week_ago, week_ago))
    benign_model()
    assert not old.exists()
    assert recent.exists()  # perhaps another installed version's, in use
    assert unrelated.exists()
    assert len(list(cache.path.glob("benign-ngrams-*.npz"))) == 2
