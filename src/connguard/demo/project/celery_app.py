"""Celery app for the test project: tasks doing the same row/write work as the views.

Needs no broker service: kombu's *filesystem* transport and Celery's *filesystem* result
backend, both rooted at ``$CGT_CELERY_DIR`` (``queue/``, ``processed/``, ``results/``).
``CGT_CELERY_DB_REUSE_MAX`` sets ``CELERY_DB_REUSE_MAX`` (keep Django connections across tasks).
Run a prefork worker with::

    CGT_CELERY_DIR=/tmp/x DJANGO_SETTINGS_MODULE=connguard.demo.project.settings \\
        python -m celery -A connguard.demo.project.celery_app worker -P prefork -c 2

Clients that must not import Django (the test process) build their own app with
:func:`connguard.demo.project.celery_config.celery_config` and send tasks by name
(``connguard.demo.project.row`` / ``.write`` / ``.slow``).
"""

from __future__ import annotations

import os

from celery import Celery

from connguard.demo.project.celery_config import celery_config

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "connguard.demo.project.settings")


app = Celery("connguard-demo")
app.conf.update(celery_config(os.environ.get("CGT_CELERY_DIR") or "/tmp/connguard-celery"))
if os.environ.get("CGT_CELERY_DB_REUSE_MAX"):
    # Celery's Django fixup closes every DB connection before and after each task unless
    # CELERY_DB_REUSE_MAX is set; with it, connections are reused across tasks (and across
    # idle periods), which is what production setups do to avoid a connect per task.
    app.conf["CELERY_DB_REUSE_MAX"] = int(os.environ["CGT_CELERY_DB_REUSE_MAX"])


@app.task(name="connguard.demo.project.row")
def row(key: str) -> dict:
    from connguard.demo.project.app import work

    return work.get_row(key)


@app.task(name="connguard.demo.project.write")
def write(token: str) -> dict:
    from connguard.demo.project.app import work

    return work.do_write(token)


@app.task(name="connguard.demo.project.slow")
def slow(ms: int) -> dict:
    from connguard.demo.project.app import work

    return work.do_sleep(ms)
