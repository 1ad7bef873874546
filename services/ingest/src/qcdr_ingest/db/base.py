"""The declarative base of every table the ingest service owns.

It extends :class:`qcdr_common.db.Base` (same naming convention) with a MetaData of its own, so
ingest's Alembic environment sees ingest's tables only, even in a process that also imports
another service's models. Other services do the same in their ``db/base.py``.
"""

from __future__ import annotations

from qcdr_common.db import NAMING_CONVENTION, Base
from sqlalchemy import MetaData


class IngestBase(Base):
    __abstract__ = True
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
