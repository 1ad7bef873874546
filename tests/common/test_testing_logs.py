"""The tests' log capture sees info events even after a test configured a higher level."""

from __future__ import annotations

import logging

import structlog
from qcdr_common.testing.logs import capture_logs


def test_info_events_are_captured_after_a_warning_level_configuration() -> None:
    log = structlog.get_logger("capture-check")
    before = structlog.get_config()["wrapper_class"]
    warning_only = structlog.make_filtering_bound_logger(logging.WARNING)
    structlog.configure(wrapper_class=warning_only)  # as a service with QCDR_LOG_LEVEL=WARNING does
    try:
        with structlog.testing.capture_logs() as plain:
            log.info("dropped_by_structlogs_own_capture")
        assert plain == []  # the trap the helper exists for
        with capture_logs() as logs:
            log.info("seen", n=1)
        assert logs == [{"event": "seen", "n": 1, "log_level": "info"}]
        assert structlog.get_config()["wrapper_class"] is warning_only  # the configuration is restored
    finally:
        structlog.configure(wrapper_class=before)
