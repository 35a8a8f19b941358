"""The WSGI application; with ``CGB_PROFILE_DIR`` set, every request is profiled.

Profiling (``django_macro.py --profile``) wraps each request, in the thread that serves it,
in a pyinstrument session (pyinstrument samples only its own thread, so one session per
request works under gthread too), including ``close()`` of the response, where Django's
``request_finished`` returns the connection. The sessions are combined per process and
written to ``$CGB_PROFILE_DIR/<pid>.pyisession`` every 200 requests and at exit,
with the number of requests in ``<pid>.count``.
"""

from __future__ import annotations

import atexit
import os
import threading
from collections.abc import Callable, Iterable
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djbench.settings")

from django.core.wsgi import get_wsgi_application

application: Callable[..., Any] = get_wsgi_application()

_PROFILE_DIR = os.environ.get("CGB_PROFILE_DIR", "")

if _PROFILE_DIR:
    from pyinstrument import Profiler
    from pyinstrument.session import Session

    _django = application
    _lock = threading.Lock()
    _state: dict[str, Any] = {"session": None, "count": 0}

    def _save() -> None:
        with _lock:
            session = _state["session"]
            if session is not None:
                session.save(os.path.join(_PROFILE_DIR, f"{os.getpid()}.pyisession"))
                with open(os.path.join(_PROFILE_DIR, f"{os.getpid()}.count"), "w") as f:
                    f.write(str(_state["count"]))

    atexit.register(_save)

    def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if not environ.get("PATH_INFO", "").startswith(("/select/", "/txn/")):
            return _django(environ, start_response)  # type: ignore[no-any-return,unused-ignore]
        profiler = Profiler(interval=0.0001)
        profiler.start()
        response = _django(environ, start_response)
        try:
            body = list(response)
        finally:
            close = getattr(response, "close", None)
            if close is not None:
                close()
        session = profiler.stop()
        with _lock:
            combined = _state["session"]
            _state["session"] = session if combined is None else Session.combine(combined, session)
            _state["count"] += 1
            save = _state["count"] % 200 == 0
        if save:
            _save()
        return body
