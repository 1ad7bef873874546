"""Reconciling federation objects into the hub, through the same service functions the REST API
uses. Each reconcile is one database transaction, committed here (the controller is an edge, like
a route); placements are announced after the commit so waiting spokes hear of it.

Ownership: the hub rows a controller makes carry source ``crd``. A deleted object, and the
garbage collection after each full list, remove only such rows — a cluster or policy made through
the API is never touched, and an object whose name an API-made cluster or policy already holds
reports ``ClusterConflict`` or ``PolicyConflict`` instead of overwriting it. The two policy kinds
share the hub's policy names, so a FederatedTracingPolicy and a FederatedNetworkPolicy of the same
name conflict too.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Awaitable, Callable, Collection, Mapping
from datetime import datetime, timedelta
from typing import Any, Protocol

from lightkube import ApiError, AsyncClient
from lightkube.resources.core_v1 import Secret
from qcdr_common.logging import get_logger
from sqlalchemy import select, true
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from qcdr_federation.hub.clusters.models import BootstrapTokenRow, ClusterRow
from qcdr_federation.hub.clusters.service import (
    declare_cluster,
    get_cluster,
    register_bootstrap_digest,
    remove_cluster,
    revoke_bootstrap_token,
)
from qcdr_federation.hub.controller import status as st
from qcdr_federation.hub.controller.convert import (
    ClusterDeclaration,
    ConversionError,
    cluster_declaration,
    crd_path,
    object_generation,
    object_name,
    policy_spec,
    policy_suspended,
)
from qcdr_federation.hub.controller.kinds import SOURCE, CrdKind, crd_kind_of
from qcdr_federation.hub.policies import rollout
from qcdr_federation.hub.policies.issues import PolicySpecError
from qcdr_federation.hub.policies.models import FederatedPolicyRow
from qcdr_federation.hub.policies.service import apply_spec, delete_by_name
from qcdr_federation.settings import FederationSettings

log = get_logger(__name__)

# a bootstrap token anyone could guess is no better than none (API-made ones are 43+ characters)
MIN_TOKEN_LENGTH = 32

Notify = Callable[[], Awaitable[None]]
_FIXED_IN_THE_SECRET = frozenset(
    {
        st.REASON_SECRET_NOT_FOUND,
        st.REASON_SECRET_FORBIDDEN,
        st.REASON_SECRET_KEY_MISSING,
        st.REASON_INVALID_TOKEN,
    }
)


class SecretUnavailableError(Exception):
    """The bootstrap token cannot be read: ``reason`` and ``message`` go into a condition."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class SecretReader(Protocol):
    async def read(self, namespace: str, name: str, key: str) -> str:
        """The value under ``key`` of Secret ``namespace/name``; SecretUnavailableError when there is none."""
        ...


