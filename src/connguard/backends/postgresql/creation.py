"""Test-database creation that closes the pools holding sessions on a database first.

PostgreSQL refuses to drop (or use as a template) a database others are connected to:
idle pooled connections would make ``manage.py test`` fail with "database ... is being
accessed by other users".
"""

from __future__ import annotations

from typing import Any

from django.db.backends.postgresql.creation import DatabaseCreation as PostgresCreation

from connguard.backends import pools


class DatabaseCreation(PostgresCreation):
    def _destroy_test_db(self, test_database_name: str, verbosity: int) -> None:
        pools.close_pools(dbname=test_database_name)
        super()._destroy_test_db(test_database_name, verbosity)  # type: ignore[misc]

    def _clone_test_db(self, suffix: Any, verbosity: int, keepdb: bool = False) -> None:
        pools.close_pools(dbname=self.connection.settings_dict["NAME"])
        super()._clone_test_db(suffix, verbosity, keepdb)  # type: ignore[misc]
