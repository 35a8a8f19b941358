"""The text renderer: the report as lines, coloured with rich on a terminal."""

from __future__ import annotations

import sys
from typing import Any

from connguard.doctor.client_tcp import OS_RETRANSMIT, client_tcp, dead_path_bound
from connguard.doctor.model import (
    Database,
    MySQLFacts,
    Pooler,
    PostgresFacts,
    Processes,
    Report,
)
from connguard.doctor.text import about, dur, plural


def report_lines(report: Report) -> list[tuple[str, str]]:
    """The text report as ``(line, style)``; style is a severity or ``""``/``"head"``."""
    lines: list[tuple[str, str]] = []
    add = lines.append
    for server in report.servers:
        add((f"Server {server.address}", "head"))
        if server.error:
            add((f"  unreachable: {server.error}", "error"))
            continue
        if isinstance(server, MySQLFacts):
            lines += _mysql_lines(server)
        else:
            lines += _postgres_lines(server)
        add((f"  in front: {_describe_pooler(server.pooler)}", ""))
    add(("Processes", "head"))
    add((f"  {describe_processes(report.processes)}", ""))
    add(("Databases", "head"))
    width = max((len(d.alias) for d in report.databases), default=0)
    for db in report.databases:
        target = f"{db.server.address}/{db.server.dbname}" if db.server else "?"
        add((f"  {db.alias:<{width}}  {db.describe()} -> {target}", ""))
        tcp = describe_client_tcp(db) if db.server is None or db.server.via_tcp else None
        if tcp is not None:
            add((f"  {'':<{width}}  client TCP: {tcp}", ""))
    for need in report.demands:
        if need.formula:
            add(
                (
                    f"  at most {need.total} connections to {need.server} "
                    f"({need.formula}); it accepts {need.limit}",
                    "",
                )
            )
    for note in report.notes:
        add((f"  note: {note}", ""))
    add(("Findings", "head"))
    if not report.findings:
        add(("  none", ""))
    for f in report.findings:
        add((f"  {f.severity.upper():<7} {f.id}  {f.message}", f.severity))
        add((f"{'':17}fix: {f.fix}", ""))
    counts = [plural(n, s, s + "s" if s != "info" else s) for s, n in report.counts().items()]
    add((", ".join(counts), "head"))
    return lines


def _postgres_lines(server: PostgresFacts) -> list[tuple[str, str]]:
    lines: list[tuple[str, str]] = []
    add = lines.append
    role = "standby in recovery" if server.in_recovery else "primary"
    access = "read-only" if server.in_recovery or server.default_read_only else "read-write"
    add((f"  PostgreSQL {server.version}, {role}, {access}", ""))
    reserved = f"superuser {server.superuser_reserved}"
    if server.version_num >= 160000:
        reserved += f", reserved_connections {server.reserved}"
    add(
        (
            f"  max_connections {server.max_connections}, reserved "
            f"{server.superuser_reserved + server.reserved} ({reserved}): "
            f"{server.budget} for applications",
            "",
        )
    )
    add(
        (
            f"  idle_session_timeout {dur(server.idle_session_timeout)}, "
            "idle_in_transaction_session_timeout "
            f"{dur(server.idle_in_transaction_session_timeout)}, "
            f"statement_timeout {dur(server.statement_timeout)}",
            "",
        )
    )
    if server.via_tcp:
        add(
            (
                f"  tcp_keepalives idle {server.tcp_keepalives_idle} s, interval "
                f"{server.tcp_keepalives_interval} s, count {server.tcp_keepalives_count}",
                "",
            )
        )
    return lines


