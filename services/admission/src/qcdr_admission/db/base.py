"""The declarative base of every table the admission service owns (its own MetaData, so the
admission Alembic environment sees admission's tables only), and its outbox table."""

from __future__ import annotations

from qcdr_common.db import NAMING_CONVENTION, Base
from qcdr_common.streams.outbox import outbox_table
from sqlalchemy import MetaData


class AdmissionBase(Base):
    __abstract__ = True
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


OUTBOX = outbox_table(AdmissionBase.metadata, "admission")
