"""A minimal Django project for the metrics/status views and ``manage.py connguard``."""
