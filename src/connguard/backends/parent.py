"""A process that forks children gives its idle Django connections back to their pools.

The master of a pre-fork server (``gunicorn --preload``, uWSGI, Celery prefork) may have run
a query before forking (``AppConfig.ready()``, import time). Django keeps that connection on
the master's thread for ever, since no request ever ends there; the workers each open their
own. Right after each ``fork()``, in the parent, the connections of the forking thread that
sit idle (autocommit, no transaction, outside ``atomic()``) are handed back to their pools;
a pool not used for :data:`connguard.pool.FORKED_PARENT_IDLE` seconds after its process
forked then closes them. A process that uses the connection again simply checks one out.
"""

from __future__ import annotations

import logging
import os

logger = logging.getLogger("connguard.backends")


def _after_fork_in_parent() -> None:
    try:
        from django.db import connections

        wrappers = connections.all(initialized_only=True)
    except Exception:  # Django not configured in this process: nothing to give back
        return
    for wrapper in wrappers:
        replaceable = getattr(wrapper, "_cg_replaceable", None)  # connguard's backend only
        if replaceable is None or getattr(wrapper, "connguard_pool", None) is None:
            continue
        try:
            if replaceable():
                wrapper.close()
        except Exception:  # a fork must go on; the connection simply stays where it was
            logger.exception(
                "database %r: could not give its idle connection back to the pool after a fork",
                wrapper.alias,
            )


os.register_at_fork(after_in_parent=_after_fork_in_parent)
