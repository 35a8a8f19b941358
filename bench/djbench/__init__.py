"""A tiny Django project for bench/django_macro.py: one app, two views, no middleware.

Everything comes from environment variables set by the benchmark script:
``CGB_DATABASE`` is the JSON of ``DATABASES["default"]`` and ``CGB_PROFILE_DIR``, when set,
profiles every request with pyinstrument (see :mod:`djbench.wsgi`).
"""
