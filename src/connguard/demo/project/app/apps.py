from django.apps import AppConfig
from django.conf import settings


class TestAppConfig(AppConfig):
    name = "connguard.demo.project.app"
    label = "testapp"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        if settings.QUERY_IN_READY:
            # The gunicorn --preload bug: a query at startup (warming a cache, checking a
            # feature flag, ...) opens a connection in the master process.  Nothing closes
            # it, so every forked worker inherits the very same socket.
            from django.db import connection

            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
                cursor.fetchone()
