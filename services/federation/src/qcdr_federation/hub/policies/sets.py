"""The set of policies placed on one cluster, rendered, with its ETag.

Rendering is the costly part (deep copy, patches, canonical JSON, sha256), and its result depends
only on (policy id, generation, cluster name): a generation fixes the spec. :class:`RenderCache`
keeps those results for the process, so a change re-renders only the policy that changed, and a
hundred spokes pulling the same set cost one rendering each, not a hundred.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from qcdr_common.contracts.federation.v1 import FederatedPolicySpec, PlacedPolicy, PlacedPolicySet
from qcdr_common.logging import get_logger

from qcdr_federation.hub.policies.issues import PolicySpecError
from qcdr_federation.hub.policies.placement import places_on
from qcdr_federation.hub.policies.render import render, set_etag

log = get_logger("qcdr.federation.policies")


@dataclass(frozen=True)
class LivePolicy:
    """A live (not deleted) policy at its current generation, spec parsed."""

    id: str
    name: str
    generation: int
    spec: FederatedPolicySpec

    @classmethod
    def parse(cls, policy_id: str, name: str, generation: int, spec: Mapping[str, Any]) -> LivePolicy | None:
        """None (logged) when a stored spec no longer parses: that policy is left out, not the set."""
        try:
            parsed = FederatedPolicySpec.model_validate(spec)
        except ValidationError as exc:
            log.error(
                "federation_policy_unparsable",
                policy_id=policy_id,
                generation=generation,
                error=str(exc).splitlines()[0][:300],
            )
            return None
        return cls(policy_id, name, generation, parsed)


class RenderCache:
    """Rendered policies by (policy id, generation, cluster), least recently used evicted."""

    def __init__(self, max_entries: int = 50_000) -> None:
        self.max_entries = max_entries
        self._items: OrderedDict[tuple[str, int, str], PlacedPolicy | PolicySpecError] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def render(self, policy: LivePolicy, cluster_name: str) -> PlacedPolicy:
        """The rendered policy, or the PolicySpecError rendering raised (cached too)."""
        key = (policy.id, policy.generation, cluster_name)
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
                self.hits += 1
        if found is None:
            self.misses += 1
            try:
                found = render(policy.id, policy.name, policy.generation, policy.spec, cluster_name)
            except PolicySpecError as exc:
                found = exc
            with self._lock:
                self._items[key] = found
                while len(self._items) > self.max_entries:
                    self._items.popitem(last=False)
        if isinstance(found, PolicySpecError):
            raise found
        return found

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


RENDER_CACHE = RenderCache()


class SpecCache:
    """Parsed specs by (policy id, generation): a stored spec is parsed once per process, and
    reading the live set costs one query of ids and generations when nothing changed."""

    def __init__(self, max_entries: int = 10_000) -> None:
        self.max_entries = max_entries
        self._items: OrderedDict[tuple[str, int], LivePolicy | None] = OrderedDict()

    def get(self, policy_id: str, generation: int) -> tuple[bool, LivePolicy | None]:
        key = (policy_id, generation)
        if key not in self._items:
            return False, None
        self._items.move_to_end(key)
        return True, self._items[key]

    def put(self, policy_id: str, name: str, generation: int, spec: Mapping[str, Any]) -> LivePolicy | None:
        parsed = LivePolicy.parse(policy_id, name, generation, spec)
        self._items[(policy_id, generation)] = parsed
        while len(self._items) > self.max_entries:
            self._items.popitem(last=False)
        return parsed


SPEC_CACHE = SpecCache()


@dataclass(frozen=True)
class Gate:
    """A policy whose clusters get only the version released to each of them: a progressive
    rollout, or a suspended policy. ``frozen`` (suspended): the placement is not consulted either,
    so nothing is added, updated or taken away."""

    frozen: bool
    released: Mapping[str, LivePolicy]  # cluster name -> the version released to it


NO_GATES: Mapping[str, Gate] = {}


@dataclass(frozen=True)
class ClusterSet:
    """What one cluster gets now; ``errors``: policies placed on it that the hub could not render
    for it (policy id -> why), left out of the set."""

    placed: PlacedPolicySet
    errors: Mapping[str, str] = field(default_factory=dict)

    @property
    def etag(self) -> str:
        return self.placed.etag

    def desired(self) -> dict[str, PlacedPolicy]:
        return {p.policy_id: p for p in self.placed.policies}


def render_error_message(policy: LivePolicy, exc: PolicySpecError) -> str:
    return f"the hub cannot render generation {policy.generation} for this cluster: {exc}"


def version_for(
    policy: LivePolicy, cluster_name: str, labels: Mapping[str, str], gates: Mapping[str, Gate] = NO_GATES
) -> LivePolicy | None:
    """The version of ``policy`` the cluster gets now, or None when it gets none."""
    gate = gates.get(policy.id)
    if gate is None:
        return policy if places_on(policy.spec, cluster_name, labels) else None
    if not gate.frozen and not places_on(policy.spec, cluster_name, labels):
        return None  # off the placement: taken away at once, rollout or not
    return gate.released.get(cluster_name)


def build_set(
    cluster_name: str,
    labels: Mapping[str, str],
    policies: Iterable[LivePolicy],
    cache: RenderCache = RENDER_CACHE,
    gates: Mapping[str, Gate] = NO_GATES,
) -> ClusterSet:
    placed: list[PlacedPolicy] = []
    errors: dict[str, str] = {}
    for current in policies:
        policy = version_for(current, cluster_name, labels, gates)
        if policy is None:
            continue
        try:
            placed.append(cache.render(policy, cluster_name))
        except PolicySpecError as exc:
            errors[policy.id] = (
                f"the hub cannot render generation {policy.generation} for this cluster: {exc}"
            )
    placed.sort(key=lambda p: (p.name, p.policy_id))
    etag = set_etag([(p.policy_id, p.content_hash) for p in placed])
    return ClusterSet(PlacedPolicySet(cluster=cluster_name, etag=etag, policies=tuple(placed)), errors)