class KubeSecretReader:
    """Reads bootstrap-token Secrets through lightkube (``get`` of one named Secret: no list/watch)."""

    def __init__(self, client: AsyncClient) -> None:
        self.client = client

    async def read(self, namespace: str, name: str, key: str) -> str:
        where = f"Secret {namespace}/{name}"
        try:
            secret = await self.client.get(Secret, name, namespace=namespace)
        except ApiError as exc:
            code = getattr(exc.status, "code", None)
            if code == 404:
                raise SecretUnavailableError(st.REASON_SECRET_NOT_FOUND, f"{where} does not exist") from None
            if code == 403:
                raise SecretUnavailableError(
                    st.REASON_SECRET_FORBIDDEN,
                    f"the controller may not read {where}: grant get on it "
                    "(k8s/samples/bootstrap-secrets-rbac.yaml)",
                ) from None
            raise
        data = secret.data or {}
        if key not in data:
            raise SecretUnavailableError(st.REASON_SECRET_KEY_MISSING, f"{where} has no key {key!r}")
        try:
            return base64.b64decode(data[key], validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise SecretUnavailableError(
                st.REASON_INVALID_TOKEN, f"{where} key {key!r} is not UTF-8 text"
            ) from None


def token_digest(token: str) -> bytes:
    """What the hub stores of a bootstrap token (the spoke's ``register`` hashes the same way)."""
    return hashlib.sha256(token.encode()).digest()


def _cluster_conflict(row: ClusterRow) -> str | None:
    """Why a ``FederatedCluster`` may not manage this hub cluster (None: it may)."""
    if row.source != SOURCE:
        return (
            f"the hub already has a cluster named {row.name!r} declared through the {row.source} "
            f"(id {row.id}); rename this object or remove that cluster"
        )
    return None


def _policy_conflict(row: FederatedPolicyRow, kind: CrdKind) -> str | None:
    """Why the object ``kind``/``row.name`` may not manage this hub policy (None: it may)."""
    if row.source != SOURCE:
        return (
            f"the hub already has a policy named {row.name!r} made through the {row.source} "
            f"(id {row.id}); rename this object or delete that policy"
        )
    owner = crd_kind_of(row.kind)
    if owner is not kind:
        return (
            f"a {owner.value if owner else row.kind} named {row.name!r} already holds the hub "
            f"policy {row.id}; the two kinds share policy names, rename one of them"
        )
    return None


class Reconciler:
    """Turns objects into hub state; the outcomes say what to write back as status."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        settings: FederationSettings,
        secrets: SecretReader,
        *,
        notify: Notify | None = None,
    ) -> None:
        self.sessions = sessions
        self.settings = settings
        self.secrets = secrets
        self.notify = notify

    async def _announce(self) -> None:
        if self.notify is not None:
            await self.notify()

    # ------------------------------------------------------------------ clusters

    async def reconcile_cluster(self, obj: Mapping[str, Any]) -> st.Outcome:
        generation = object_generation(obj)
        try:
            decl = cluster_declaration(obj)
        except ConversionError as exc:
            return st.Outcome(generation, ok=False, reason=st.REASON_VALIDATION_FAILED, message=str(exc))
        token, registration = await self._bootstrap_token(decl)
        async with self.sessions() as session:
            before = await get_cluster(session, decl.name)
            conflict = _cluster_conflict(before) if before is not None else None
            if conflict is not None:
                # its labels and tokens stay as the API set them
                return st.Outcome(generation, ok=False, reason=st.REASON_CLUSTER_CONFLICT, message=conflict)
            # placements move only when a cluster appears or its labels change
            changed = before is None or dict(before.labels) != decl.labels
            await declare_cluster(session, decl.name, decl.labels, source=SOURCE)
            if decl.paused:
                await self._revoke_pending_tokens(session, decl.name)
            elif token is not None:
                digest = token_digest(token)
                await register_bootstrap_digest(
                    session,
                    decl.name,
                    digest,
                    source=SOURCE,
                    created_by=f"crd:{decl.name}",
                    expires_at=None,
                )
                registration = await self._token_state(session, decl, digest)
            await session.commit()
        if changed:
            await self._announce()
        # what the operator fixes by editing the Secret is looked at again soon (Secrets are not
        # watched: the controller may only get the ones it is told about)
        retry = registration is not None and registration[0] in _FIXED_IN_THE_SECRET
        return st.Outcome(generation, ok=True, registration=registration, retry=retry)

    async def _bootstrap_token(self, decl: ClusterDeclaration) -> tuple[str | None, tuple[str, str] | None]:
        """(token, why not registered yet) — the Secret is read before the transaction."""
        if decl.paused:
            return None, (st.REASON_PAUSED, "spec.paused is set: no new registration")
        ref = decl.secret_ref
        if ref is None:
            return (
                None,
                (
                    st.REASON_AWAITING_REGISTRATION,
                    "no spec.bootstrapTokenSecretRef: make a token with "
                    f"POST /v1/clusters/{decl.name}/bootstrap-tokens, or name a Secret",
                ),
            )
        namespace = ref.namespace or self.settings.controller_namespace
        try:
            raw = await self.secrets.read(namespace, ref.name, ref.key)
        except SecretUnavailableError as problem:
            return None, (problem.reason, problem.message)
        token = raw.strip()  # `kubectl create secret --from-file` keeps the file's newline
        if len(token) < MIN_TOKEN_LENGTH:
            return (
                None,
                (
                    st.REASON_INVALID_TOKEN,
                    f"the token in Secret {namespace}/{ref.name} key {ref.key!r} is shorter than "
                    f"{MIN_TOKEN_LENGTH} characters (e.g. openssl rand -hex 32)",
                ),
            )
        return token, None

    async def _token_state(
        self, session: AsyncSession, decl: ClusterDeclaration, digest: bytes
    ) -> tuple[str, str] | None:
        """Why the Secret's token will not register the cluster, or that it waits for the spoke."""
        row = (
            await session.scalars(select(BootstrapTokenRow).where(BootstrapTokenRow.sha256 == digest))
        ).one_or_none()
        ref = decl.secret_ref
        namespace = (ref.namespace if ref else None) or self.settings.controller_namespace
        where = f"Secret {namespace}/{ref.name}" if ref else "the Secret"
        if row is None:  # cannot happen after register_bootstrap_digest; stay truthful if it does
            return st.REASON_AWAITING_REGISTRATION, f"the token in {where} is not registered yet"
        if row.cluster_name != decl.name:
            return (
                st.REASON_INVALID_TOKEN,
                f"the token in {where} is already registered for cluster {row.cluster_name!r}: "
                "every cluster needs a token of its own",
            )
        if row.revoked_at is not None:
            return (
                st.REASON_INVALID_TOKEN,
                f"the token in {where} was revoked (the cluster was paused or removed): "
                "put a new token in the Secret",
            )
        if row.used_at is not None:
            cluster = await get_cluster(session, decl.name)
            if cluster is not None and cluster.registered_at is not None:
                return None
            return (
                st.REASON_INVALID_TOKEN,
                f"the token in {where} was used already: put a new token in the Secret to register again",
            )
        return (
            st.REASON_AWAITING_REGISTRATION,
            f"the token in {where} is registered; waiting for the spoke to present it",
        )

    async def _revoke_pending_tokens(self, session: AsyncSession, name: str) -> None:
        """Paused: the Secret's tokens registered earlier and not used yet stop working too."""
        pending = await session.scalars(
            select(BootstrapTokenRow.id).where(
                BootstrapTokenRow.cluster_name == name,
                BootstrapTokenRow.source == SOURCE,
                BootstrapTokenRow.used_at.is_(None),
                BootstrapTokenRow.revoked_at.is_(None),
            )
        )
        for token_id in pending.all():
            await revoke_bootstrap_token(session, name, token_id)

    async def cluster_deleted(self, name: str) -> bool:
        """Remove the hub's cluster of that name if an object made it; True when removed."""
        async with self.sessions() as session:
            row = await get_cluster(session, name)
            if row is None or row.source != SOURCE:
                return False
            removed = await remove_cluster(session, name)
            await session.commit()
        if removed:
            log.info("federation_controller_cluster_removed", cluster=name)
            await self._announce()
        return removed

    # ------------------------------------------------------------------ policies

    async def reconcile_policy(self, kind: CrdKind, obj: Mapping[str, Any]) -> st.Outcome:
        generation = object_generation(obj)
        name = object_name(obj)
        async with self.sessions() as session:
            existing = await self._live_policy(session, name)
            conflict = _policy_conflict(existing, kind) if existing is not None else None
            if conflict is not None:
                return st.Outcome(generation, ok=False, reason=st.REASON_POLICY_CONFLICT, message=conflict)
            # plain values: a rollback expires the row
            kept = (existing.id, existing.generation, existing.content_hash) if existing is not None else None
            try:
                spec = policy_spec(kind, obj)
                suspend = policy_suspended(obj)
                # the object says whether the policy is suspended (an API suspend does not outlive
                # it). Suspending comes before the new spec, so clusters keep the generation they
                # have; a policy created suspended reaches nobody; resuming comes after.
                was_suspended = existing is not None and existing.suspended_at is not None
                if suspend and existing is not None and not was_suspended:
                    await rollout.suspend(session, existing.id, SOURCE)
                row = await apply_spec(session, name, spec, source=SOURCE, actor=SOURCE)
                if suspend and existing is None:
                    await rollout.suspend(session, row.id, SOURCE, keep_current=False)
                elif not suspend and was_suspended:
                    await rollout.resume(session, row.id, SOURCE)
            except ConversionError as exc:
                return _invalid(generation, str(exc), kept)
            except PolicySpecError as exc:
                await session.rollback()
                return _invalid(generation, _describe_issues(exc), kept)
            policy_id = row.id
            changed = kept is None or kept[2] != row.content_hash or suspend != was_suspended
            await session.commit()
        if changed:
            await self._announce()
        return st.Outcome(generation, ok=True, policy_id=policy_id)

    async def policy_deleted(self, kind: CrdKind, name: str) -> bool:
        async with self.sessions() as session:
            existing = await self._live_policy(session, name)
            if existing is None or _policy_conflict(existing, kind) is not None:
                return False
            deleted = await delete_by_name(session, name)
            await session.commit()
        if deleted:
            log.info("federation_controller_policy_deleted", kind=kind.value, name=name)
            await self._announce()
        return deleted

    @staticmethod
    async def _live_policy(session: AsyncSession, name: str) -> FederatedPolicyRow | None:
        return (
            await session.scalars(
                select(FederatedPolicyRow).where(
                    FederatedPolicyRow.name == name, FederatedPolicyRow.deleted_at.is_(None)
                )
            )
        ).one_or_none()

    # ------------------------------------------------------------------ garbage

    async def collect_garbage(
        self, kind: CrdKind, live: Collection[str], listed_at: datetime | None = None
    ) -> list[str]:
        """Remove the hub rows this controller made for objects of ``kind`` that no longer exist
        (deleted while the controller was not watching); returns their names.

        ``live`` is a list taken at ``listed_at``: rows made after that (less
        ``controller_gc_skew_s``, for replicas whose clocks differ from the database's) are kept,
        since another hub replica's watch may have made them for an object created after the
        list; the next full list collects them if their object is gone."""
        names = set(live)
        skew = timedelta(seconds=self.settings.controller_gc_skew_s)
        cutoff = None if listed_at is None else listed_at - skew
        async with self.sessions() as session:
            if kind is CrdKind.CLUSTER:
                rows = await session.scalars(
                    select(ClusterRow.name).where(
                        ClusterRow.source == SOURCE,
                        ClusterRow.removed_at.is_(None),
                        true() if cutoff is None else ClusterRow.created_at < cutoff,
                    )
                )
                gone = sorted(set(rows.all()) - names)
                for name in gone:
                    await remove_cluster(session, name)
            else:
                result = await session.execute(
                    select(FederatedPolicyRow.name, FederatedPolicyRow.kind).where(
                        FederatedPolicyRow.source == SOURCE,
                        FederatedPolicyRow.deleted_at.is_(None),
                        true() if cutoff is None else FederatedPolicyRow.created_at < cutoff,
                    )
                )
                gone = sorted(n for n, k in result.all() if crd_kind_of(k) is kind and n not in names)
                for name in gone:
                    await delete_by_name(session, name)
            await session.commit()
        if gone:
            log.info("federation_controller_garbage_collected", kind=kind.value, names=gone)
            await self._announce()
        return gone


def _invalid(generation: int, message: str, kept: tuple[str, int, str] | None) -> st.Outcome:
    """A spec the hub refuses: the hub keeps the policy's last good generation, if there is one."""
    if kept is not None:
        message += f" (the hub keeps generation {kept[1]})"
    return st.Outcome(
        generation,
        ok=False,
        reason=st.REASON_VALIDATION_FAILED,
        message=message,
        policy_id=kept[0] if kept is not None else None,
    )


def _describe_issues(exc: PolicySpecError) -> str:
    """The hub's issues as CRD paths: ``spec.template.metadata.name: ...``."""
    parts = [f"{crd_path('spec', issue.loc)}: {issue.msg}" for issue in exc.issues[:5]]
    if len(exc.issues) > 5:
        parts.append(f"and {len(exc.issues) - 5} more")
    return "; ".join(parts)
