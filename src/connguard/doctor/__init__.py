"""``connguard doctor``: a deployment's connection risks, each with its numbers and its fix.

Three inputs, each optional but the server:

- **the databases** (:mod:`.databases`): Django's ``DATABASES`` (``manage.py connguard
  doctor``, or ``--settings``), or one ``--dsn`` with the pool settings given as options;
- **the process model** (:mod:`.processes`): gunicorn's config file (``--gunicorn-config``,
  else ``./gunicorn.conf.py`` as gunicorn itself finds it; executed in a namespace of its
  own), ``GUNICORN_CMD_ARGS``, ``WEB_CONCURRENCY``; with Django's settings, ASGI
  (``ASGI_APPLICATION`` without ``WSGI_APPLICATION``, then ``UVICORN_WORKERS``) and Celery
  (``CELERY_WORKER_CONCURRENCY``, or its default when ``CELERY_BROKER_URL`` is set); the
  ``CELERY_WORKER_CONCURRENCY`` / ``CELERYD_CONCURRENCY`` environment variables; and the
  options (``--workers``, ``--threads``, ``--preload``, ``--asgi``, ``--gevent``,
  ``--celery-concurrency``, ``--hosts``), which win (see
  :func:`.processes.detect_processes`);
- **the live server** (:mod:`.server`: one inspector per database, chosen by the conninfo),
  read over one plain connection: for PostgreSQL (:mod:`.postgresql`, psycopg 3) version,
  connection budget, timeouts, TCP keepalives, read-only / recovery, and what sits in front
  of it (a PgBouncer is recognised by its admin console, :mod:`.pgbouncer`, whenever the
  server reports another address or port than the one connected to); for MySQL and MariaDB
  (:mod:`.mysql`, mysqlclient) the idle timeouts the application's sessions get, the
  connection limits, ``read_only`` and a proxy in front.

Inspectors gather facts (:mod:`.model`); the rules turn them into findings (:mod:`.findings`:
a stable id, a severity, a message with the numbers and a fix): the rules every database
shares (:mod:`.rules`) and each database's own (:mod:`.rules_postgresql`,
:mod:`.rules_mysql`), applied by :mod:`.diagnose`; the renderers print them
(:mod:`.render_text`, :mod:`.render_json`); :mod:`.cli` wires it to the command line. Exit
status: 0 when nothing is above the threshold, 1 with errors (or warnings under
``--strict``), 2 when a server cannot be reached.
"""
