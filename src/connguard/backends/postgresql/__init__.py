"""Drop-in replacement for ``django.db.backends.postgresql`` with a connguard pool."""
