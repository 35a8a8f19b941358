"""Test-database creation that closes the pools holding sessions on a database first.

PostgreSQL refuses to drop (or use as a template) a database others are connected to: idle
pooled connections would make ``manage.py test`` fail with "database ... is being accessed
by other users". MySQL drops it under them, and their sessions then fail later: either way
the pools on that database are closed before it is dropped or copied.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.db.backends.base.creation import BaseDatabaseCreation

from connguard.backends import registry

# mypy sees the mixin as what it is mixed into
if TYPE_CHECKING:
    _Base = BaseDatabaseCreation
else:
    _Base = object


class PoolClosingCreationMixin(_Base):
    """Put before Django's ``DatabaseCreation`` in the bases of a connguard backend's."""

    def _destroy_test_db(self, test_database_name: str, verbosity: int) -> None:
        registry.close_pools(dbname=test_database_name)
        super()._destroy_test_db(test_database_name, verbosity)  # type: ignore[misc]

    def _clone_test_db(self, suffix: Any, verbosity: int, keepdb: bool = False) -> None:
        registry.close_pools(dbname=self.connection.settings_dict["NAME"])
        super()._clone_test_db(suffix, verbosity, keepdb)  # type: ignore[misc]
