"""gunicorn config for the metrics test: the documented multiprocess set-up."""

from connguard.contrib.prometheus import gunicorn_child_exit as child_exit  # noqa: F401
