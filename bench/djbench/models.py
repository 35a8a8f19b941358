"""The benchmark's tables; created and filled by bench/django_macro.py, not by migrations."""

from __future__ import annotations

from django.db import models


class Item(models.Model):
    id: models.BigIntegerField[int, int] = models.BigIntegerField(primary_key=True)
    key: models.CharField[str, str] = models.CharField(max_length=32)
    value: models.CharField[str, str] = models.CharField(max_length=200)
    counter: models.BigIntegerField[int, int] = models.BigIntegerField(default=0)

    class Meta:
        db_table = "bench_item"
        managed = False


class Log(models.Model):
    id: models.BigAutoField[int, int] = models.BigAutoField(primary_key=True)
    item_id: models.BigIntegerField[int, int] = models.BigIntegerField()
    counter: models.BigIntegerField[int, int] = models.BigIntegerField()

    class Meta:
        db_table = "bench_log"
        managed = False
