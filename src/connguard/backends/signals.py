"""Hand pooled connections back where Django's request signals do not reach: Celery tasks.

Wired by ``connguard.apps`` when Celery is importable; nothing to configure.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import connections

logger = logging.getLogger("connguard.django")
_connected = False


def release_connections(**_: Any) -> None:
    """Return this thread's pooled connections (those not inside ``atomic()``)."""
    from connguard.backends.mixin import PooledDatabaseWrapperMixin

    for conn in connections.all(initialized_only=True):
        if (
            isinstance(conn, PooledDatabaseWrapperMixin)
            and conn.connguard_config is not None
            and not conn.in_atomic_block
        ):
            conn.close_if_unusable_or_obsolete()


def connect() -> None:
    global _connected
    if _connected:
        return
    _connected = True
    try:
        from celery import signals as celery_signals
    except ImportError:
        return
    celery_signals.task_prerun.connect(release_connections, weak=False)
    celery_signals.task_postrun.connect(release_connections, weak=False)
    logger.debug("connguard: Celery task signals wired")
