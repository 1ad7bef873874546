"""Streams and keys of the node agent (names without the configurable key prefix). The stream
names are the response service's (``qcdr_response.streams``), defined there once."""

from __future__ import annotations

# Requests for one node's agent (ACTION_REQUESTED) and the results it sends back (ACTION_COMPLETED)
from qcdr_response.streams import ACTION_RESULTS, NODE_ACTIONS_PREFIX, node_actions_stream

GROUP = "node-agent"
SOURCE = "node-agent"
# One key per request (action id, op, attempt): the intent before acting, the result after.
INTENT_PREFIX = "response:node-intent:"
INTENT_TTL_S = 7 * 24 * 3600


def intent_name(node: str, action_id: int, op: str, attempt: int) -> str:
    return f"{INTENT_PREFIX}{node}:{action_id}:{op}:{attempt}"


__all__ = ["ACTION_RESULTS", "NODE_ACTIONS_PREFIX", "node_actions_stream"]
CONSUMES = (f"{NODE_ACTIONS_PREFIX}<node>",)
PRODUCES = (ACTION_RESULTS,)
