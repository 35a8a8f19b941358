from __future__ import annotations

from django.db import models


class Item(models.Model):
    key: models.CharField[str, str] = models.CharField(max_length=64, unique=True)
    value: models.CharField[str, str] = models.CharField(max_length=200)

    class Meta:
        db_table = "cg_item"


class Write(models.Model):
    token: models.CharField[str, str] = models.CharField(max_length=64, unique=True)

    class Meta:
        db_table = "cg_write"


class Event(models.Model):
    """Lives in the ``other`` database (see ``app.routers``)."""

    token: models.CharField[str, str] = models.CharField(max_length=64, unique=True)

    class Meta:
        db_table = "cg_event"
