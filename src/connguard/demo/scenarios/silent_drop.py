"""The network silently drops idle flows."""

from __future__ import annotations

import time
from typing import Any

from connguard.demo.load import mixed_paths
from connguard.demo.registry import scenario
from connguard.demo.results import Result
from connguard.demo.runner import Harness
from connguard.demo.targets import create_database


def _netns_unavailable() -> str | None:
    """Why the silent-drop scenario cannot run on this machine (it needs network namespaces:
    root, ip and nft), or None."""
    from connguard.testing.netns import unavailable_reason

    return unavailable_reason()




@scenario(
    "silent_drop",
    "gunicorn gthread -w 2 --threads 2, CONN_MAX_AGE=600, PostgreSQL in a network namespace "
    "behind a veth pair: warm up, then the network silently drops every established "
    "connection of the app (no FIN, no RST: a NAT gateway or load balancer that forgot its "
    "idle flows), stay idle 2.5 s, send requests; new connections still work",
    defaults={"CONN_MAX_AGE": 600},
    stock_failure="requests hang on the dead connections until the client gives up (the "
                  "kernel retransmits for ~15 minutes before it reports the path dead)",
    machine=_netns_unavailable,
)
def _scenario_silent_drop(h: Harness, settings: dict[str, Any], result: Result) -> None:
    # Its own PostgreSQL, inside a namespace: the drop is made by the kernel (nftables rules
    # in the namespace matching the app's client ports), not by a proxy.
    from connguard.testing.netns import Netns, NetnsPostgresServer

    with Netns() as ns:
        server = NetnsPostgresServer(ns)
        try:
            server.start()
            database = "cg_silent_drop"
            create_database(server, database)
            (h.log_dir / "netns").mkdir(exist_ok=True)
            with Harness(server, database, log_dir=h.log_dir / "netns", quick=h.quick) as nh:
                nh.prepare(settings)
                srv = nh.gunicorn(nh.env(settings), worker_class="gthread", workers=2,
                                  threads=2)
                warm = nh.load(srv, mixed_paths(nh.size(40)), concurrency=4, timeout=10,
                               deadline=20)
                result.details["warmup"] = {"ok": warm.ok, "errors": warm.errors}
                ports = [int(row[0]) for row in nh.target.execute(
                    "SELECT client_port FROM pg_stat_activity WHERE application_name LIKE %s",
                    [f"{nh.app_name}:%"])]
                dropped = ns.drop_established(server.port, only=ports)
                result.details["connections_dropped"] = len(dropped)
                if not dropped:
                    result.notes.append("no connection of the app was open to drop")
                time.sleep(2.5)
                with nh.monitor() as mon:
                    load = nh.load(srv, mixed_paths(nh.size(40)), concurrency=4, timeout=10,
                                   deadline=15)
                result.add_load(load)
                result.peak_server_connections = mon.peak
                result.lost = nh.lost_writes(load.acked_tokens)
                result.details["latency_max"] = round(load.max_latency, 2)
                if load.not_sent:
                    result.notes.append(f"{load.not_sent} requests not sent before the deadline")
                result.details["logs_netns"] = nh.logs(1500)
        finally:
            server.cleanup()
