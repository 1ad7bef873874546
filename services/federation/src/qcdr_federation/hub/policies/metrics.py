"""Metrics of the federated policies (default registry, served at ``/metrics``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

SYNCS = Counter(
    "qualys_federation_syncs",
    "Federated policy syncs that reached an end state on a spoke, once per (policy, cluster, "
    "generation): succeeded (proposed, approved or applied) or failed.",
    ["outcome"],
)
PULLS = Counter(
    "qcdr_federation_policy_pulls",
    "Spoke policy pulls answered, by outcome (changed: 200 with the set; not_modified: 304).",
    ["outcome"],
)
WAITING = Gauge("qcdr_federation_policy_pulls_waiting", "Spoke policy pulls held open (long poll) now.")
REFRESHES = Counter(
    "qcdr_federation_placement_refreshes",
    "Placement recomputations by result (unchanged: the fingerprint matched; changed; error).",
    ["result"],
)
ROLLOUT_RELEASES = Counter(
    "qcdr_federation_rollout_releases",
    "Clusters a progressive rollout released a policy's new generation to.",
)
ROLLOUTS_HALTED = Gauge(
    "qcdr_federation_rollouts_halted",
    "Progressive rollouts halted now (more clusters failed than the rollout's max_failures).",
)
ROLLOUT_ROLLBACKS = Counter(
    "qcdr_federation_rollout_rollbacks",
    "Progressive rollouts rolled back (on_failure: rollback): the clusters reached got their "
    "previous generation back.",
)
