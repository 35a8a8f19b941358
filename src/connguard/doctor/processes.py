"""The process model inspector: how many processes and threads reach the database, and
how (gunicorn's config and ``GUNICORN_CMD_ARGS``, ``WEB_CONCURRENCY``, ASGI and uvicorn,
gevent, Celery, the options)."""

from __future__ import annotations

import argparse
import os
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from connguard.doctor.findings import Finding
from connguard.doctor.model import Processes
from connguard.doctor.text import one_line, plural


def read_gunicorn_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The settings a gunicorn config file assigns (the file runs in a namespace of its own,
    as gunicorn runs it)."""
    file = Path(path)
    namespace: dict[str, Any] = {"__file__": str(file), "__name__": "__config__"}
    exec(compile(file.read_text(), str(file), "exec"), namespace)
    keys = ("workers", "threads", "worker_class", "worker_connections", "preload_app")
    return {key: namespace[key] for key in keys if key in namespace}


def _parse_gunicorn_args(text: str) -> tuple[dict[str, Any], str | None]:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("-w", "--workers", type=int)
    parser.add_argument("--threads", type=int)
    parser.add_argument("-k", "--worker-class")
    parser.add_argument("--worker-connections", type=int)
    parser.add_argument("--preload", action="store_true", default=None)
    parser.add_argument("-c", "--config")
    known, _ = parser.parse_known_args(shlex.split(text))
    values = {
        "workers": known.workers,
        "threads": known.threads,
        "worker_class": known.worker_class,
        "worker_connections": known.worker_connections,
        "preload_app": known.preload,
    }
    return {k: v for k, v in values.items() if v is not None}, known.config


def detect_processes(
    args: argparse.Namespace, notes: list[str], django_settings: Any = None
) -> tuple[Processes, list[Finding]]:
    """The process model: ``WEB_CONCURRENCY`` < gunicorn config < ``GUNICORN_CMD_ARGS`` <
    options; with Django's settings (``django_settings``), ASGI and Celery too.

    ASGI: a gunicorn worker class containing ``uvicorn``, or ``--asgi``; else, with the
    settings, no gunicorn in sight (no config file, no ``GUNICORN_CMD_ARGS``: their worker
    class, ``sync`` by default, decides) and no ``--worker-class``/``--gevent``:
    ``ASGI_APPLICATION`` set and ``WSGI_APPLICATION`` not (both set: WSGI, with a note).
    Outside gunicorn, ``UVICORN_WORKERS`` then counts the workers (over ``WEB_CONCURRENCY``,
    as uvicorn reads them). Celery: see :func:`_detect_celery`.
    """
    found: list[Finding] = []
    model = Processes()
    settings: dict[str, Any] = {}
    sources: list[str] = []
    env_args, env_config = _parse_gunicorn_args(os.environ.get("GUNICORN_CMD_ARGS", ""))
    config = args.gunicorn_config or env_config
    if config is None and Path("gunicorn.conf.py").is_file():
        config = "gunicorn.conf.py"
    gunicorn = bool(config or env_args)  # gunicorn serves: its worker class decides
    if os.environ.get("WEB_CONCURRENCY", "").isdigit():
        settings["workers"] = int(os.environ["WEB_CONCURRENCY"])
        sources.append("WEB_CONCURRENCY")
    if config:
        try:
            settings.update(read_gunicorn_config(config))
            sources.append(str(config))
        except Exception as exc:
            found.append(
                Finding(
                    "CG002", "warning", "processes",
                    f"cannot read the gunicorn config {config}: {one_line(exc)}",
                    "Fix the file, or give --workers/--threads/--preload instead.",
                )
            )  # fmt: skip
    if env_args:
        settings.update(env_args)
        sources.append("GUNICORN_CMD_ARGS")
    flags = {
        "workers": args.workers,
        "threads": args.threads,
        "worker_class": args.worker_class,
        "worker_connections": args.worker_connections,
        "preload_app": True if args.preload else None,
    }
    flags = {k: v for k, v in flags.items() if v is not None}
    asgi_app = False  # ASGI read from the settings
    if (
        django_settings is not None
        and not (gunicorn or args.asgi or args.gevent)
        and "worker_class" not in flags
    ):
        asgi_app = _settings_asgi(django_settings, notes)
        if asgi_app:
            sources.append("ASGI_APPLICATION")
    if (asgi_app or args.asgi) and not gunicorn:
        uvicorn_workers = os.environ.get("UVICORN_WORKERS", "")
        if uvicorn_workers.isdigit():
            settings["workers"] = int(uvicorn_workers)
            sources.append("UVICORN_WORKERS")
    if flags or args.asgi or args.gevent:
        settings.update(flags)
        sources.append("options")
    if settings or asgi_app:
        model.server = "asgi" if asgi_app else "gunicorn"
        model.source = ", ".join(sources)
    if asgi_app and "workers" not in settings:
        notes.append(
            "ASGI server's worker processes unknown: 1 assumed "
            "(give --workers, or set UVICORN_WORKERS or WEB_CONCURRENCY)"
        )
    model.workers = int(settings.get("workers") or 1)
    model.threads = int(settings.get("threads") or 1)
    model.worker_connections = int(settings.get("worker_connections") or 1000)
    model.preload = bool(settings.get("preload_app"))
    worker_class = str(settings.get("worker_class") or "sync")
    if worker_class == "sync" and model.threads > 1:
        worker_class = "gthread"
    model.worker_class = worker_class
    lowered = worker_class.lower()
    model.gevent = bool(args.gevent) or "gevent" in lowered or "eventlet" in lowered
    model.asgi = bool(args.asgi) or "uvicorn" in lowered or asgi_app
    if model.server == "unknown" and (model.asgi or model.gevent):
        model.server, model.source = "options", "options"
    model.celery, model.celery_source = _detect_celery(args, notes, django_settings)
    model.hosts = int(args.hosts or 1)
    if model.server == "unknown":
        notes.append(
            "process model unknown: 1 process with 1 thread assumed "
            "(give --workers/--threads, --gunicorn-config, --asgi or --gevent)"
        )
    return model, found


def _settings_asgi(django_settings: Any, notes: list[str]) -> bool:
    """ASGI by the settings: ``ASGI_APPLICATION`` without ``WSGI_APPLICATION`` (both: a note)."""
    asgi_app = getattr(django_settings, "ASGI_APPLICATION", None)
    wsgi_app = getattr(django_settings, "WSGI_APPLICATION", None)
    if asgi_app and wsgi_app:
        notes.append(
            "ASGI_APPLICATION and WSGI_APPLICATION are both set: served through WSGI assumed; "
            "pass --asgi if it is served through ASGI (uvicorn, daphne, hypercorn)"
        )
    return bool(asgi_app) and not wsgi_app


_CELERY_ENV = ("CELERY_WORKER_CONCURRENCY", "CELERYD_CONCURRENCY")
_CELERY_SETTINGS = ("CELERY_WORKER_CONCURRENCY", "CELERYD_CONCURRENCY")


def _celery_importable() -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec("celery") is not None
    except (ImportError, ValueError):
        return False


def _celery_number(value: Any) -> int | str | None:
    """A concurrency setting: a count, ``"auto"``, or None when unset (0 is Celery's unset)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value if value > 0 else None
    text = str(value).strip().lower()
    if text == "auto":
        return "auto"
    return int(text) if text.isdigit() and int(text) > 0 else None


def _detect_celery(
    args: argparse.Namespace, notes: list[str], django_settings: Any = None
) -> tuple[int, str]:
    """Celery worker processes per host, and where the number comes from.

    ``--celery-concurrency`` < the ``CELERY_WORKER_CONCURRENCY`` / ``CELERYD_CONCURRENCY``
    environment variables (as a worker's ``-c $CELERYD_CONCURRENCY`` gets them) < with
    Django's settings and Celery importable, the ``CELERY``-namespaced settings
    (``app.config_from_object("django.conf:settings", namespace="CELERY")``):
    ``CELERY_WORKER_CONCURRENCY`` (or the old ``CELERYD_CONCURRENCY``), else, when a broker
    is configured (``CELERY_BROKER_URL``, setting or environment), Celery's default: the
    CPU count, with a note. ``auto`` is counted as the CPU count too.
    """
    if args.celery_concurrency:
        return int(args.celery_concurrency), "options"
    number, name = _first_concurrency({n: os.environ.get(n) for n in _CELERY_ENV})
    if number is None and django_settings is not None and _celery_importable():
        number, name = _first_concurrency(
            {n: getattr(django_settings, n, None) for n in _CELERY_SETTINGS}
        )
        broker = getattr(django_settings, "CELERY_BROKER_URL", None) or os.environ.get(
            "CELERY_BROKER_URL"
        )
        if number is None and broker:
            number, name = "auto", "CELERY_BROKER_URL"
    if number is None:
        return 0, ""
    if isinstance(number, int):
        return number, name
    cpus = os.cpu_count() or 1
    if name == "CELERY_BROKER_URL":
        why = "a broker is configured (CELERY_BROKER_URL) but no concurrency: Celery's default"
        source = "CELERY_BROKER_URL; Celery's default assumed"
    else:
        why = f"{name} is 'auto'"
        source = f"{name} 'auto'; the CPU count assumed"
    notes.append(
        f"Celery: {why}, the CPU count, assumed: {plural(cpus, 'process', 'processes')} "
        "per host (this machine's CPUs; give --celery-concurrency, or set "
        "CELERY_WORKER_CONCURRENCY)"
    )
    return cpus, source


def _first_concurrency(values: Mapping[str, Any]) -> tuple[int | str | None, str]:
    """The first set concurrency among ``name -> value``, and its name."""
    for name, value in values.items():
        number = _celery_number(value)
        if number is not None:
            return number, name
    return None, ""
