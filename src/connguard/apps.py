"""``INSTALLED_APPS += ["connguard"]``: system checks, management command, signal wiring."""

from __future__ import annotations

from django.apps import AppConfig


class ConnguardConfig(AppConfig):
    name = "connguard"
    label = "connguard"
    verbose_name = "connguard"

    def ready(self) -> None:
        from connguard import checks  # noqa: F401  (registers the checks)
        from connguard.backends import signals

        signals.connect()
