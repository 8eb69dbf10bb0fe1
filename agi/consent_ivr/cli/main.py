"""The `consent-ivr` command line: lint and validate flows, build sounds, simulate calls, serve.

Thin glue over the library: every sub-command calls one function and maps its result to an exit
status (0 ok, 1 a tool or run failed, 2 invalid input). Bad input never shows a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TextIO

DEMO_SCENARIOS: tuple[tuple[str, str, str], ...] = (
    ("accept after the notice", "1", "the caller listens, then presses 1"),
    ("decline during the notice", "2@5.0", "the caller presses 2 five seconds in"),
    ("silence", "", "the caller never presses a key"),
    ("hang-up during the notice", "h@12.0", "the caller hangs up 12 seconds in"),
)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="consent-ivr",
        description="Consent before call tracking, for Asterisk (AGI/FastAGI).",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    v = sub.add_parser(
        "validate", help="load flows as a call would (schema, audio, every lint rule, the proof)"
    )
    v.add_argument("flows", nargs="+", metavar="FLOW", help="flow id (in flows/) or path")
    v.add_argument("--store", default=None, metavar="URL", help="check R18 against this store")

    lint = sub.add_parser(
        "lint",
        help="prove flows lawful: rules R1-R19 and the whole-flow proof, every finding at once",
    )
    lint.add_argument(
        "flows", nargs="+", metavar="FLOW", help="flow id (in flows/), path, or folder of flows"
    )
    lint.add_argument(
        "--store",
        default=None,
        metavar="URL",
        help="evidence store to check R18 against (immutable versions); without it R18 is skipped",
    )
    lint.add_argument("--format", choices=("text", "json"), default="text", dest="fmt")
    lint.add_argument("--no-proof", action="store_true", help="skip the whole-flow proof")

    s = sub.add_parser("sounds", help="prompt audio")
    ssub = s.add_subparsers(dest="sounds_command", required=True, metavar="ACTION")
    b = ssub.add_parser("build", help="regenerate prompt audio with espeak-ng and sox")
    b.add_argument("flow", metavar="FLOW")
    b.add_argument("--sounds", type=Path, default=None, help="sounds folder (default: sounds/)")
    a = ssub.add_parser(
        "approve",
        help="record in the manifest that a studio recording speaks a prompt's current text (R13)",
    )
    a.add_argument("flow", metavar="FLOW")
    a.add_argument("prompts", nargs="+", metavar="PROMPT", help="prompt ids, e.g. who google")
    a.add_argument("--lang", default=None, help="only this language (default: every language)")
    a.add_argument("--sounds", type=Path, default=None, help="sounds folder (default: sounds/)")

    sim = sub.add_parser("simulate", help="run a call through the real AGI script, no phone")
    sim.add_argument("flow", metavar="FLOW")
    sim.add_argument(
        "--dtmf",
        default="",
        metavar="SCRIPT",
        help="caller events, comma-separated: 1 (press at the next input), 1@4.2 (at 4.2 s), "
        "- (stay silent through a wait), h / h@3.0 (hang up)",
    )
    sim.add_argument("--lang", default=None, help="channel language (default: the flow's first)")
    sim.add_argument("--json", action="store_true", help="print JSON instead of a transcript")
    sim.add_argument(
        "--store", type=Path, default=None, help="keep the evidence in this SQLite file"
    )

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
        default="asyncio",
        help="event loop (default asyncio; uvloop measured slower for this server, see README)",
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

    t = sub.add_parser(
        "track",
        help="tracking step upkeep: deliver the GA4 outbox, purge old tracking events "
        "(the step itself runs as AGI(consent-ivr.agi,track) from a hangup handler)",
    )
    t.add_argument("--flush", action="store_true", help="deliver due GA4 outbox items once")
    t.add_argument(
        "--loop", type=float, default=None, metavar="SECONDS", help="with --flush: repeat forever"
    )
    t.add_argument(
        "--purge",
        action="store_true",
        help="drop tracking events older than CONSENT_IVR_TRACKING_RETENTION_DAYS (default 90)",
    )
    t.add_argument("--store", default=None, metavar="URL", help="default: $CONSENT_IVR_STORE")

    from consent_ivr.cli import evidence as evidence_cli

    evidence_cli.add_parser(sub)

    d = sub.add_parser("demo", help="simulated calls of the German example flow")
    d.add_argument("--flow", default="call-tracking")
    d.add_argument("--lang", default="de")
    return p


def _load(flow: str, err: TextIO) -> object | None:
    from consent_ivr.flow.diagnostics import FlowError
    from consent_ivr.flow.loader import resolve_flow_path
    from consent_ivr.lint.check import load_checked

    try:
        return load_checked(resolve_flow_path(flow))[0]
    except FlowError as exc:
        print(str(exc), file=err)
        return None


def cmd_simulate(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from consent_ivr.cli.simulate import as_json, render_text, simulate_call
    from consent_ivr.flow.model import Flow

    flow = _load(args.flow, err)
    if not isinstance(flow, Flow):
        return 2
    lang = flow.match_language(args.lang) if args.lang else flow.default_language
    if lang is None:
        print(
            f"consent-ivr: flow {flow.id} does not serve language {args.lang!r}; "
            f"expected one of {', '.join(flow.languages)}",
            file=err,
        )
        return 2
    try:
        call = simulate_call(flow, args.dtmf, language=lang, store=args.store)
    except ValueError as exc:
        print(f"consent-ivr: --dtmf: {exc}", file=err)
        return 2
    if args.json:
        json.dump(as_json(call), out, indent=2, ensure_ascii=False)
        out.write("\n")
    else:
        print(render_text(call), file=out)
    if call.stderr:
        print(call.stderr, file=err, end="")
    return 0


def cmd_demo(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Start the FastAGI server on the defaults, place simulated calls over TCP, stop it."""
    import os
    import secrets
    import signal
    import subprocess
    import tempfile

    from consent_ivr.cli.simulate import render_text, simulate_call_fastagi
    from consent_ivr.flow.model import Flow

    flow = _load(args.flow, err)
    if not isinstance(flow, Flow):
        return 2
    lang = flow.select_language(args.lang)
    with tempfile.TemporaryDirectory(prefix="consent-ivr-demo-") as tmp:
        store = Path(tmp) / "evidence.sqlite3"
        env = dict(os.environ)
        env.setdefault("CONSENT_IVR_HMAC_KEY", "demo-" + secrets.token_hex(16))
        env.setdefault("CONSENT_IVR_LOG_LEVEL", "warning")
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "consent_ivr.cli.main",
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--store",
                str(store),
            ],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert server.stdout is not None
        ready = server.stdout.readline().strip()
        if not ready.startswith("listening on "):
            server.kill()
            print("consent-ivr demo: the FastAGI server did not start", file=err)
            return 1
        host, port = ready.rsplit(" ", 1)[1].rsplit(":", 1)
        print(
            f"FastAGI server {ready} (evidence: {store}); dialplan: "
            f"AGI(agi://{host}:{port}/{flow.id})",
            file=out,
        )
        try:
            for title, dtmf, story in DEMO_SCENARIOS:
                print(f"\n{'=' * 100}\n{title}: {story} (--dtmf '{dtmf}')\n{'=' * 100}", file=out)
                call = simulate_call_fastagi(flow, dtmf, (host, int(port)), store, language=lang)
                print(render_text(call), file=out)
        finally:
            server.send_signal(signal.SIGTERM)
            code = server.wait(timeout=60)
        print(f"\nserver stopped cleanly (exit status {code})", file=out)
        return 0 if code == 0 else 1


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


