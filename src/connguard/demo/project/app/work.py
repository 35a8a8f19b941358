"""The database work shared by the views, the Celery tasks and the management commands.

Every result carries what was asked for *as read back from the database*, so a caller can
detect a crossed connection (someone else's result) by comparing it with its request.
"""

from __future__ import annotations

import os

from django.db import connection, transaction

from connguard.demo.project.app.models import Event, Item, Write


def value_for(key: str) -> str:
    return "value-of-" + key


def get_row(key: str) -> dict:
    item = Item.objects.get(key=key)
    return {"key": item.key, "value": item.value, "pid": os.getpid()}


def do_write(token: str) -> dict:
    with transaction.atomic():
        created = Write.objects.create(token=token)
        # Read it back inside the transaction: a crossed connection shows up as a token
        # that differs from the one we inserted (or as an error).
        stored = Write.objects.values_list("token", flat=True).get(pk=created.pk)
    return {"ok": True, "token": stored, "pid": os.getpid()}


def _sleep_sql() -> str:
    """A statement that sleeps for ``%s`` seconds, in this database's SQL."""
    return "SELECT SLEEP(%s)" if connection.vendor == "mysql" else "SELECT pg_sleep(%s)"


def do_sleep(ms: int) -> dict:
    with connection.cursor() as cursor:
        cursor.execute(_sleep_sql(), [ms / 1000.0])
        cursor.fetchone()
    return {"ok": True, "slept_ms": ms, "pid": os.getpid()}


def backend_pid() -> dict:
    with connection.cursor() as cursor:
        cursor.execute("SELECT CONNECTION_ID()" if connection.vendor == "mysql"
                       else "SELECT pg_backend_pid()")
        (bpid,) = cursor.fetchone()
    return {"pid": os.getpid(), "backend_pid": bpid}


def do_txn(token: str, ms: int) -> dict:
    """Three inserts in one transaction with a sleep before the last: a session
    terminated during the sleep must leave none of ``<token>-a/-b/-c`` behind."""
    with transaction.atomic():
        Write.objects.create(token=f"{token}-a")
        Write.objects.create(token=f"{token}-b")
        with connection.cursor() as cursor:
            cursor.execute(_sleep_sql(), [ms / 1000.0])
        Write.objects.create(token=f"{token}-c")
    return {"ok": True, "token": token, "pid": os.getpid()}


def do_multi(token: str) -> dict:
    """One write on each alias (``Write`` on default, ``Event`` on other), read back."""
    with transaction.atomic(using="default"):
        Write.objects.create(token=token)
    with transaction.atomic(using="other"):
        Event.objects.create(token=token)
    stored = Write.objects.values_list("token", flat=True).get(token=token)
    event = Event.objects.values_list("token", flat=True).get(token=token)
    return {"ok": True, "token": stored if stored == event else f"{stored}/{event}",
            "pid": os.getpid()}


def pools_report() -> dict:
    """This process's connguard pools (none on the stock backend)."""
    from connguard.backends import registry

    report = []
    for pool in registry.all_pools():
        stats = pool.get_stats()
        report.append({
            "name": pool.name,
            "size": stats["pool_size"],
            "available": stats["pool_available"],
            "in_use": stats["pool_in_use"],
        })
    return {"pid": os.getpid(), "pools": sorted(report, key=lambda p: p["name"])}
