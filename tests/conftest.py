"""Shared pytest configuration.

The real-server rig (``connguard.testing``) provides ``pg_server``, ``pg``, ``pg_dsn`` and
``fault_proxy``; see docs/testing.md.
"""

pytest_plugins = ["connguard.testing.pytest_plugin", "pytester"]