def _mysql_lines(server: MySQLFacts) -> list[tuple[str, str]]:
    lines: list[tuple[str, str]] = []
    add = lines.append
    flag = "super_read_only" if server.super_read_only else "read_only"
    access = (
        f"read-only ({flag} ON)" if server.read_only or server.super_read_only else "read-write"
    )
    comment = f" ({server.version_comment})" if server.version_comment else ""
    add((f"  {server.product} {server.version}{comment}, {access}", ""))
    whose = "the account's own" if server.account_limit else "every account's"
    limit = server.max_user_connections or "0 (none)"
    add(
        (
            f"  max_connections {server.max_connections}, max_user_connections {limit}"
            f"{f' ({whose})' if server.max_user_connections else ''}: "
            f"{server.limit} for the application",
            "",
        )
    )
    client = "an interactive client's" if server.interactive else "the application's"
    add(
        (
            f"  wait_timeout {dur(server.wait_timeout)}, interactive_timeout "
            f"{dur(server.interactive_timeout)}: {client} sessions close after "
            f"{dur(server.session_wait_timeout)} idle",
            "",
        )
    )
    return lines


def describe_processes(model: Processes) -> str:
    if model.server == "unknown":
        text = "unknown: 1 process with 1 thread assumed"
    else:
        if model.gevent:
            each = f"{model.worker_connections} greenlets ({model.worker_class})"
        elif model.asgi:
            each = "ASGI (requests in flight not bounded)"
        else:
            each = f"{plural(model.threads, 'thread')} ({model.worker_class})"
        text = (
            f"{plural(model.workers, 'worker')} x {each}, preload "
            f"{'on' if model.preload else 'off'} (from {model.source})"
        )
    if model.celery:
        text += f"; Celery: {plural(model.celery, 'process', 'processes')}"
        text += f" (from {model.celery_source})" if model.celery_source else ""
    return text + f"; {plural(model.hosts, 'host')}"


def describe_client_tcp(db: Database) -> str | None:
    tcp = client_tcp(db)
    if tcp is None:
        return None
    values, mine = tcp
    if not values["keepalives"]:
        keepalive = "keepalives off"
    else:
        keepalive = (
            f"keepalive after {values['keepalives_idle']} s idle, every "
            f"{values['keepalives_interval']} s, {values['keepalives_count']} probes"
        )
    user_timeout = values["tcp_user_timeout"]
    unacked = (
        f"tcp_user_timeout {dur(user_timeout / 1000)}" if user_timeout else ("no tcp_user_timeout")
    )
    if db.mode == "connguard pool":
        rest = "connguard's defaults"
    elif db.mysql:
        rest = "mysqlclient's and the OS's, as the doctor's own connection has them"
    else:
        rest = "libpq's and the OS's defaults"
    source = f"set: {', '.join(mine)}; {rest} for the rest" if mine else rest
    bound = dead_path_bound(values)
    found = (
        "a silently dropped connection is never found while idle"
        if bound is None
        else f"a silently dropped connection is found after {about(bound)}"
    )
    if not user_timeout:
        found += f" ({about(OS_RETRANSMIT)} with a statement unacknowledged)"
    return f"{keepalive}; {unacked} ({source}): {found}"


def _describe_pooler(pooler: Pooler | None) -> str:
    if pooler is None:
        return "nothing (direct connection)"
    if pooler.kind == "proxy":
        return f"a proxy or port mapping ({pooler.detail})"
    if pooler.kind in ("proxysql", "maxscale"):
        return f"{'ProxySQL' if pooler.kind == 'proxysql' else 'MaxScale'} ({pooler.detail})"
    return (
        f"PgBouncer {pooler.version}, pool_mode {pooler.pool_mode}, max_client_conn "
        f"{pooler.max_client_conn}, pool_size {pooler.pool_size}, client_idle_timeout "
        f"{dur(pooler.client_idle_timeout)}"
    )


_STYLES = {"error": "bold red", "warning": "yellow", "info": "cyan", "head": "bold"}


def render(report: Report, color: bool = True, file: Any = None) -> None:
    """Print the report: rich colours on a terminal (when rich is installed), else plain."""
    out = file or sys.stdout
    lines = report_lines(report)
    if color and out.isatty():
        try:
            from rich.console import Console
            from rich.text import Text
        except ImportError:
            pass
        else:
            console = Console(file=out, highlight=False)
            for text, style in lines:
                console.print(Text(text, style=_STYLES.get(style, "")))
            return
    for text, _ in lines:
        print(text, file=out)
