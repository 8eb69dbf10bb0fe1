"""The FastAGI server's settings: `ServerConfig`, the ``--allow`` list and the descriptor limit."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import resource
from dataclasses import dataclass
from pathlib import Path
from typing import Any

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class ServerConfig:
    flows_dir: Path
    store_path: str | os.PathLike[str]  # a path or a store URL (see store.open_store)
    host: str = "127.0.0.1"
    port: int = 4573
    max_calls: int = 2000
    allow: tuple[IpNetwork, ...] = ()
    env_timeout: float = 5.0
    call_timeout: float = 900.0
    max_line: int = 8192
    grace: float = 30.0
    reload_interval: float = 2.0
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    backlog: int = 1024
    #: Retry due GA4 outbox items every this many seconds (None: leave it to
    #: `consent-ivr track --flush --loop`). Leases make several servers on one store safe.
    ga4_flush: float | None = None
    #: Log the evidence chain's head (seq, hash) this often when it moved, and at shutdown: logs
    #: shipped off the host are anchors for `consent-ivr evidence verify --anchor` (0: off).
    head_log_interval: float = 3600.0


#: File descriptors the server needs besides one per call: listening and metrics sockets, the
#: store and its WAL, the writer's, gate's, tracking and flush connections, the log.
FD_RESERVE = 100


def raise_fd_limit(needed: int) -> int:
    """Raise the soft RLIMIT_NOFILE (often 1024 under systemd) towards the hard limit so that
    `needed` descriptors fit; returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return needed if soft == resource.RLIM_INFINITY else soft
    target = needed if hard == resource.RLIM_INFINITY else min(hard, needed)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def parse_allow(text: str) -> tuple[IpNetwork, ...]:
    """`10.0.0.5,192.168.1.0/24` -> networks; raises ValueError with the bad entry."""
    nets: list[IpNetwork] = []
    for part in (p.strip() for p in text.split(",")):
        if part:
            try:
                nets.append(ipaddress.ip_network(part, strict=False))
            except ValueError:
                raise ValueError(f"--allow: {part!r} is not an IP address or CIDR") from None
    return tuple(nets)


def allowed(peer: Any, allow: tuple[IpNetwork, ...]) -> bool:
    """May `peer` (a socket's peer name) connect? Anyone when `allow` is empty."""
    if not allow:
        return True
    try:
        ip = ipaddress.ip_address(peer[0])
    except (TypeError, ValueError, IndexError):
        return False
    return any(ip in net for net in allow)
