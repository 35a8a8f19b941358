"""``metrics``: Prometheus text of every pool; ``status``: JSON for health checks.

``status`` answers HTTP 200 while every pool of the process that serves it can reach its
database, and 503 while any pool's circuit breaker is open; the body is
:func:`connguard.metrics.status` (pid, and per pool: name, breaker, last error, every stat).

``metrics`` needs prometheus_client (``django-connguard[prometheus]``). Under several worker
processes (``PROMETHEUS_MULTIPROC_DIR`` set) it serves the sum over all workers, see
:mod:`connguard.contrib.prometheus`; importing this module then makes every process start
publishing after its first request.
"""

from __future__ import annotations

import os

from django.core.signals import request_finished
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from connguard import metrics as pool_metrics


@never_cache
@require_GET
def status(request: HttpRequest) -> JsonResponse:
    report = pool_metrics.status()
    return JsonResponse(report, status=200 if report["healthy"] else 503)


@never_cache
@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    from connguard.contrib import prometheus

    body, content_type = prometheus.exposition()
    return HttpResponse(body, content_type=content_type)


def _start_publisher(**_: object) -> None:
    from connguard.contrib import prometheus

    prometheus.start_publisher()


if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    try:
        import prometheus_client  # noqa: F401
    except ImportError:  # the metrics view explains; status works without it
        pass
    else:
        request_finished.connect(_start_publisher, dispatch_uid="connguard-metrics-publisher")
