"""Django views for metrics and health checks: ``path("connguard/", include("connguard.contrib.django.urls"))``."""
