"""``connguard demo``: the classic Django connection failures, then their cure.

The demo runs the demo project (:mod:`connguard.demo.project`) under real servers —
gunicorn (sync with ``--preload``, gthread, gevent), uvicorn (ASGI), a Celery prefork worker,
management commands — as subprocesses pointed at a database on the test server, drives them
with a bounded load client and counts errors, wrong rows, lost writes and the peak of server
connections. The tests (tests/django, tests/demo) use the same modules:

=================================  ===========================================================
:mod:`connguard.demo.base`         the project, engines, default settings, errors
:mod:`connguard.demo.targets`      the database server: admin SQL, databases, connection
                                   counts, server settings, restart (PostgreSQL, MariaDB)
:mod:`connguard.demo.processes`    the project's environment; gunicorn/uvicorn/Celery/manage.py
:mod:`connguard.demo.load`         the bounded load client and its response checks
:mod:`connguard.demo.results`      :class:`~connguard.demo.results.Result`
:mod:`connguard.demo.registry`     ``@scenario`` and ``SCENARIOS``
:mod:`connguard.demo.runner`       ``Harness`` and ``run_scenario``
:mod:`connguard.demo.scenarios`    one module per scenario (adding one is adding a file)
:mod:`connguard.demo.cli`          ``connguard demo``: arguments and the run
=================================  ===========================================================

None of them imports pytest or Django (Django runs only in the processes they start). The
command itself is imported only when it runs, so importing this package stays cheap.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from connguard.demo.cli import add_arguments as add

    add(parser)


def run(args: argparse.Namespace) -> int:
    from connguard.demo.cli import run as run_demo

    return run_demo(args)
