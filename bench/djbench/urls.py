from django.urls import path

from djbench import views

urlpatterns = [
    path("health", views.health),
    path("select/<int:pk>", views.select),
    path("txn/<int:pk>", views.txn),
]
