"""MySQL's test-database creation, closing the pools on a database before it is dropped or
copied (see :mod:`connguard.backends.creation`)."""

from __future__ import annotations

from django.db.backends.mysql.creation import DatabaseCreation as MySQLCreation

from connguard.backends.creation import PoolClosingCreationMixin


class DatabaseCreation(PoolClosingCreationMixin, MySQLCreation):
    pass
