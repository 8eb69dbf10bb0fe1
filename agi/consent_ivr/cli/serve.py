"""`consent-ivr serve`: the FastAGI server, from the command line and the environment."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from consent_ivr import logs
from consent_ivr.evidence.errors import StoreError
from consent_ivr.evidence.pseudonym import ConfigError, Keyring
from consent_ivr.paths import flows_dir, store_location
from consent_ivr.transports.fastagi import ServerConfig, parse_allow, serve


def add_parsers(sub: Any) -> None:
    sv = sub.add_parser("serve", help="FastAGI server: AGI(agi://host:4573/<flow>)")
    sv.add_argument("--listen", default="127.0.0.1:4573", metavar="HOST:PORT")
    sv.add_argument("--flows", type=Path, default=None, help="folder of flows (default: flows/)")
    sv.add_argument(
        "--store",
        default=None,
        metavar="URL",
        help="evidence store: an SQLite path, sqlite:///path or postgresql://user@host/db "
        "(default: $CONSENT_IVR_STORE)",
    )
    sv.add_argument(
        "--allow",
        default="",
        metavar="CIDR,...",
        help="Asterisk addresses allowed to connect; required unless listening on loopback",
    )
    sv.add_argument("--max-calls", type=int, default=2000, help="concurrent calls (default 2000)")
    sv.add_argument("--grace", type=float, default=30.0, help="drain grace on SIGTERM, seconds")
    sv.add_argument("--env-timeout", type=float, default=5.0, help="seconds for the env block")
    sv.add_argument("--call-timeout", type=float, default=900.0, help="longest call, seconds")
    sv.add_argument("--metrics", default=None, metavar="[HOST:]PORT", help="Prometheus endpoint")
    sv.add_argument(
        "--loop",
        choices=("asyncio", "uvloop"),
        default=None,
        help="event loop (default uvloop where installed, a dependency on Linux; else asyncio)",
    )
    sv.add_argument("--reload-interval", type=float, default=2.0, help="flow file poll, seconds")
    sv.add_argument(
        "--ga4-flush",
        type=float,
        default=None,
        metavar="SECONDS",
        help="retry due GA4 outbox items every SECONDS inside the server "
        "(instead of a separate `consent-ivr track --flush --loop SECONDS`)",
    )
    sv.add_argument(
        "--head-log",
        type=float,
        default=3600.0,
        metavar="SECONDS",
        help="log the evidence chain's head (seq, hash) this often when it moved, and at "
        "shutdown: anchors for `evidence verify --anchor` (0: off; default 3600)",
    )

    sv.set_defaults(run=run)


#: At exit, how long the server waits for its queued log lines to be written (a stream that
#: nobody reads would otherwise hold the exit for ever).
LOG_FLUSH_SECONDS = 5.0


def _host_port(text: str, default_host: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = default_host, text
    if not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"{text!r} is not HOST:PORT")
    return host.strip("[]") or default_host, int(port)


def run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:

    try:
        host, port = _host_port(args.listen, "127.0.0.1")
        allow = parse_allow(args.allow)
        metrics = _host_port(args.metrics, "127.0.0.1") if args.metrics else None
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        if not loopback and not allow:
            raise ValueError(
                f"listening on {host} accepts calls from the network; FastAGI has no "
                "authentication, so name the Asterisk servers with --allow"
            )
        # the current key (new records) and the retired ones (returning callers' look-ups);
        # check_region imports phonenumbers before the first call, not in one
        keyring = Keyring.from_environment()
        key = keyring.current
    except (ValueError, ConfigError) as exc:
        print(f"consent-ivr serve: {exc}", file=err)
        return 2
    store = store_location(given=args.store)
    config = ServerConfig(
        flows_dir=args.flows or flows_dir(),
        store_path=store,
        host=host,
        port=port,
        max_calls=args.max_calls,
        allow=allow,
        env_timeout=args.env_timeout,
        call_timeout=args.call_timeout,
        grace=args.grace,
        reload_interval=args.reload_interval,
        metrics_port=metrics[1] if metrics else None,
        metrics_host=metrics[0] if metrics else "127.0.0.1",
        ga4_flush=args.ga4_flush if args.ga4_flush and args.ga4_flush > 0 else None,
        head_log_interval=max(0.0, args.head_log),
    )
    try:
        queue_size = int(os.environ.get("CONSENT_IVR_LOG_QUEUE") or logs.QUEUE_SIZE)
        if queue_size < 1:
            raise ValueError
    except ValueError:
        print("consent-ivr serve: CONSENT_IVR_LOG_QUEUE: expected a whole number >= 1", file=err)
        return 2
    # the event loop never writes a log line itself: a writer thread does (logs.QueuedLines)
    logs.configure(
        err, level=os.environ.get("CONSENT_IVR_LOG_LEVEL", "info"), queue_size=queue_size
    )

    def ready(address: tuple[str, int]) -> None:
        print(f"listening on {address[0]}:{address[1]}", file=out, flush=True)

    loop_factory, problem = event_loop(args.loop)
    if problem is not None:
        print(f"consent-ivr serve: {problem}", file=err)
        return 2
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            return runner.run(serve(config, key, ready, keyring))
    except StoreError as exc:  # checked before listening: no call ever reaches a broken store
        print(f"consent-ivr serve: evidence store: {exc}", file=err)
        return 2
    except OSError as exc:
        print(f"consent-ivr serve: cannot listen on {args.listen}: {exc.strerror}", file=err)
        return 1
    finally:
        logs.shutdown(timeout=LOG_FLUSH_SECONDS)


def event_loop(
    choice: str | None,
) -> tuple[Callable[[], asyncio.AbstractEventLoop] | None, str | None]:
    """The loop factory for `--loop` (None: asyncio's own), or why it cannot be had.

    The default is uvloop where it is installed (a dependency on Linux): it costs this server
    less CPU per call than asyncio's loop (docs/performance.md). Elsewhere, asyncio.
    """
    if choice == "asyncio":
        return None, None
    try:
        import uvloop
    except ImportError:
        if choice is None:
            return None, None
        return None, "--loop uvloop, but uvloop is not installed"
    return uvloop.new_event_loop, None
