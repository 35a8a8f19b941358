import os

from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.urls import include, path


def health(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"ok": True, "pid": os.getpid()})


def query(request: HttpRequest) -> JsonResponse:
    """One checkout per request: one query on the default database."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend = cursor.fetchone()[0]
    return JsonResponse({"pid": os.getpid(), "backend": backend})


urlpatterns = [
    path("health", health),
    path("query", query),
    path("connguard/", include("connguard.contrib.django.urls")),
]
