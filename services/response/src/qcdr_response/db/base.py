"""The declarative base of every table the response service owns.

It extends :class:`qcdr_common.db.Base` (same naming convention) with a MetaData of its own, so
response's Alembic environment sees response's tables only, even in a process that also imports
another service's models. Other services do the same in their ``db/base.py``.
"""

from __future__ import annotations

from qcdr_common.db import NAMING_CONVENTION, Base
from sqlalchemy import MetaData


class ResponseBase(Base):
    __abstract__ = True
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
