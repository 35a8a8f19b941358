"""Test rig for connguard: a throwaway PostgreSQL server, a fault-injecting TCP proxy and the
pytest fixtures built on them (``connguard.testing.pytest_plugin``).

Import the pieces from their modules: ``connguard.testing.server.PostgresServer``,
``connguard.testing.replication.StandbyServer`` (a streaming standby, for failover) and
``connguard.testing.proxy.FaultProxy``. Nothing here is imported by connguard itself.
"""
