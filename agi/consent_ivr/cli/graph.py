"""`consent-ivr graph FLOW [-o FILE] [--lang L]`: the picture of a flow, derived from the engine
(`consent_ivr.lint.flowgraph`) and drawn by `consent_ivr.lint.flowdraw`: SVG or PNG through
Graphviz's ``dot``, DOT or Mermaid text. Without ``-o`` the DOT text goes to stdout.
"""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path
from typing import Any, TextIO

import graphviz

from consent_ivr.cli.simulate import UnservedLanguage, pick_language
from consent_ivr.flow.diagnostics import FlowError
from consent_ivr.flow.loader import load_source, resolve_flow_path
from consent_ivr.lint.flowdraw import to_dot, to_mermaid
from consent_ivr.lint.flowgraph import GraphTooLarge, derive

#: `-o` suffix -> what is written.
FORMATS = {".svg": "svg", ".png": "png", ".dot": "dot", ".mmd": "mermaid"}


def add_parsers(sub: Any) -> None:
    g = sub.add_parser(
        "graph", help="draw a flow: its prompts and every way the engine moves between them"
    )
    g.add_argument("flow", metavar="FLOW")
    g.add_argument(
        "-o",
        "--output",
        type=Path,
        default=None,
        metavar="FILE",
        help="write FILE: .svg or .png (Graphviz's dot draws it), .dot (Graphviz text) or .mmd"
        " (Mermaid text); default: the DOT text on stdout",
    )
    g.add_argument(
        "--lang", default=None, help="a language the flow serves (default: the flow's first)"
    )
    g.set_defaults(run=run)


def _first_error(exc: FlowError) -> str:
    errors = exc.errors or exc.diagnostics
    more = f" (and {len(errors) - 1} more: consent-ivr lint shows them)" if len(errors) > 1 else ""
    return f"{errors[0]}{more}"


def run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    output: Path | None = args.output
    fmt = "dot" if output is None else FORMATS.get(output.suffix.lower())
    if fmt is None:
        assert output is not None
        print(
            f"consent-ivr graph: -o {output}: unknown format {output.suffix or '(no suffix)'!r};"
            f" expected one of {', '.join(FORMATS)}",
            file=err,
        )
        return 2
    try:
        loaded = load_source(resolve_flow_path(args.flow))
        if loaded.flow is None:
            raise FlowError(loaded.diagnostics)
        flow = loaded.flow
        lang = pick_language(flow, args.lang)
    except FlowError as exc:
        print(f"consent-ivr graph: {_first_error(exc)}", file=err)
        return 2
    except UnservedLanguage as exc:
        print(f"consent-ivr graph: {exc}", file=err)
        return 2
    try:
        picture = derive(flow, lang)
    except GraphTooLarge as exc:
        print(f"consent-ivr graph: {exc}", file=err)
        return 1
    if not picture.proof_holds:
        print(f"consent-ivr graph: note: the proof does not hold for {flow.id}", file=err)
    try:
        if fmt == "mermaid":
            data = to_mermaid(picture).encode()
        elif fmt == "dot":
            data = to_dot(picture).source.encode()
        else:
            data = to_dot(picture).pipe(format=fmt)
    except graphviz.ExecutableNotFound:
        print(
            f"consent-ivr graph: {fmt.upper()} needs Graphviz's dot program, which is not"
            " installed (Debian: apt-get install graphviz; or write .dot or .mmd)",
            file=err,
        )
        return 1
    except (subprocess.CalledProcessError, OSError) as exc:
        print(f"consent-ivr graph: Graphviz's dot failed: {exc}", file=err)
        return 1
    if output is None:
        out.write(data.decode())
        return 0
    try:
        output.write_bytes(data)
    except OSError as exc:
        print(f"consent-ivr graph: cannot write {output}: {exc.strerror or exc}", file=err)
        return 1
    nodes = len(picture.nodes)
    print(f"wrote {output}: {nodes} nodes, {len(picture.edges)} arrows", file=out)
    return 0
