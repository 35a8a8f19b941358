"""Django database backends (``ENGINE: "connguard.backends.postgresql"``)."""
