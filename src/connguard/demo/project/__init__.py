"""Minimal Django project used by connguard's real-process tests (see tests/django/harness.py).

Everything is configured from ``CGT_*`` environment variables (see settings.py), so the
same project runs on Django's stock PostgreSQL backend and on
``connguard.backends.postgresql``.
"""
