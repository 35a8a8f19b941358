"""The database work shared by the views, the Celery tasks and the management commands.

Every result carries what was asked for *as read back from the database*, so a caller can
detect a crossed connection (someone else's result) by comparing it with its request.
"""

from __future__ import annotations

import os

from django.db import connection, transaction

from connguard.demo.project.app.models import Item, Write


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


def do_sleep(ms: int) -> dict:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_sleep(%s)", [ms / 1000.0])
        cursor.fetchone()
    return {"ok": True, "slept_ms": ms, "pid": os.getpid()}


def backend_pid() -> dict:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (bpid,) = cursor.fetchone()
    return {"pid": os.getpid(), "backend_pid": bpid}
