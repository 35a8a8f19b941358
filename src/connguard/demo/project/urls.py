from django.urls import path

from connguard.demo.project.app import views

urlpatterns = [
    path("health", views.health),
    path("pid", views.pid),
    path("backend", views.backend),
    path("row/<str:key>", views.row),
    path("write/<str:token>", views.write),
    path("slow/<int:ms>", views.slow),
    path("txn/<str:token>/<int:ms>", views.txn),
    path("multi/<str:token>", views.multi),
    path("pools", views.pools),
    path("async/row/<str:key>", views.async_row),
    path("async/write/<str:token>", views.async_write),
    path("async/slow/<int:ms>", views.async_slow),
]
