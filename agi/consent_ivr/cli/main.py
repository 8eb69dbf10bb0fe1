"""The `consent-ivr` command line: the parser made of every command group's own parsers, and the
dispatch to the function a sub-command names (`set_defaults(run=...)`).

Thin glue over the library: every sub-command calls one function and maps its result to an exit
status (0 ok, 1 a tool or run failed, 2 invalid input). Bad input never shows a traceback.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import sys
from collections.abc import Sequence
from typing import TextIO

from consent_ivr.cli import (
    demo,
    evidence,
    flowtest,
    graph,
    install,
    lint,
    serve,
    simulate,
    sounds,
    track,
)

#: Each command group adds its sub-commands (`add_parsers`), in the order `--help` lists them.
COMMANDS = (lint, sounds, simulate, graph, flowtest, serve, track, evidence, demo, install)

#: Options whose value may start with '-' (a --dtmf script such as `-,7,1`), per sub-command.
#: argparse takes such a value for an option and fails ("expected one argument");
#: `glue_dash_values` joins it to its option (`--dtmf=-,7,1`) before parsing.
DASH_VALUES: dict[str, frozenset[str]] = {"simulate": frozenset({"--dtmf"})}


def version() -> str:
    """The installed distribution's version (`pip install -e .` installs it)."""
    try:
        return importlib.metadata.version("consent-ivr")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed: pip install -e .)"


def glue_dash_values(argv: Sequence[str]) -> list[str]:
    """`argv` with each value that starts with '-' of an option in `DASH_VALUES` joined to its
    option (`--dtmf -,7,1` -> `--dtmf=-,7,1`), so that argparse reads it as the value. Only
    after that option of that sub-command, and never after `--`; a value starting with `--` is
    left alone (it is the next option: argparse then says the value is missing)."""
    args = list(argv)
    command = next((a for a in args if not a.startswith("-")), None)
    options = DASH_VALUES.get(command or "", frozenset())
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            return out + args[i:]
        following = args[i + 1] if i + 1 < len(args) else ""
        if arg in options and following.startswith("-") and not following.startswith("--"):
            out.append(f"{arg}={following}")
            i += 2
            continue
        out.append(arg)
        i += 1
    return out


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="consent-ivr",
        description="Consent before call tracking, for Asterisk (AGI/FastAGI).",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in COMMANDS:
        group.add_parsers(sub)
    return p


def main(
    argv: list[str] | None = None, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    args = parser().parse_args(glue_dash_values(sys.argv[1:] if argv is None else argv))
    try:
        status: int = args.run(args, out, err)
        return status
    except BrokenPipeError:  # e.g. `consent-ivr evidence export … | head`: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
