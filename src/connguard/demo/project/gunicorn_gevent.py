"""gunicorn config for ``-k gevent`` with psycopg2: make psycopg2 cooperative via psycogreen.

Usage: ``gunicorn -k gevent -c <path of this file> connguard.demo.project.wsgi`` (a path:
``-c python:<module>`` would import connguard, Django and asgiref in the master before
gevent's monkey-patching)
(with ``CGT_DB_DRIVER=psycopg2``; psycopg 3 needs no patch under gevent).
"""

worker_class = "gevent"


def post_fork(server, worker):
    try:
        from psycogreen.gevent import patch_psycopg
    except ImportError:  # pragma: no cover - psycogreen missing
        server.log.warning("psycogreen not installed: psycopg2 will block the gevent hub")
        return
    patch_psycopg()
    server.log.info("psycogreen: psycopg2 patched for gevent in worker %s", worker.pid)
