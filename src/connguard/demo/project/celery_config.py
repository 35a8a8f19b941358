"""Celery settings shared by the worker (celery_app.py) and Django-free clients (the demo runner)."""

from __future__ import annotations

import os
from pathlib import Path


def celery_config(base_dir: str | os.PathLike[str]) -> dict:
    """Celery settings for a filesystem broker + filesystem result backend under ``base_dir``."""
    base = Path(base_dir)
    queue, processed, results = base / "queue", base / "processed", base / "results"
    control = base / "control"  # kombu's default is ./control relative to the cwd
    for folder in (queue, processed, results, control):
        folder.mkdir(parents=True, exist_ok=True)
    return {
        "broker_url": "filesystem://",
        "broker_transport_options": {
            "data_folder_in": str(queue),
            "data_folder_out": str(queue),
            "processed_folder": str(processed),
            "control_folder": str(control),
            "store_processed": False,
            "polling_interval": 0.1,
        },
        "result_backend": f"file://{results}",
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "worker_prefetch_multiplier": 1,
        "task_acks_late": False,
        "broker_connection_retry_on_startup": True,
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
        "task_send_sent_event": False,
    }
