"""PostgreSQL's test-database creation, closing the pools on a database before it is
dropped or used as a template (see :mod:`connguard.backends.creation`)."""

from __future__ import annotations

from django.db.backends.postgresql.creation import DatabaseCreation as PostgresCreation

from connguard.backends.creation import PoolClosingCreationMixin


class DatabaseCreation(PoolClosingCreationMixin, PostgresCreation):
    pass
