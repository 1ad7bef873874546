"""Structured logging (structlog): JSON lines in services, readable lines on a terminal.

Secrets never reach a log line: values of keys that look secret are replaced, and URLs have their
user-info and query strings (webhook tokens live there) cut.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog
from structlog.contextvars import bound_contextvars

# ``with log_context(correlation_id=...):`` adds the values to every log line inside, across awaits
# (contextvars); the stream consumer binds correlation_id, envelope_id and envelope_type this way.
log_context = bound_contextvars

# key names whose values are secret whatever they look like; "webhook" because a Slack or Teams
# webhook URL carries its secret in the path, which redact_url keeps
_SECRET_KEY = re.compile(
    r"(pass(word)?|secret|token|api[_-]?key|authorization|cookie|dsn|routing[_-]?key|credential(?!_id)"
    r"|webhook|private[_-]?key)",
    re.I,
)
# User-info runs to the last "@" before any query or fragment: passwords hold "/" (base64 from
# openssl rand) and even "@", which SQLAlchemy and redis-py take as they are. A path that holds an
# "@" is masked too; a secret shown is worse than a path hidden.
_URL_USERINFO = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)[^\s?#]*@", re.I)
_URL_QUERY = re.compile(r"(?P<base>[a-z][a-z0-9+.-]*://[^\s?]+)\?\S*", re.I)
REDACTED = "***"


def redact_url(url: str) -> str:
    """Drop credentials and the query string of a URL (some webhooks carry their secret there;
    Slack's and Teams' carry it in the path, so values under a ``webhook`` key are masked whole)."""
    url = _URL_USERINFO.sub(r"\g<scheme>***@", url)
    return _URL_QUERY.sub(r"\g<base>?***", url)


def _redact(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in list(event_dict.items()):
        if key != "event" and _SECRET_KEY.search(key):
            event_dict[key] = REDACTED
        elif isinstance(value, str) and "://" in value:
            event_dict[key] = redact_url(value)
    return event_dict


LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def log_level(value: str) -> str:
    """``value`` as one of :data:`LEVELS` (any case); ValueError naming them otherwise."""
    level = value.strip().upper()
    if level not in LEVELS:
        raise ValueError(f"unknown log level {value.strip()[:20]!r}: use one of {', '.join(LEVELS)}")
    return level


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    """ValueError for a level not in :data:`LEVELS` (structlog raised a KeyError later)."""
    level = log_level(level)
    renderer: Any = (
        structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        # Resolve sys.stderr when a logger is made, not once at configuration: a test runner or a
        # CLI harness may swap (and close) the stream after logging was configured.
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )


def _stderr_logger(*_args: Any) -> structlog.PrintLogger:
    return structlog.PrintLogger(sys.stderr)


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
