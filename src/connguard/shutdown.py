"""Process exit: close every pool so that its server sessions end cleanly.

At interpreter exit (``atexit``), each pool of this process closes its idle connections: the
server sees a Terminate message, not a dropped socket ("unexpected EOF on client
connection"), and ``pg_stat_activity`` forgets the sessions at once. Connections still lent
then (a daemon thread's) are left to the kernel: nothing held is closed under its holder.

No signal handler is installed. The servers connguard runs under turn SIGTERM into a normal
exit themselves: gunicorn's workers (graceful stop, ``HUP`` reload, ``max_requests``) and its
master call ``sys.exit()``, as do uvicorn, Celery and Django's ``runserver``; ``atexit``
then runs. A handler installed behind the application's back would replace or delay its own
(a Python handler only runs between bytecodes, not while the main thread waits in libpq), and
could run pool code while the interrupted thread holds the pool's lock. A process killed by a
signal it does not handle ends its sessions through the kernel closing the sockets.

Children forked by ``multiprocessing`` and by Celery's ``billiard`` end with ``os._exit()``
after their own exit finalizers, skipping ``atexit``: a finalizer registered in each such
child closes its pools there.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
from typing import Any

from connguard import forking

logger = logging.getLogger("connguard.shutdown")

#: multiprocessing's forked children, and billiard's (Celery prefork), end with os._exit()
#: after running their own exit finalizers, never atexit's: close the pools there too
_MP_UTILS = ("multiprocessing.util", "billiard.util")
_EXIT_PRIORITY = -100  # after the finalizers that join the child's own children


def close_all() -> None:
    """Close every pool of this process (never one whose process forked without the hooks)."""
    for obj in list(forking._registry):
        close = getattr(obj, "_close_at_exit", None)
        if close is None:
            continue
        try:
            close()
        except Exception:  # exit goes on: one pool's failure must not keep the others open
            logger.exception("pool %r: closing at exit failed", getattr(obj, "name", obj))


class _Anchor:
    """What multiprocessing's after-fork registry holds (weakly) while this module lives."""


_anchor = _Anchor()


def _utils() -> list[Any]:
    """The multiprocessing-style util modules imported here, one per registry (billiard's
    may re-export multiprocessing's)."""
    found: dict[int, Any] = {}
    for name in _MP_UTILS:
        util = sys.modules.get(name)
        if util is not None:
            found.setdefault(id(getattr(util, "register_after_fork", None)), util)
    return list(found.values())


def _register_finalizer(_: object = None) -> None:
    """Runs in a multiprocessing / billiard child once its finalizer registry is fresh."""
    for util in _utils():
        util.Finalize(None, close_all, exitpriority=_EXIT_PRIORITY)


def _after_fork_in_child() -> None:
    # The child's Process._bootstrap() clears the finalizer registry after this hook, then
    # runs the after-fork callbacks: register from there.
    for util in _utils():
        util.register_after_fork(_anchor, _register_finalizer)


atexit.register(close_all)
os.register_at_fork(after_in_child=_after_fork_in_child)
