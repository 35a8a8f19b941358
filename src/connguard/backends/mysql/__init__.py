"""Drop-in replacement for ``django.db.backends.mysql`` with a connguard pool."""
