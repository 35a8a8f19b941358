"""Fork safety: in a child, every pool abandons what it inherited and starts afresh.

``os.register_at_fork`` runs :func:`_after_fork_in_child` in every child made by ``os.fork()``
(and by C code that calls ``PyOS_AfterFork_Child``: uWSGI, multiprocessing, Celery's billiard).
Nothing is sent to the server on an inherited socket: see ``Driver.abandon``.
"""

from __future__ import annotations

import logging
import os
import weakref
from typing import Any, Protocol


class _ForkAware(Protocol):
    def _after_fork_in_child(self) -> None: ...


logger = logging.getLogger("connguard.forking")

_registry: weakref.WeakSet[Any] = weakref.WeakSet()

#: bumped in every child: comparing it is a cheaper "did we fork?" than os.getpid()
generation = 0

#: how many children this process has forked with os.fork() (0 again in each child): a
#: pre-fork server's master (gunicorn --preload, uWSGI, Celery prefork) says so
children_forked = 0


def register(obj: _ForkAware) -> None:
    """Call ``obj._after_fork_in_child()`` in each child process while *obj* is alive."""
    _registry.add(obj)


def _after_fork_in_child() -> None:
    global generation, children_forked
    generation += 1
    children_forked = 0
    for obj in list(_registry):
        try:
            obj._after_fork_in_child()
        except Exception:  # a hook must never break the child, but must not fail unseen
            logger.exception(
                "pool %r: resetting after fork failed in child %d; its connections may be "
                "shared with the parent, do not use it",
                getattr(obj, "name", obj), os.getpid(),
            )  # fmt: skip


def _after_fork_in_parent() -> None:
    global children_forked
    children_forked += 1


os.register_at_fork(after_in_child=_after_fork_in_child, after_in_parent=_after_fork_in_parent)
