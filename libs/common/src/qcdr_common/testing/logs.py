"""structlog events captured at every level, whatever an earlier test configured."""

from __future__ import annotations

import logging
from collections.abc import Iterator, MutableMapping, Sequence
from contextlib import contextmanager
from typing import Any

import structlog
from structlog.typing import Processor


@contextmanager
def capture_logs(processors: Sequence[Processor] = ()) -> Iterator[list[MutableMapping[str, Any]]]:
    """:func:`structlog.testing.capture_logs` with the level filter opened. structlog's swaps the
    processors but keeps the configured wrapper class, so after a test in the same worker started
    a service with ``QCDR_LOG_LEVEL=WARNING`` its level filter dropped info events before they
    could be captured, and a test that looked for one failed depending on the order tests ran in."""
    wrapper = structlog.get_config()["wrapper_class"]
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.NOTSET))
    try:
        with structlog.testing.capture_logs(processors=list(processors)) as logs:
            yield logs
    finally:
        structlog.configure(wrapper_class=wrapper)
