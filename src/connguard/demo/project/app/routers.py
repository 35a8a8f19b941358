"""Database router of the multiple-database scenario: ``Event`` rows live in the ``other``
alias (when ``CGT_DB_OTHER_NAME`` configures it), everything else in ``default``."""

from __future__ import annotations

from typing import Any

OTHER_MODELS = frozenset({"event"})


def _alias(model: Any) -> str:
    return "other" if model._meta.model_name in OTHER_MODELS else "default"


class DemoRouter:
    def db_for_read(self, model: Any, **hints: Any) -> str:
        return _alias(model)

    def db_for_write(self, model: Any, **hints: Any) -> str:
        return _alias(model)

    def allow_relation(self, obj1: Any, obj2: Any, **hints: Any) -> bool | None:
        return None

    def allow_migrate(
        self, db: str, app_label: str, model_name: str | None = None, **hints: Any
    ) -> bool | None:
        if app_label != "testapp" or model_name is None:
            return None
        return db == ("other" if model_name in OTHER_MODELS else "default")