def cmd_serve(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    import asyncio
    import ipaddress
    import os

    from consent_ivr import logs
    from consent_ivr.evidence.errors import StoreError
    from consent_ivr.evidence.pseudonym import ConfigError, PseudonymKey
    from consent_ivr.paths import flows_dir, store_location
    from consent_ivr.transports.fastagi import ServerConfig, parse_allow, serve

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
        key = PseudonymKey.from_environment()
        key.check_region()  # and phonenumbers is imported before the first call, not in one
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

    if args.loop == "uvloop":
        try:
            import uvloop
        except ImportError:
            print("consent-ivr serve: --loop uvloop, but uvloop is not installed", file=err)
            return 2
        uvloop.install()
    try:
        return asyncio.run(serve(config, key, ready))
    except StoreError as exc:  # checked before listening: no call ever reaches a broken store
        print(f"consent-ivr serve: evidence store: {exc}", file=err)
        return 2
    except OSError as exc:
        print(f"consent-ivr serve: cannot listen on {args.listen}: {exc.strerror}", file=err)
        return 1
    finally:
        logs.shutdown(timeout=LOG_FLUSH_SECONDS)


def cmd_track(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    import dataclasses
    import datetime as dt
    import time

    from consent_ivr import logs
    from consent_ivr.evidence.errors import StoreError
    from consent_ivr.evidence.store import open_store
    from consent_ivr.tracking.step import Ga4Sender, TrackingConfig

    if not (args.flush or args.purge):
        print("consent-ivr track: give --flush and/or --purge", file=err)
        return 2
    try:
        config = TrackingConfig.from_environment()
    except ValueError as exc:
        print(f"consent-ivr track: {exc}", file=err)
        return 2
    if args.store:
        config = dataclasses.replace(config, store=args.store)
    logs.configure(err, level="info")
    store = open_store(config.store)
    try:
        if args.purge:
            today = dt.datetime.now(dt.UTC).date()
            before = (today - dt.timedelta(days=config.retention_days)).isoformat()
            purge = store.purge(before, kind="tracking", source="cli")
            print(f"recorded purge seq {purge['seq']}: {purge['count']} tracking events", file=out)
        if args.flush:
            if config.ga4.missing:
                print(f"consent-ivr track: GA4 not configured: set {', '.join(config.ga4.missing)}",
                      file=err)  # fmt: skip
                return 1
            sender = Ga4Sender(store, config.ga4)
            while True:
                print(f"ga4 outbox: {sender.flush().describe()}", file=out, flush=True)
                if args.loop is None:
                    break
                time.sleep(max(0.1, args.loop))
    except StoreError as exc:
        print(f"consent-ivr track: {exc}", file=err)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        store.close()
    return 0


def main(
    argv: list[str] | None = None, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    args = _parser().parse_args(argv)
    try:
        return _dispatch(args, out, err)
    except BrokenPipeError:  # e.g. `consent-ivr evidence export … | head`: not an error
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _dispatch(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.command == "validate":
        from consent_ivr.cli.lint import run_validate

        return run_validate(args.flows, out, err, store_url=args.store)
    if args.command == "lint":
        from consent_ivr.cli.lint import run_lint

        return run_lint(
            args.flows, out, err, store_url=args.store, fmt=args.fmt, run_proof=not args.no_proof
        )
    if args.command == "sounds" and args.sounds_command == "approve":
        from consent_ivr.cli.sounds import run_sounds_approve

        return run_sounds_approve(args.flow, args.prompts, args.lang, args.sounds, out, err)
    if args.command == "sounds":
        from consent_ivr.cli.sounds import run_sounds_build

        return run_sounds_build(args.flow, args.sounds, out, err)
    if args.command == "simulate":
        return cmd_simulate(args, out, err)
    if args.command == "serve":
        return cmd_serve(args, out, err)
    if args.command == "demo":
        return cmd_demo(args, out, err)
    if args.command == "track":
        return cmd_track(args, out, err)
    if args.command == "evidence":
        from consent_ivr.cli import evidence as evidence_cli

        return evidence_cli.run(args, out, err)
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
