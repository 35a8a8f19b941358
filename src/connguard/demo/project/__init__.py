"""The Django project that ``connguard demo`` and the real-process tests run
(:mod:`connguard.demo.runner` drives it under gunicorn, uvicorn, Celery and manage.py).

Everything is configured from ``CGT_*`` environment variables (see settings.py), so the
same project runs on Django's stock PostgreSQL backend and on
``connguard.backends.postgresql``. It is an importable package
(``DJANGO_SETTINGS_MODULE=connguard.demo.project.settings``), so an installed connguard
runs it from anywhere; the app keeps the label ``testapp``.
"""
