"""ASGI entry: ``uvicorn connguard.demo.project.asgi:application``."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "connguard.demo.project.settings")

application = get_asgi_application()

from django.conf import settings  # noqa: E402

if settings.IMPORT_TIME_QUERY:
    import connguard.demo.project.app.preload  # noqa: F401
