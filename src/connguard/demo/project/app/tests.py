"""Tests of the demo project itself, for ``manage.py test connguard.demo.project.app``: the
test runner must create, clone (``--parallel``) and drop the test databases while pools
hold connections to them, with no "database ... is being accessed by other users"."""

from __future__ import annotations

import threading

from django.conf import settings
from django.db import connections
from django.test import TestCase, TransactionTestCase

from connguard.demo.project.app import work
from connguard.demo.project.app.models import Event, Item, Write

ALIASES = {a for a in ("default", "other") if a in settings.DATABASES}


class RowTests(TestCase):
    databases = ALIASES

    def test_row_roundtrip(self) -> None:
        Item.objects.create(key="t0001", value="value-of-t0001")
        self.assertEqual(work.get_row("t0001")["key"], "t0001")

    def test_write_roundtrip(self) -> None:
        self.assertEqual(work.do_write("tw-1")["token"], "tw-1")
        self.assertEqual(Write.objects.count(), 1)


class ThreadTests(TransactionTestCase):
    databases = ALIASES

    def test_threads_and_aliases(self) -> None:
        errors: list[BaseException] = []

        def use() -> None:
            try:
                for alias in ALIASES:
                    with connections[alias].cursor() as cursor:
                        cursor.execute("SELECT 1")
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)
            finally:
                connections.close_all()

        threads = [threading.Thread(target=use) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        self.assertEqual(errors, [])
        if "other" in ALIASES:
            Event.objects.create(token="te-1")
            self.assertEqual(Event.objects.count(), 1)
