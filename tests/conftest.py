"""Shared pytest configuration.

The real-server rig (``connguard.testing``) provides ``pg_server``, ``pg``, ``pg_dsn`` and
``fault_proxy``; see docs/testing.md.

``CONNGUARD_MYSQLDB=pymysql`` runs the MariaDB tests on PyMySQL installed as ``MySQLdb``
(``pymysql.install_as_MySQLdb()``, before anything imports it): tests/django/
test_mysql_pymysql.py runs the Django backend's tests so, in a subprocess.
"""

import os

if os.environ.get("CONNGUARD_MYSQLDB") == "pymysql":
    import pymysql

    pymysql.install_as_MySQLdb()

pytest_plugins = ["connguard.testing.pytest_plugin", "pytester"]
