"""Imported at module level (wsgi.py / asgi.py / the forkcheck command) when
``CGT_IMPORT_TIME_QUERY`` is set: runs a query at import time, before any fork.

This is the "load something from the database at import time" pattern; the connection it
opens stays open and is inherited by every child forked afterwards.
"""

from django.db import connection

with connection.cursor() as _cursor:
    _cursor.execute("SELECT count(*) FROM cg_item")
    ITEM_COUNT_AT_IMPORT = _cursor.fetchone()[0]
