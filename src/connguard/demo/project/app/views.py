"""Views: each response carries the row/token it asked for, as read from the database.

Any exception becomes a JSON 500 ``{"error": <class>, "message": <text>, "pid": ...}`` so the
load client can classify failures (e.g. "too many clients").
"""

from __future__ import annotations

import functools
import logging
import os
import threading

from asgiref.sync import sync_to_async
from django.http import JsonResponse

from connguard.demo.project.app import work

log = logging.getLogger("connguard.demo.project")


def _error_response(exc: BaseException) -> JsonResponse:
    log.warning("request failed in pid %s: %s: %s", os.getpid(), type(exc).__name__, exc)
    return JsonResponse(
        {"error": type(exc).__name__, "message": str(exc)[:500], "pid": os.getpid()},
        status=500,
    )


def json_errors(view):
    @functools.wraps(view)
    def wrapper(request, *args, **kwargs):
        try:
            return JsonResponse(view(request, *args, **kwargs))
        except Exception as exc:
            return _error_response(exc)

    return wrapper


def async_json_errors(view):
    @functools.wraps(view)
    async def wrapper(request, *args, **kwargs):
        try:
            return JsonResponse(await view(request, *args, **kwargs))
        except Exception as exc:
            return _error_response(exc)

    return wrapper


def health(request):
    return JsonResponse({"ok": True, "pid": os.getpid()})


def pid(request):
    return JsonResponse(
        {"pid": os.getpid(), "ppid": os.getppid(), "thread": threading.get_ident()}
    )


@json_errors
def backend(request):
    return work.backend_pid()


@json_errors
def row(request, key):
    return work.get_row(key)


@json_errors
def write(request, token):
    return work.do_write(token)


@json_errors
def slow(request, ms):
    return work.do_sleep(ms)


@json_errors
def txn(request, token, ms):
    return work.do_txn(token, ms)


@json_errors
def multi(request, token):
    return work.do_multi(token)


@json_errors
def pools(request):
    return work.pools_report()


# Async views: the ORM is used through sync_to_async, as Django requires.  Under ASGI every
# request runs in its own ThreadSensitiveContext, so each gets its own thread (and with the
# stock backend its own database connection).


@async_json_errors
async def async_row(request, key):
    return await sync_to_async(work.get_row)(key)


@async_json_errors
async def async_write(request, token):
    return await sync_to_async(work.do_write)(token)


@async_json_errors
async def async_slow(request, ms):
    return await sync_to_async(work.do_sleep)(ms)
