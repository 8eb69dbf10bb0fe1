"""`consent-ivr evidence …`: the commands for people who answer data-subject requests.

show, find, export (Art. 15), withdraw (R17), purge (retention), stats, verify. Exit status: 0 ok,
1 `verify` found a broken chain, 2 an error (one line on stderr: a wrong URL, an unreachable server,
a missing key, a locked or corrupt database). A caller number is hashed with every key of the
keyring and never stored, logged or printed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import sys
from pathlib import Path
from typing import Any, TextIO

from consent_ivr.evidence.errors import StoreError
from consent_ivr.evidence.pseudonym import ConfigError, Keyring
from consent_ivr.evidence.store import open_store, purge_cutoff
from consent_ivr.flow.diagnostics import FlowError
from consent_ivr.flow.loader import load_flow
from consent_ivr.paths import flow_files, flows_dir, store_location

COMMANDS = ("show", "find", "export", "withdraw", "purge", "stats", "verify")


def add_parsers(sub: Any) -> None:
    ev = sub.add_parser("evidence", help="evidence store: data-subject requests, retention, verify")
    ev.set_defaults(run=run)
    esub = ev.add_subparsers(dest="evidence_command", required=True, metavar="ACTION")

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = esub.add_parser(name, help=help_text)
        p.add_argument(
            "--store",
            default=None,
            metavar="URL",
            help="SQLite path, sqlite:///path or postgresql://user@host/db "
            "(default: $CONSENT_IVR_STORE, else the default path)",
        )
        p.add_argument("--lock-timeout", type=float, default=5.0, help="seconds to wait for a lock")
        return p

    action("show", "one entry: a record id or a sequence number").add_argument("id", metavar="ID")
    action("find", "entries of a caller (the number is hashed, never stored)").add_argument(
        "--caller", required=True, metavar="NUMBER"
    )
    ex = action("export", "everything about a caller, with the notice they heard (Art. 15)")
    ex.add_argument("--caller", required=True, metavar="NUMBER")
    ex.add_argument("--format", choices=("json",), default="json")
    wd = action("withdraw", "record a withdrawal of consent for a caller (R17)")
    wd.add_argument("--caller", required=True, metavar="NUMBER")
    wd.add_argument(
        "--purpose",
        default=None,
        help="one consent purpose of a flow in the flows folder (default: every purpose)",
    )
    wd.add_argument(
        "--flows",
        default=None,
        metavar="DIR",
        help="the flows folder that names the purposes (default: $CONSENT_IVR_FLOWS, else flows/)",
    )
    pg = action("purge", "retention: remove decisions older than a date, record the purge")
    pg.add_argument(
        "--before", required=True, metavar="YYYY-MM-DD", help="UTC date; not after today"
    )
    pg.add_argument(
        "--dry-run", action="store_true", help="print what would be purged, change nothing"
    )
    pg.add_argument("--yes", action="store_true", help="purge without asking (needed off a tty)")
    pg.add_argument("--force", action="store_true", help="allow a cut-off date after today")
    action("stats", "counts, chain head, schema version")
    vf = action("verify", "recompute the hash chain; exit 1 at the first broken link")
    vf.add_argument(
        "--anchor",
        action="append",
        default=[],
        metavar="SEQ:HASH",
        help="a head noted earlier (from verify's ok line); the chain must still hold it "
        "(repeatable): finds entries cut off the end or a rewritten chain",
    )


def run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:

    prefix = f"consent-ivr evidence {args.evidence_command}"
    url = store_location(given=args.store)
    try:
        if args.evidence_command == "purge":
            _check_cutoff(args.before, force=args.force)
        if args.evidence_command == "withdraw" and args.purpose is not None:
            _check_purpose(args.purpose, args.flows)
        keyring = None
        if hasattr(args, "caller"):
            keyring = Keyring.from_environment()
        store = open_store(url, timeout=args.lock_timeout)
        path = getattr(store, "path", None)
        if path is not None and not path.exists():  # a typo must not create an empty store
            raise StoreError(f"no evidence store at {path}")
        try:
            return _dispatch(args, store, keyring, out, err)
        finally:
            store.close()
    except (StoreError, ConfigError, UsageError) as exc:
        print(f"{prefix}: {exc}", file=err)
        return 2


class UsageError(Exception):
    """An argument that would do harm as given; the message says what is expected."""


def _check_cutoff(before: str, *, force: bool) -> None:
    """A purge date must be a calendar date, and not after today (UTC) unless forced: a typo
    such as 2099-01-01 would otherwise purge every decision, including today's."""

    purge_cutoff(before, "decision")  # StoreError unless a calendar date YYYY-MM-DD
    today = datetime.datetime.now(datetime.UTC).date()
    if datetime.date.fromisoformat(before) > today and not force:
        raise UsageError(
            f"--before {before} is in the future (today is {today}, UTC): it would purge every"
            f" decision up to that day, today's too; give a date up to {today}, or add --force"
        )


