"""The `consent-ivr` command line: the parser made of every command group's own parsers, and the
dispatch to the function a sub-command names (`set_defaults(run=...)`).

Thin glue over the library: every sub-command calls one function and maps its result to an exit
status (0 ok, 1 a tool or run failed, 2 invalid input). Bad input never shows a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TextIO

from consent_ivr.cli import demo, evidence, flowtest, graph, lint, serve, simulate, sounds, track

#: Each command group adds its sub-commands (`add_parsers`), in the order `--help` lists them.
COMMANDS = (lint, sounds, simulate, graph, flowtest, serve, track, evidence, demo)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="consent-ivr",
        description="Consent before call tracking, for Asterisk (AGI/FastAGI).",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in COMMANDS:
        group.add_parsers(sub)
    return p


def main(
    argv: list[str] | None = None, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    args = parser().parse_args(argv)
    try:
        status: int = args.run(args, out, err)
        return status
    except BrokenPipeError:  # e.g. `consent-ivr evidence export … | head`: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
