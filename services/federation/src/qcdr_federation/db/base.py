"""The declarative base of every table the federation service owns (its own MetaData, so the
federation Alembic environment sees federation's tables only), and its outbox table."""

from __future__ import annotations

from qcdr_common.db import NAMING_CONVENTION, Base
from qcdr_common.streams.outbox import outbox_table
from sqlalchemy import MetaData


class FederationBase(Base):
    __abstract__ = True
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


OUTBOX = outbox_table(FederationBase.metadata, "federation")