def known_purposes(flows: str | None) -> tuple[str, set[str], list[str]]:
    """(the flows folder, the consent purposes of its flows, the files that did not load)."""

    folder = Path(flows) if flows else flows_dir()
    known: set[str] = set()
    failed: list[str] = []
    try:
        files = [Path(p) for p in flow_files(str(folder))]
    except OSError:
        files = []
    for path in files:
        try:
            flow = load_flow(path, check_audio=False)
        except FlowError:
            failed.append(path.name)
            continue
        known.update(p.id for p in flow.consent_purposes)
    return str(folder), known, failed


def _check_purpose(purpose: str, flows: str | None) -> None:
    """A withdrawal names a consent purpose some flow asks about (a typo would record a
    withdrawal that closes no gate)."""
    folder, known, failed = known_purposes(flows)
    if purpose in known:
        return
    listed = ", ".join(sorted(known)) or "none"
    note = f"; {len(failed)} flow file(s) did not load: {', '.join(failed)}" if failed else ""
    raise UsageError(
        f"--purpose {purpose!r}: no flow in {folder} has this consent purpose; expected one of:"
        f" {listed} (or no --purpose: every purpose){note}"
    )


def _describe_purge(preview: dict[str, Any]) -> str:
    """`would purge N decisions created A to B (granted x, ...)`, and what stays."""
    count = preview["count"]
    text = f"would purge {count} decisions created before {preview['before']}"
    if count:
        order = ["granted", "declined", "partial", "none", "error"]
        statuses = sorted(preview["by_status"].items(), key=lambda kv: _rank(order, kv[0]))
        text = f"would purge {count} decisions created {preview['oldest']} to {preview['newest']}"
        if statuses:
            text += " (" + ", ".join(f"{k} {v}" for k, v in statuses) + ")"
        text += ": their bodies and pseudonyms go, their hashes stay in the chain"
    kept = preview["kept"]
    if kept:
        text += "; kept: " + ", ".join(f"{v} {k}" for k, v in kept.items())
    return text


def _rank(order: list[str], word: str) -> tuple[int, str]:
    return (order.index(word) if word in order else len(order), word)


def _confirmed(prompt: str, err: TextIO) -> bool:
    """Ask on the terminal (stdin); True only for yes."""
    print(prompt, end="", file=err, flush=True)
    answer = sys.stdin.readline()
    return answer.strip().lower() in ("y", "yes")


