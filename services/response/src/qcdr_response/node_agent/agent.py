"""The node agent's handler: one ``ActionRequest`` in, one ``ActionResult`` out, exactly once.

Per request a Redis key (``response:node-intent:<node>:<action id>:<op>:<attempt>``, 7 days)
holds first the *intent* (written before acting) and then the *result*. A request whose key
holds a result is answered by publishing that result again (the same envelope, so consumers
deduplicate it) and nothing else. A request whose key holds only an intent was being acted on
when the agent died: the action's ``present()`` decides — the effect is in place (``recovered``,
"done (recovered)"), the target is gone (``skipped``, "skipped: target gone"), or neither, and
it runs again. The result is stored in the key, then published on ``response:action-results``;
the consumer acknowledges the request after that.

Whatever is wrong with a request (unknown action, wrong scope, another node, invalid target or
parameters) becomes a ``failed`` result with the reason; it never raises into a retry loop.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import docker.errors
import orjson
from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from qcdr_common.contracts.actions.v1 import (
    ACTION_COMPLETED,
    ACTION_NAME_PATTERN,
    ACTION_REQUESTED,
    ActionOp,
    ActionOutcome,
    ActionRequest,
    ActionResult,
    ActionTarget,
)
from qcdr_common.logging import get_logger
from qcdr_common.registry import Registry
from qcdr_common.streams.consumer import Delivery
from qcdr_common.streams.envelope import Envelope, new_envelope
from qcdr_common.streams.names import stream_key
from qcdr_common.streams.producer import publish
from redis.asyncio import Redis

from qcdr_response.actions import validation
from qcdr_response.actions.base import Action, ActionError, Done, Scope, TargetGoneError, rebuild_undo
from qcdr_response.actions.node._context import NodeContext
from qcdr_response.actions.registry import load_actions
from qcdr_response.node_agent import streams

log = get_logger(__name__)

ACTIONS_TOTAL = Counter(
    "qcdr_node_agent_actions_total",
    "Node action requests the agent finished, by outcome.",
    ["action", "outcome"],
)
RECOVERED_MESSAGE = "done (recovered)"
GONE_MESSAGE = "skipped: target gone"


class NodeAgent:
    def __init__(
        self,
        redis: Redis,
        ctx: NodeContext,
        *,
        prefix: str,
        cluster_id: str,
        maxlen: int = 1_000_000,
        intent_ttl_s: int = streams.INTENT_TTL_S,
        actions: Registry[Action[Any]] | None = None,
    ) -> None:
        self.redis = redis
        self.ctx = ctx
        self.prefix = prefix
        self.cluster_id = cluster_id
        self.maxlen = maxlen
        self.intent_ttl_s = intent_ttl_s
        self.actions = actions if actions is not None else load_actions()
        self.results_key = stream_key(prefix, streams.ACTION_RESULTS)

    @property
    def stream(self) -> str:
        return streams.node_actions_stream(self.ctx.node)

    async def __call__(self, deliveries: list[Delivery]) -> None:
        """The consumer's batch handler: one request after the other."""
        for delivery in deliveries:
            await self.handle(delivery.envelope)

    async def handle(self, envelope: Envelope) -> ActionResult | None:
        if envelope.type != ACTION_REQUESTED:
            log.warning("not an action request, ignored", envelope_type=envelope.type)
            return None
        refused: Done | None
        try:
            request = envelope.payload_as(ActionRequest)
            refused = self._refusal(request)
        except ValidationError as exc:
            identified = _identify(envelope, exc)
            if identified is None:
                return None
            request, refused = identified
        key = stream_key(
            self.prefix,
            streams.intent_name(self.ctx.node, request.action_id, request.op.value, request.attempt),
        )
        state = await self._intent(key)
        if state is not None and state.get("state") == "done":
            stored = Envelope.model_validate(state["envelope"])
            await self._publish(stored)  # the same envelope id: a duplicate its consumers drop
            log.info("request already done, result published again", action_id=request.action_id)
            return stored.payload_as(ActionResult)
        if refused is not None:
            return await self._finish(envelope, request, key, refused)
        action = self.actions.get(request.action)
        done: Done | None = None
        if state is not None and not request.dry_run:
            done = await self._recover(action, request)
        if done is None:
            done = await self._act(action, request)
        return await self._finish(envelope, request, key, done)

    def _refusal(self, request: ActionRequest) -> Done | None:
        """Why this agent will not carry out ``request`` (a failed result), or ``None``."""
        if request.action not in self.actions:
            return _failed(f"unknown action {request.action!r}")
        action = self.actions.get(request.action)
        if action.scope is not Scope.NODE:
            return _failed(f"{request.action} is a {action.scope.value} action, not a node action")
        if request.target.node is not None and request.target.node != self.ctx.node:
            return _failed(f"target node {request.target.node} is not this node ({self.ctx.node})")
        if request.op is ActionOp.UNDO and not action.reversible:
            return _failed(f"{request.action} cannot be undone")
        try:
            validation.target_fields(request.target)
            action.check(request.target, action.parse_params(request.parameters))
        except ActionError as exc:
            return _failed(exc.reason)
        return None

    async def _intent(self, key: str) -> dict[str, Any] | None:
        """The key's state; when absent, record the intent (and return ``None``)."""
        intent = orjson.dumps({"state": "intent", "node": self.ctx.node, "at": datetime.now(UTC).isoformat()})
        if await self.redis.set(key, intent, nx=True, ex=self.intent_ttl_s):
            return None
        raw = await self.redis.get(key)
        state: dict[str, Any] = orjson.loads(raw) if raw else {"state": "intent"}
        return state

    async def _recover(self, action: Action[Any], request: ActionRequest) -> Done | None:
        """An intent without a result: a crash in between. Is the effect already there?"""
        try:
            present = await action.present(self.ctx, request)
        except TargetGoneError as exc:
            log.info("recovery: target gone", action_id=request.action_id, reason=exc.reason)
            return Done(ActionOutcome.SKIPPED, GONE_MESSAGE, {"reason": exc.reason, "recovered": True})
        except Exception as exc:  # recovery could not tell: act again (the action re-checks all)
            log.warning("recovery check failed, acting again", action_id=request.action_id, error=repr(exc))
            return None
        if present:
            log.info("recovery: effect in place", action_id=request.action_id)
            undo = await rebuild_undo(action, self.ctx, request)
            return Done(ActionOutcome.RECOVERED, RECOVERED_MESSAGE, {"recovered": True}, undo)
        return None

    async def _act(self, action: Action[Any], request: ActionRequest) -> Done:
        try:
            if request.op is ActionOp.UNDO:
                return await action.undo(self.ctx, request)
            return await action.execute(self.ctx, request)
        except TargetGoneError as exc:
            return Done(ActionOutcome.SKIPPED, exc.reason)
        except ActionError as exc:
            return _failed(exc.reason)
        except docker.errors.DockerException as exc:
            log.warning("docker error", action_id=request.action_id, error=str(exc))
            return _failed(f"docker: {exc}")
        except Exception as exc:
            log.exception("action raised", action_id=request.action_id)
            return _failed(f"internal error: {type(exc).__name__}: {exc}")

    async def _finish(self, cause: Envelope, request: ActionRequest, key: str, done: Done) -> ActionResult:
        # the effect has happened: whatever text the action reported, the result is published
        message, details, undo = (_jsonable(v) for v in (done.message, done.details, done.undo))
        result = ActionResult(
            action_id=request.action_id,
            op=request.op,
            action=request.action,
            attempt=request.attempt,
            outcome=done.outcome,
            message=message[:4000],
            details=details,
            undo=undo,
            executor=self.ctx.node,
            finished_at=datetime.now(UTC),
        )
        envelope = self._envelope(result, cause)
        stored = orjson.dumps({"state": "done", "envelope": envelope.model_dump(mode="json")})
        await self.redis.set(key, stored, ex=self.intent_ttl_s)
        await self._publish(envelope)
        label = request.action if request.action in self.actions else "unknown"
        ACTIONS_TOTAL.labels(action=label, outcome=result.outcome.value).inc()
        log.info(
            "action finished",
            action=request.action,
            action_id=request.action_id,
            op=request.op.value,
            outcome=result.outcome.value,
            message=result.message,
        )
        return result

    def _envelope(self, result: ActionResult, cause: Envelope) -> Envelope:
        return new_envelope(
            ACTION_COMPLETED,
            result,
            source=streams.SOURCE,
            cluster_id=self.cluster_id,
            occurred_at=result.finished_at,
            correlation_id=cause.correlation_id,
            causation_id=cause.id,
        )

    async def _publish(self, envelope: Envelope) -> None:
        await publish(self.redis, self.results_key, [envelope], self.maxlen)


