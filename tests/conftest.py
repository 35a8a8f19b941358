"""Shared pytest configuration.

The real-server rig (``connguard.testing``) provides ``pg_server``, ``pg``, ``pg_dsn`` and
``fault_proxy``; see docs/testing.md.
"""

pytest_plugins = ["connguard.testing.pytest_plugin", "pytester"]

import os

if os.environ.get("CONNGUARD_MYSQLDB") == "pymysql":
    # the MariaDB tests on PyMySQL installed as MySQLdb (tests/django/test_mysql_pymysql.py
    # runs the Django backend's tests so): everything that imports MySQLdb gets PyMySQL
    import pymysql

    pymysql.install_as_MySQLdb()
