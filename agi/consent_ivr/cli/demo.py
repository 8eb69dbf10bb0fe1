"""`consent-ivr demo`: start the FastAGI server, place simulated calls over TCP, stop it.

Each call prints as its transcript, its channel variables and a one-line summary of its evidence
record (`--evidence`: the whole record).
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, TextIO

from consent_ivr.cli.simulate import (
    SIMULATED_CALLER,
    flow_and_language,
    simulate_call_fastagi,
    simulation_env,
)
from consent_ivr.cli.transcript import render_text

#: (title, --dtmf script, what the caller does, caller number): the story must be what the
#: transcript shows (tests/test_cli.py checks each against its call); each caller has its own
#: number, and the first calls again (a returning caller: the reminder instead of the first
#: layer, R18).
DEMO_SCENARIOS: tuple[tuple[str, str, str, str], ...] = (
    (
        "accept after the notice",
        "1",
        "the caller hears the whole notice, then presses 1 as the question begins",
        SIMULATED_CALLER,
    ),
    ("decline during the notice", "2@5.0", "the caller presses 2 five seconds in", "+49891234568"),
    ("silence", "", "the caller never presses a key", "+49891234569"),
    ("hang-up during the notice", "h@12.0", "the caller hangs up 12 seconds in", "+49891234570"),
    (
        "a returning caller",
        "",
        "the first caller calls again and hears the reminder of their consent",
        SIMULATED_CALLER,
    ),
)


def add_parsers(sub: Any) -> None:
    d = sub.add_parser("demo", help="simulated calls of the German example flow")
    d.add_argument("--flow", default="call-tracking")
    d.add_argument(
        "--lang", default=None, help="a language the flow serves (default: the flow's first)"
    )
    d.add_argument(
        "--evidence",
        action="store_true",
        help="print each call's whole evidence record (default: a one-line summary)",
    )
    d.set_defaults(run=run)


def run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Start the FastAGI server on the defaults, place simulated calls over TCP, stop it."""
    chosen = flow_and_language(args.flow, args.lang, err, "consent-ivr demo")
    if chosen is None:
        return 2
    flow, lang = chosen
    with tempfile.TemporaryDirectory(prefix="consent-ivr-demo-") as tmp:
        store = Path(tmp) / "evidence.sqlite3"
        env = simulation_env("demo")
        env.setdefault("CONSENT_IVR_LOG_LEVEL", "warning")
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "consent_ivr.cli",
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
            for title, dtmf, story, caller in DEMO_SCENARIOS:
                print(f"\n=== {title}: {story} (--dtmf '{dtmf}')", file=out)
                call = simulate_call_fastagi(
                    flow, dtmf, (host, int(port)), store, language=lang, caller=caller
                )
                shown = "full" if args.evidence else "summary"
                print(render_text(call, evidence=shown), file=out)
        finally:
            server.send_signal(signal.SIGTERM)
            code = server.wait(timeout=60)
        print(f"\nserver stopped cleanly (exit status {code})", file=out)
        return 0 if code == 0 else 1
