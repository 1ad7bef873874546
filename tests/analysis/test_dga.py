"""DGA classifier pieces: offline registered-domain extraction, features, the shipped model, and
per-pod aggregation (issue #6, DNS monitoring)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from random import Random

import numpy as np
import orjson
import pytest
from qcdr_analysis.dns import PodDgaTracker, Query, TrackerConfig, classify, load_classifier, registered
from qcdr_analysis.dns.classifier import MODEL_PATH, model_from_dict
from qcdr_analysis.dns.domains import split
from qcdr_analysis.dns.features import FEATURES, matrix
from qcdr_analysis.dns.generators import DGA_FAMILIES, benign, dataset, dga
from qcdr_analysis.dns.text import lexicon, segment
from qcdr_analysis.dns.train import _export
from qcdr_common.contracts.events.v1 import Workload
from qcdr_common.contracts.findings.v1 import FindingKind
from sklearn.ensemble import HistGradientBoostingClassifier

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
POD = Workload(cluster="c1", namespace="shop", pod="cart-7d9f")
RANDOM_NAMES = ["xjwqkzvbrtplm.com", "q8v2kz7xw1jd0p.net", "bfkqzxwvtrplnhg.info", "zkqxvwplmnbrtd.org"]


def test_registered_domain_offline_with_private_suffixes() -> None:
    assert registered("www.bbc.co.uk") == "bbc.co.uk"
    assert registered("Mail.Google.com.") == "google.com"
    # Dynamic-DNS suffixes from the PSL's private section: the user's label is what counts.
    assert split("abcxyz.ddns.net").label == "abcxyz"
    assert split("abcxyz.ddns.net").private_suffix
    # Free dynamic-DNS parents the PSL does not list (FreeDNS, ChangeIP): the same, one level down.
    shared = split("www.clwafrfuuxq.yi.org")
    assert (shared.subdomain, shared.label, shared.suffix, shared.private_suffix) == (
        "www",
        "clwafrfuuxq",
        "yi.org",
        True,
    )
    assert registered("kxaszma.mooo.com") == "kxaszma.mooo.com"
    assert split("mooo.com").label == "mooo"  # the provider's own site is an ordinary name
    # An alternative root (EmerDNS) is no known suffix: its label is still judged.
    name = split("afgimzahgip.bazar")
    assert (name.label, name.suffix, name.known_suffix) == ("afgimzahgip", "bazar", False)
    assert split("xn--80aaiflkn.su").idn


def test_exported_trees_score_what_scikit_learn_fitted() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2000, len(FEATURES)))
    y = (x[:, 0] + x[:, 3] * x[:, 5] > 0.2).astype(int)
    clf = HistGradientBoostingClassifier(max_iter=40, max_depth=4, random_state=0).fit(x, y)
    dga_lm = orjson.loads(MODEL_PATH.read_bytes())["dga_lm"]
    model = model_from_dict(_export(clf, 0.5, dga_lm, {}))
    probe = rng.normal(size=(500, len(FEATURES)))
    assert np.allclose(model.scores(probe), clf.predict_proba(probe)[:, 1], atol=1e-9)


def test_lexicon_segments_words_not_noise() -> None:
    words = lexicon().words
    assert segment(words, "facebooklogin")[0] == len("facebooklogin")
    assert segment(words, "xqzvbtrwk")[0] <= 3


def test_lexicon_folds_diacritics_and_transliterates_cyrillic() -> None:
    from qcdr_analysis.dns.text import _clean

    assert _clean("schwäbisch") == "schwabisch"
    assert _clean("łódź") == "lodz"
    assert _clean("сказочный") == "skazochnyy"


def test_alternative_roots_and_internal_names_are_told_apart() -> None:
    x = matrix(["afgimzahgip.bazar", "redis.svc.cluster.local", "google.com"])
    f = [dict(zip(FEATURES, row, strict=True)) for row in x]
    assert [r["tld_class"] for r in f] == [5, 4, 0]
    assert [r["known_suffix"] for r in f] == [0, 0, 1]


def test_features_are_one_row_per_name() -> None:
    x = matrix(["google.com", "xjwqkzvbrtplm.com", "a1b2c3d4e5.net"])
    assert x.shape == (3, len(FEATURES))
    f = dict(zip(FEATURES, x[2], strict=True))
    assert f["digit_ratio"] == pytest.approx(0.5)
    assert f["letter_digit_switches"] == 9
    assert matrix([]).shape == (0, len(FEATURES))


def test_likelihood_ratio_features_prefer_generated_shapes_and_round_trip() -> None:
    from qcdr_analysis.dns.features import contrast_from_dict, contrast_to_dict
    from qcdr_analysis.dns.text import trigram_counts

    model = load_classifier()
    # The trigram models (two of generated DGA labels, one of real site names) ship as sparse JSON
    # counts, rebuilt into log-probabilities.
    assert model.contrast.shape[0] == 3
    counts = trigram_counts(["abc", "abd"])
    again = contrast_from_dict([contrast_to_dict(counts, 0.5)])
    assert again.shape == (1, *model.contrast.shape[1:])
    assert np.allclose(np.exp(again[0]).sum(axis=2), 1.0)
    x = matrix(["google.com", "weatherforecast.com", "xjwqkzvbrtplm.com", "qexuzabiwo.net"])
    f = [dict(zip(FEATURES, row, strict=True)) for row in x]
    # Words read as benign text, uniform letter draws and consonant/vowel draws as generator output.
    assert max(r["lr_mean"] for r in f[:2]) < min(r["lr_mean"] for r in f[2:])
    assert max(r["lr_pron_mean"] for r in f[:2]) < f[3]["lr_pron_mean"]


def test_generators_are_deterministic_and_cover_each_family() -> None:
    a = dataset(5, 3, 5, dictionary=True)
    b = dataset(5, 3, 5, dictionary=True)
    assert a == b
    assert set(a[2]) == {*DGA_FAMILIES, "benign"}
    rng = Random(1)
    assert all("." in dga(rng, f) for f in DGA_FAMILIES)
    assert all("." in benign(rng) for _ in range(50))


def test_real_site_names_come_in_disjoint_parts() -> None:
    from qcdr_analysis.dns.sites import sample_sites, site_names

    parts = {p: {split(n).registered for n in site_names(p)} for p in ("lm", "train", "validation")}
    assert all(len(names) > 10000 for names in parts.values())
    # Split by registered domain: the trigram model, the trees and the threshold see other sites.
    assert not parts["lm"] & parts["train"]
    assert not parts["lm"] & parts["validation"]
    assert not parts["train"] & parts["validation"]
    assert sample_sites("train", 5, 1) == sample_sites("train", 5, 1)
    assert all(not split(n).idn for n in sample_sites("validation", 200, 2))


def test_shipped_model_matches_features_and_scores_a_batch() -> None:
    model = load_classifier()
    assert 0.0 < model.threshold < 1.0
    assert model.meta["validation_fpr"] <= model.meta["target_fpr"]
    verdicts = classify(["google.com", "wikipedia.org", "stackoverflow.com", *RANDOM_NAMES])
    assert [v.is_dga for v in verdicts[:3]] == [False, False, False]
    assert all(v.is_dga and v.reasons for v in verdicts[3:])
    assert verdicts[3].registered == "xjwqkzvbrtplm.com"
    # Punycode labels are not Latin text: never called DGA by the lexical model.
    assert classify(["xn--80aaiflkn.su"])[0].score == 0.0
    assert classify([]) == []


def test_batch_scores_equal_single_scores() -> None:
    names = ["google.com", *RANDOM_NAMES]
    batch = [v.score for v in classify(names)]
    single = [classify([n])[0].score for n in names]
    assert np.allclose(batch, single)


def _queries(names: list[str], start: datetime, step: timedelta, nx: bool = False) -> list[Query]:
    return [
        Query(domain=n, event_time=start + i * step, workload=POD, nxdomain=nx, event_id=f"e{i}")
        for i, n in enumerate(names)
    ]


def test_one_odd_name_pages_nobody() -> None:
    tracker = PodDgaTracker()
    benign_traffic = ["api.stripe.com", "google.com", "github.com"] * 5
    assert tracker.observe(_queries([RANDOM_NAMES[0], *benign_traffic], T0, timedelta(seconds=5))) == []


def test_three_distinct_dga_names_in_window_raise_once() -> None:
    tracker = PodDgaTracker()
    findings = tracker.observe(_queries(RANDOM_NAMES, T0, timedelta(minutes=1)))
    assert len(findings) == 1
    f = findings[0]
    assert f.kind is FindingKind.DGA
    assert f.category == "dns.dga"
    assert f.workload == POD
    assert f.techniques == ("T1568.002",)
    assert len(f.attributes["names"]) == 3
    assert all(n["score"] >= load_classifier().threshold for n in f.attributes["names"])
    assert "3 distinct DGA-looking domains" in f.explanation
    # The pod stays quiet for the window after raising.
    later = _queries(["mmqzxkvwtrplb.com"], T0 + timedelta(minutes=5), timedelta(seconds=1))
    assert tracker.observe(later) == []
    # Same evidence, same id (a replay is a detectable duplicate).
    again = PodDgaTracker().observe(_queries(RANDOM_NAMES, T0, timedelta(minutes=1)))
    assert again[0].id == f.id


def test_repeats_and_slow_drip_do_not_raise() -> None:
    tracker = PodDgaTracker()
    # The same registered domain over and over is one name, not three.
    assert tracker.observe(_queries([RANDOM_NAMES[0]] * 10, T0, timedelta(seconds=10))) == []
    # Distinct names spread wider than the window never meet in it.
    slow = PodDgaTracker()
    assert slow.observe(_queries(RANDOM_NAMES, T0, timedelta(minutes=11))) == []


def test_nxdomain_ratio_raises_with_fewer_names() -> None:
    cfg = TrackerConfig(nxdomain_min_queries=10)
    tracker = PodDgaTracker(cfg)
    names = [RANDOM_NAMES[0], RANDOM_NAMES[1]] + ["google.com"] * 10
    findings = tracker.observe(_queries(names, T0, timedelta(seconds=3), nx=True))
    assert len(findings) == 1
    assert "NXDOMAIN" in findings[0].explanation


def test_pods_are_kept_apart() -> None:
    tracker = PodDgaTracker()
    queries = [
        Query(domain=n, event_time=T0, workload=Workload(cluster="c1", namespace="ns", pod=f"p{i}"))
        for i, n in enumerate(RANDOM_NAMES)
    ]
    assert tracker.observe(queries) == []
    assert len(tracker) == len(RANDOM_NAMES)


# Names that each read like a real site but come from one seed: a counter on a word (Fosniw's
# shape) and a seed name with its first four letters replaced (Banjori's shape). Made up here.
COUNTER = ["appx.lunarsoft0.com", "appx.lunarsoft1.com", "appx.lunarsoft7.net", "appx.lunarsoft12.com"]
HEADS = ["eitalighthousekeeping.com", "puralighthousekeeping.com", "megalighthousekeeping.com"]


def test_siblings_of_one_seed_raise_though_each_looks_real() -> None:
    model = load_classifier()
    assert not any(v.is_dga for v in classify(COUNTER + HEADS, model))
    for names, pattern in ((COUNTER, "lunarsoft#"), (HEADS, "????lighthousekeeping")):
        tracker = PodDgaTracker()
        findings = tracker.observe(_queries(names, T0, timedelta(seconds=20)))
        assert len(findings) == 1, pattern
        f = findings[0]
        assert f.attributes["pattern"] == pattern
        assert f"({pattern})" in f.explanation
        assert len(f.attributes["names"]) == 3  # raised on the third distinct registered domain
        assert f.techniques == ("T1568.002",)
        assert set(f.evidence_event_ids) == {"e0", "e1", "e2"}
        # replaying the same queries gives the same finding id
        assert PodDgaTracker().observe(_queries(names, T0, timedelta(seconds=20)))[0].id == f.id


@pytest.mark.parametrize(
    "names",
    [
        # numbered hosts of one registered domain are one domain
        ["shard1.db.example.com", "shard2.db.example.com", "shard3.db.example.com", "shard4.db.example.com"],
        # one brand under several suffixes is one label
        ["lunarsoft.com", "lunarsoft.net", "lunarsoft.org", "lunarsoft.co.uk"],
        # numbers with too few letters around them are not a pattern (real sites)
        ["163.com", "126.com", "360.cn", "av104.tv", "av105.tv", "av106.tv"],
        # only two siblings
        [*COUNTER[:2], "github.com", "pypi.org"],
        # names that merely end alike: the common stem is too short
        ["bestonlineshop.com", "fastonlineshop.com", "shoponlineshop.com", "cornonlineshop.com"],
    ],
)
def test_look_alikes_of_siblings_do_not_raise(names: list[str]) -> None:
    assert PodDgaTracker().observe(_queries(names, T0, timedelta(seconds=5))) == []


def test_siblings_outside_the_window_or_in_other_pods_do_not_meet() -> None:
    assert PodDgaTracker().observe(_queries(COUNTER, T0, timedelta(minutes=6))) == []
    tracker = PodDgaTracker()
    queries = [
        Query(domain=n, event_time=T0, workload=Workload(cluster="c1", namespace="ns", pod=f"p{i}"))
        for i, n in enumerate(COUNTER)
    ]
    assert tracker.observe(queries) == []
    # expiry forgets the old group entirely: two fresh siblings are still only two
    tracker = PodDgaTracker()
    assert tracker.observe(_queries(COUNTER[:2], T0, timedelta(seconds=1))) == []
    late = T0 + timedelta(minutes=20)
    assert tracker.observe(_queries(COUNTER[2:], late, timedelta(seconds=1))) == []
    assert tracker._pods[("c1", "shop", "cart-7d9f")].groups == {
        "n:lunarsoft#": {"lunarsoft7": 1, "lunarsoft12": 1}
    }
