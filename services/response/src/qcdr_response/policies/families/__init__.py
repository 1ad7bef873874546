"""Policy generator families: each module registers exactly one ``FamilyGenerator``."""

from __future__ import annotations

import sys

from qcdr_common.registry import import_submodules

import_submodules(sys.modules[__name__])