class _Ident(BaseModel):
    """What identifies a request, read from a payload that failed validation as a whole."""

    model_config = ConfigDict(extra="ignore")

    action_id: int = Field(ge=1)
    op: ActionOp = ActionOp.EXECUTE
    action: str = Field(pattern=ACTION_NAME_PATTERN)
    attempt: int = Field(default=1, ge=1)


def _identify(envelope: Envelope, exc: ValidationError) -> tuple[ActionRequest, Done] | None:
    """A payload that is not a valid ``ActionRequest``: a stand-in request and a failed result
    when it can be identified at all, else ``None`` (logged and dropped: it can never succeed)."""
    reason = "invalid request: " + "; ".join(
        f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5]
    )
    try:
        ident = _Ident.model_validate(envelope.payload)
    except ValidationError:
        log.error("unidentifiable action request dropped", envelope_id=envelope.id, reason=reason)
        return None
    request = ActionRequest(
        action_id=ident.action_id,
        op=ident.op,
        action=ident.action,
        attempt=ident.attempt,
        target=ActionTarget(),
        requested_at=envelope.occurred_at,
    )
    return request, _failed(reason)


def _failed(reason: str) -> Done:
    return Done(ActionOutcome.FAILED, reason)


def _jsonable(value: Any) -> Any:
    """``value`` as JSON gives it back: types orjson does not know as their ``str()``, and text
    that is not valid UTF-8 (a surrogate escape: a file or process name that is not UTF-8) with
    those characters as ``\\xNN``, so that it can always be stored and published."""
    try:
        return orjson.loads(orjson.dumps(value, default=str))
    except orjson.JSONEncodeError as exc:
        log.warning("result made JSON-safe", error=str(exc))
        return orjson.loads(orjson.dumps(_utf8(value), default=lambda v: _utf8(str(v))))


def _utf8(value: Any) -> Any:
    if isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError:
            try:
                raw = value.encode("utf-8", "surrogateescape")
            except UnicodeEncodeError:
                raw = value.encode("utf-8", "backslashreplace")
            return raw.decode("utf-8", "backslashreplace")
        return value
    if isinstance(value, dict):
        return {_utf8(str(k)): _utf8(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_utf8(v) for v in value]
    return value
