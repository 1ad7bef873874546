"""Defaults shared by commands, kept apart from the modules that use them so that reading one
(for ``--help``) imports nothing heavy."""

from __future__ import annotations

from pathlib import Path

# Once mode's and the controller's file state (watermark, events, feed and reputation caches).
DEFAULT_STATE_DIR = Path("./.qcdr-state")
