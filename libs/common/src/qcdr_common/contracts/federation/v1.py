"""Federation v1: the wire format between a hub and its spokes, and the payloads a spoke publishes
on its own streams.

Pull model (Open Cluster Management's, not KubeFed's push): the hub never holds a spoke's
credentials. A spoke registers with a one-time bootstrap token and gets a credential of its own
(``<credential id>.<secret>``; the hub keeps only a hash), then heartbeats, pulls the policies
placed on it (ETag + long poll), reports their apply status, forwards events and findings, shares
and fetches behavioural baselines by image digest, and picks up the commands (approve, reject,
undo, renew of its pending response actions) that hub users send it.

On the spoke, placed policies travel to the response service on ``federation:policies``
(``federation.policy_placed`` / ``federation.policy_removed``) and shared baselines to analysis
on ``federation:baselines`` (``federation.baseline_shared``), both through the outbox.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

VERSION = 1

# streams (names without the key prefix) and envelope types on a spoke
POLICIES_STREAM = "federation:policies"
POLICY_PLACED = "federation.policy_placed"
POLICY_REMOVED = "federation.policy_removed"
BASELINES_STREAM = "federation:baselines"
BASELINE_SHARED = "federation.baseline_shared"

# labels and annotations the hub puts on every rendered manifest, so a spoke (and whoever looks at
# its cluster) can tell a federated object and its origin
LABEL_POLICY_ID = "federation.qualys.com/policy-id"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "qcdr-federation"
ANNOTATION_GENERATION = "federation.qualys.com/generation"
ANNOTATION_HUB = "federation.qualys.com/hub"

# a DNS-1123 label: cluster names end up in labels, URLs and Kubernetes object names
CLUSTER_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
POLICY_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"
MAX_FORWARD_ITEMS = 1000

# what PostgreSQL (BIGINT, JSONB) and orjson hold: a count past it is a 422, not a failed write
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
Count = Annotated[int, Field(ge=0, le=INT64_MAX)]


def _unstorable(value: Any, where: str) -> str | None:
    """Why ``value`` (a field's, walked into lists and dicts) cannot be stored or encoded, or None."""
    if isinstance(value, str):
        if not value.isascii():
            try:
                value.encode()
            except UnicodeEncodeError:
                return f"{where}: text is not valid UTF-8 (an unpaired surrogate)"
    elif isinstance(value, bool):
        return None
    elif isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            return f"{where}: integer is outside the 64-bit range"
    elif isinstance(value, dict):
        for key, inner in value.items():
            found = _unstorable(key, f"{where} (a key)") or _unstorable(inner, f"{where}.{key}")
            if found:
                return found
    elif isinstance(value, list | tuple):
        for i, inner in enumerate(value):
            found = _unstorable(inner, f"{where}.{i}")
            if found:
                return found
    return None  # nested models check themselves; SecretStr is the credential check's


class _Contract(BaseModel):
    """A federation payload: every string valid UTF-8 and every integer within 64 bits, also in
    free-form fields. JSON can carry ``"\\ud800"`` and ``2**64``; the database and orjson cannot,
    and a payload they refuse must be a 422 that names the field, not a 500."""

    @model_validator(mode="after")
    def _storable(self) -> Self:
        fields = {**self.__dict__, **(self.__pydantic_extra__ or {})}
        for name, value in fields.items():
            found = _unstorable(value, name)
            if found:
                raise PydanticCustomError("invalid_value", "{reason}", {"reason": found})
        return self


class FederationRole(StrEnum):
    STANDALONE = "standalone"
    HUB = "hub"
    SPOKE = "spoke"


class ClusterHealth(StrEnum):
    """Derived on the hub from the last heartbeat and what it reported."""

    PENDING = "pending"  # declared or holding a bootstrap token, never registered
    HEALTHY = "healthy"
    DEGRADED = "degraded"  # heartbeat late, or the spoke reports problems or failed policies
    OFFLINE = "offline"  # no heartbeat within the offline threshold (30 s by default)


class PolicyKind(StrEnum):
    TRACING_POLICY = "TracingPolicy"
    TRACING_POLICY_NAMESPACED = "TracingPolicyNamespaced"
    CILIUM_NETWORK_POLICY = "CiliumNetworkPolicy"
    CILIUM_CLUSTERWIDE_NETWORK_POLICY = "CiliumClusterwideNetworkPolicy"


NAMESPACED_KINDS = frozenset({PolicyKind.TRACING_POLICY_NAMESPACED, PolicyKind.CILIUM_NETWORK_POLICY})


# --------------------------------------------------------------------------- federated policies


class SelectorOperator(StrEnum):
    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


class LabelSelectorRequirement(_Contract):
    model_config = ConfigDict(frozen=True, extra="forbid")

    key: str = Field(min_length=1, max_length=317)
    operator: SelectorOperator
    values: tuple[str, ...] = ()


class LabelSelector(_Contract):
    """Kubernetes label-selector semantics: every ``match_labels`` pair and every expression must
    hold; an empty selector selects every cluster."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    match_labels: dict[str, str] = Field(default_factory=dict)
    match_expressions: tuple[LabelSelectorRequirement, ...] = ()


class Placement(_Contract):
    """Which clusters get a policy: ``excluded_clusters`` always wins; otherwise a cluster named in
    ``clusters`` or matched by ``cluster_selector``. Neither given: no cluster (a policy is never
    spread everywhere by omission — Karmada refuses empty selectors for the same reason)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    clusters: tuple[str, ...] = ()
    cluster_selector: LabelSelector | None = None
    excluded_clusters: tuple[str, ...] = ()


class PatchOp(_Contract):
    """One RFC 6902 operation on the rendered manifest (``add``, ``remove``, ``replace``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    op: Literal["add", "remove", "replace"]
    path: str = Field(pattern=r"^(/[^/]*)+$", description="JSON pointer, e.g. /spec/kprobes/0/selectors")
    value: Any = None


class Override(_Contract):
    model_config = ConfigDict(frozen=True, extra="forbid")

    cluster_name: str = Field(pattern=CLUSTER_NAME_PATTERN)
    disabled: bool = False
    patches: tuple[PatchOp, ...] = ()


class Rollout(_Contract):
    """How a new generation reaches the clusters it is placed on.

    ``all`` (the default): every placed cluster gets it at once. ``progressive``: at most
    ``max_concurrency`` clusters (a number, or a percentage of the placed clusters such as
    ``"25%"``, at least one) are updating at a time, the clusters named in ``order`` first (canaries),
    then the others by name; a cluster is done when it reports the generation applied (``proposed``
    too, for a policy that is not enforced) and has stayed so for ``min_success_time_s``. A cluster
    that reports ``failed``, or is not done within ``progress_deadline_s`` of its release, is a
    failure; more than ``max_failures`` of them halt the rollout, and the clusters not reached keep
    the generation they had. ``on_failure: rollback`` goes further: the clusters that got the failing
    generation get back the one they had before (or lose the policy, if they had none), and the
    rollout stays rolled back until a new generation or a resume. A new policy rolls out the same
    way; taking a cluster off the placement takes the policy away at once. (The shape of Open
    Cluster Management's progressive rollout strategy; the rollback is Flagger's and Argo Rollouts'
    abort.)"""

    model_config = ConfigDict(frozen=True, extra="forbid")

    strategy: Literal["all", "progressive"] = "all"
    max_concurrency: int | str = Field(
        default=1, description="Clusters updating at a time: a number >= 1 or a percentage such as '25%'."
    )
    min_success_time_s: int = Field(default=0, ge=0, le=7 * 86400)
    progress_deadline_s: int | None = Field(default=None, ge=1, le=7 * 86400)
    max_failures: int = Field(default=0, ge=0)
    order: tuple[str, ...] = Field(default=(), description="Clusters to update first, in this order.")
    on_failure: Literal["halt", "rollback"] = Field(
        default="halt",
        description="Past max_failures: stop where it is, or give the clusters reached their "
        "previous generation back.",
    )

    @field_validator("max_concurrency")
    @classmethod
    def _concurrency(cls, value: int | str) -> int | str:
        if isinstance(value, int):
            if value < 1:
                raise ValueError("max_concurrency must be at least 1")
            return value
        text = value.strip()
        number = text.removesuffix("%")
        if text == number or not number.isdigit() or not 1 <= int(number) <= 100:
            raise ValueError("max_concurrency must be a number >= 1 or a percentage from '1%' to '100%'")
        return f"{int(number)}%"

    def concurrency(self, placed: int) -> int:
        """Clusters that may update at once out of ``placed`` (at least one)."""
        if isinstance(self.max_concurrency, int):
            return self.max_concurrency
        return max(1, placed * int(self.max_concurrency[:-1]) // 100)


class FederatedPolicySpec(_Contract):
    """A federated policy as the REST API and the CRD controller hand it to the hub.

    ``template`` is a whole manifest of one of :class:`PolicyKind` (apiVersion, kind, metadata with
    name and, for namespaced kinds, namespace; spec). ``enforce``: spokes apply it at once
    (approved on arrival) instead of proposing it for local approval."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    template: dict[str, Any]
    placement: Placement
    overrides: tuple[Override, ...] = ()
    enforce: bool = False
    description: str = Field(default="", max_length=2000)
    rollout: Rollout | None = None


class PlacedPolicy(_Contract):
    """One federated policy as rendered for one cluster (overrides applied, labels added)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    policy_id: str
    name: str
    generation: int = Field(ge=1)
    content_hash: str = Field(description="sha256 hex of the rendered manifest (canonical JSON).")
    enforce: bool
    manifest: dict[str, Any]


class PlacedPolicySet(_Contract):
    """Everything placed on one cluster; ``etag`` changes exactly when the set does."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cluster: str
    etag: str
    policies: tuple[PlacedPolicy, ...]


SEQUENCE_DESCRIPTION = (
    "The spoke's number for the placed set this message came from (one more for every set it "
    "applies): of two messages about one policy, the higher is the newer, whichever is handled "
    "first. Absent from spokes older than it."
)


class PolicyPlaced(PlacedPolicy):
    """Stream payload on a spoke (``federation.policy_placed``): create or update this policy."""

    cluster: str
    sequence: int | None = Field(default=None, ge=1, description=SEQUENCE_DESCRIPTION)


class PolicyRemoved(_Contract):
    """Stream payload on a spoke (``federation.policy_removed``): the policy left this cluster's
    placement (deleted on the hub, placement changed, or disabled by an override)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    policy_id: str
    name: str
    cluster: str
    api_version: str
    kind: str
    namespace: str | None
    manifest_name: str
    sequence: int | None = Field(default=None, ge=1, description=SEQUENCE_DESCRIPTION)


class PolicyApplyState(StrEnum):
    PENDING = "pending"  # placed; the spoke's response service has not taken it yet
    PROPOSED = "proposed"  # waiting for approval on the spoke
    APPROVED = "approved"  # approved; written as a file (no cluster configured) or being applied
    APPLIED = "applied"
    FAILED = "failed"  # refused by validation or by the cluster; ``message`` says why
    REVOKED = "revoked"


class PolicyApplyStatus(_Contract):
    model_config = ConfigDict(frozen=True, extra="forbid")

    policy_id: str
    generation: int = Field(ge=1)
    content_hash: str
    state: PolicyApplyState
    message: str | None = Field(default=None, max_length=2000)
    observed_at: AwareDatetime


class StatusReport(_Contract):
    """``POST /federation/v1/status``: changes since the last report (also carried by heartbeats)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    policies: tuple[PolicyApplyStatus, ...] = Field(max_length=10_000)


# --------------------------------------------------------------------------- registration, heartbeat


class RegisterRequest(_Contract):
    model_config = ConfigDict(frozen=True, extra="forbid")

    cluster_name: str = Field(pattern=CLUSTER_NAME_PATTERN)
    bootstrap_token: SecretStr
    labels: dict[str, str] = Field(default_factory=dict)
    version: str = Field(default="", max_length=64)
    kubernetes_version: str | None = Field(default=None, max_length=64)

    # the wire needs the value (JSON dumps); repr and str still mask it, so logs never show it
    @field_serializer("bootstrap_token", when_used="json")
    def _reveal(self, value: SecretStr) -> str:
        return value.get_secret_value()


class RegisterResponse(_Contract):
    model_config = ConfigDict(frozen=True, extra="forbid")

    cluster_id: str
    cluster_name: str
    credential_id: str
    # the only time the hub shows it: it keeps a hash
    credential: SecretStr
    heartbeat_interval_s: float

    @field_serializer("credential", when_used="json")
    def _reveal(self, value: SecretStr) -> str:
        return value.get_secret_value()


class PendingAction(_Contract):
    """A response action on the spoke waiting for approval (from its ``/v1/actions``)."""

    model_config = ConfigDict(frozen=True, extra="allow")

    action_id: str
    action: str
    state: str
    target: dict[str, Any] = Field(default_factory=dict)
    finding_id: str | None = None
    requested_at: AwareDatetime | None = None
    lease_expires_at: AwareDatetime | None = None


class ClusterHeartbeat(_Contract):
    model_config = ConfigDict(frozen=True, extra="forbid")

    sent_at: AwareDatetime
    version: str = Field(default="", max_length=64)
    kubernetes_version: str | None = Field(default=None, max_length=64)
    node_count: Count | None = None
    pod_count: Count | None = None
    counts: dict[str, Count] = Field(
        default_factory=dict, description="events_forwarded, findings_forwarded, ..."
    )
    # full per-policy status of what the spoke holds (the hub replaces its copy)
    policies: tuple[PolicyApplyStatus, ...] = Field(default=(), max_length=10_000)
    # response actions waiting for approval, and active leases, on the spoke
    actions: tuple[PendingAction, ...] = Field(default=(), max_length=1000)
    # what the spoke itself finds wrong ("hub unreachable for 40 s", "response API 503", ...)
    problems: tuple[str, ...] = Field(default=(), max_length=50)


class HeartbeatAck(_Contract):
    model_config = ConfigDict(frozen=True, extra="forbid")

    health: ClusterHealth
    heartbeat_interval_s: float
    policies_etag: str
    commands_pending: int
    # the hub asks the spoke to rotate its credential (POST /federation/v1/credentials/rotate)
    rotate_credential: bool = False


# --------------------------------------------------------------------------- forwarding, baselines


class ForwardKind(StrEnum):
    EVENTS = "events"  # SecurityEvent payloads: the hub's analysis correlates them
    FINDINGS = "findings"  # Finding payloads: kept on the hub for the console


class ForwardBatch(BaseModel):
    """``POST /federation/v1/forward``: at-least-once; the hub keeps each item once (by its id).
    Not a ``_Contract``: the hub checks each item alone and rejects only the bad ones."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: ForwardKind
    items: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_FORWARD_ITEMS)


class Rejected(_Contract):
    model_config = ConfigDict(frozen=True, extra="forbid")

    index: int
    reason: str


class ForwardAck(_Contract):
    model_config = ConfigDict(frozen=True, extra="forbid")

    accepted: int
    duplicates: int
    rejected: tuple[Rejected, ...] = ()


class SharedBaseline(_Contract):
    """A ready behavioural profile of one image, shared through the hub (payload of
    ``federation.baseline_shared`` on a spoke too). ``data`` is the profile's JSON as analysis
    stores it (``qcdr_analysis.profiles.profile.Profile.to_json``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    profile_key: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    source_cluster: str
    generation: int = Field(ge=0)
    ready_at: AwareDatetime | None = None
    data: dict[str, Any]
    shared_at: AwareDatetime | None = None


class BaselineUpload(_Contract):
    """``POST /federation/v1/baselines``: ready profiles the spoke learned."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    baselines: list[SharedBaseline] = Field(min_length=1, max_length=500)


# --------------------------------------------------------------------------- commands (hub → spoke)


class CommandKind(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"
    UNDO = "undo"
    RENEW = "renew"


class SpokeCommand(_Contract):
    """Something a hub user asked a spoke to do to one of its response actions."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    kind: CommandKind
    action_id: str
    reason: str | None = Field(default=None, max_length=2000)
    requested_by: str
    created_at: AwareDatetime
    # renew only: the new lease in seconds (None: the action's own lease again)
    lease_s: int | None = Field(default=None, ge=1)


class CommandResult(_Contract):
    """What the spoke's response API answered (status and body, passed back to the hub caller)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    status_code: int = Field(ge=100, le=599)
    body: Any = None
