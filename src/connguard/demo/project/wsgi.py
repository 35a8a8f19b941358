"""WSGI entry: ``gunicorn connguard.demo.project.wsgi:application`` (``--preload`` imports this in the master)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "connguard.demo.project.settings")

application = get_wsgi_application()

from django.conf import settings  # noqa: E402

if settings.IMPORT_TIME_QUERY:
    # Module-level query at import time: under ``--preload`` this runs in the master,
    # and the open connection is inherited by every forked worker.
    import connguard.demo.project.app.preload  # noqa: F401