def _dispatch(args: argparse.Namespace, store: Any, keyring: Any, out: TextIO, err: TextIO) -> int:

    command = args.evidence_command
    if command == "show":
        entry = store.entry(args.id)
        if entry is None:
            raise StoreError(f"no entry with record id or seq {args.id!r}")
        _dump(entry.as_json(), out)
        return 0
    if command in ("find", "export", "withdraw"):
        # the E.164 form under every key, and the legacy forms records before it were hashed in
        pairs = keyring.lookup(args.caller)
        pseudonyms = keyring.pseudonyms(args.caller)
        if not pairs:
            raise StoreError("--caller: not a phone number (no digits)")
        if command == "withdraw":
            # the E.164 pseudonym under every key, and each older form some entry was hashed in:
            # a withdrawal counts against grants made before it, which are all in the store now
            found = {e.caller_pseudonym for e in store.entries_for(p for _k, p in pairs)}
            chosen = list(pseudonyms.items())
            chosen += [pair for pair in pairs if pair[1] in found and pair not in chosen]
            recorded = store.withdraw(chosen, args.purpose)
            for item in recorded:
                print(
                    f"recorded withdrawal seq {item['seq']}: purpose {item['purpose']}, "
                    f"key {item['caller_key_id']}, at {item['created_at']}, hash {item['hash']}",
                    file=out,
                )
            return 0
        entries = store.entries_for(p for _k, p in pairs)
        if command == "find":
            if not entries:
                print(f"no entries for this caller (keys tried: {', '.join(pseudonyms)})", file=out)
            for e in entries:
                print(_summary(e), file=out)
            return 0
        flows: dict[str, Any] = {}
        for e in entries:
            sha = ((e.body or {}).get("flow") or {}).get("sha256")
            if sha and sha not in flows:
                flows[sha] = store.flow_content(sha)
        _dump(
            {
                "keys_tried": list(pseudonyms),
                "caller_pseudonyms": pseudonyms,
                # the same number's other forms (records written before numbers were E.164)
                "legacy_pseudonyms_tried": [p for _k, p in pairs if p not in pseudonyms.values()],
                "entries": [e.as_json() for e in entries],
                "flows": flows,
            },
            out,
        )
        return 0
    if command == "purge":
        preview = store.purge_preview(args.before)
        if args.dry_run:
            print(f"dry run: {_describe_purge(preview)}; nothing was changed", file=out)
            return 0
        if not args.yes:
            if not sys.stdin.isatty():
                raise UsageError(
                    "give --yes to purge (no terminal to ask on); see what would go with"
                    " --dry-run; nothing was purged"
                )
            print(_describe_purge(preview), file=out, flush=True)
            if not _confirmed("purge them? type yes to go on: ", err):
                raise UsageError("not confirmed; nothing was purged")
        purge = store.purge(args.before)
        print(
            f"recorded purge seq {purge['seq']}: {purge['count']} decisions before "
            f"{purge['before']} lost their bodies and pseudonyms; hash {purge['hash']}",
            file=out,
        )
        return 0
    if command == "stats":
        _dump(store.stats(), out)
        return 0
    if command == "verify":
        try:
            anchors = _anchors(args.anchor)
        except ValueError as exc:
            print(f"consent-ivr evidence verify: {exc}", file=err)
            return 2
        result = store.verify(anchors=anchors)
        print(result.describe(), file=out if result.ok else err)
        return 0 if result.ok else 1
    raise AssertionError(command)


def _anchors(texts: list[str]) -> dict[int, str]:
    """`SEQ:HASH` options as seq -> hash; ValueError names the bad one and what was expected."""
    out: dict[int, str] = {}
    for text in texts:
        seq, _, digest = text.strip().partition(":")
        digest = digest.strip().lower()
        if not seq.strip().isdigit() or int(seq) < 1 or not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise ValueError(
                f"--anchor {text!r}: expected SEQ:HASH, a sequence number and the 64 hex digits"
                " of its hash, as `verify` prints them (head seq N hash H)"
            )
        if out.get(int(seq), digest) != digest:
            raise ValueError(f"--anchor: seq {int(seq)} is given twice with different hashes")
        out[int(seq)] = digest
    return out


def _summary(e: Any) -> str:
    body = e.body or {}
    if e.kind == "decision":
        detail = f"record {e.record_id} status {body.get('status', '(purged)')}"
        detail += f" flow {(body.get('flow') or {}).get('id', '?')}"
    elif e.kind == "withdrawal":
        detail = f"purpose {e.purpose}"
    else:
        detail = ""
    return f"seq {e.seq}  {e.created_at}  {e.kind:<10}  {detail}".rstrip()


def _dump(data: Any, out: TextIO) -> None:
    json.dump(data, out, indent=2, ensure_ascii=False)
    out.write("\n")
