"""The declarative base of every table the analysis service owns.

It extends :class:`qcdr_common.db.Base` (same naming convention) with a MetaData of its own, so
analysis's Alembic environment sees analysis's tables only, even in a process that also imports
another service's models.
"""

from __future__ import annotations

from qcdr_common.db import NAMING_CONVENTION, Base
from sqlalchemy import MetaData


class AnalysisBase(Base):
    __abstract__ = True
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
