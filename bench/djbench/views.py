"""The two views under load; each response carries the row it asked for."""

from __future__ import annotations

from django.db import transaction
from django.db.models import F
from django.http import HttpRequest, JsonResponse

from djbench.models import Item, Log


def health(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"ok": True})


def select(request: HttpRequest, pk: int) -> JsonResponse:
    """One indexed SELECT by primary key."""
    item = Item.objects.get(pk=pk)
    return JsonResponse({"id": item.id, "key": item.key, "value": item.value})


def txn(request: HttpRequest, pk: int) -> JsonResponse:
    """A 3-statement transaction: SELECT ... FOR UPDATE, UPDATE, INSERT."""
    with transaction.atomic():
        item = Item.objects.select_for_update().get(pk=pk)
        Item.objects.filter(pk=pk).update(counter=F("counter") + 1)
        Log.objects.create(item_id=pk, counter=item.counter + 1)
    return JsonResponse({"id": item.id, "key": item.key, "counter": item.counter + 1})
