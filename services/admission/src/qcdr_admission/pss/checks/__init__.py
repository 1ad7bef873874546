"""One module per Pod Security Standards check; importing a module registers its check.

:func:`load_checks` imports them all (idempotent).
"""

from __future__ import annotations

from qcdr_common.registry import Registry, import_submodules

from qcdr_admission.pss.registry import CHECKS, Check


def load_checks() -> Registry[Check]:
    import qcdr_admission.pss.checks as package

    import_submodules(package)
    return CHECKS
