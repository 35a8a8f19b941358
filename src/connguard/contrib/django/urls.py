"""``path("connguard/", include("connguard.contrib.django.urls"))``: ``metrics`` and ``status``.

Put them behind whatever protects internal endpoints (they reveal pool names and sizes).
"""

from django.urls import path

from connguard.contrib.django import views

app_name = "connguard"
urlpatterns = [
    path("metrics", views.metrics, name="metrics"),
    path("status", views.status, name="status"),
]
