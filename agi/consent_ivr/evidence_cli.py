"""`consent-ivr evidence …`: the commands for people who answer data-subject requests.

show, find, export (Art. 15), withdraw (R17), purge (retention), stats, verify. Exit status: 0 ok,
1 `verify` found a broken chain, 2 an error (one line on stderr: a wrong URL, an unreachable server,
a missing key, a locked or corrupt database). A caller number is hashed with every key of the
keyring and never stored, logged or printed.
"""

from __future__ import annotations

import argparse
import json
import re
from typing import Any, TextIO

COMMANDS = ("show", "find", "export", "withdraw", "purge", "stats", "verify")


def add_parser(sub: Any) -> None:
    ev = sub.add_parser("evidence", help="evidence store: data-subject requests, retention, verify")
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
    wd.add_argument("--purpose", default=None, help="one purpose (default: every purpose)")
    action("purge", "retention: remove decisions older than a date, record the purge").add_argument(
        "--before", required=True, metavar="YYYY-MM-DD"
    )
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
    from consent_ivr.evidence import StoreError
    from consent_ivr.paths import store_location
    from consent_ivr.pseudonym import ConfigError, Keyring
    from consent_ivr.store import open_store

    prefix = f"consent-ivr evidence {args.evidence_command}"
    url = store_location(given=args.store)
    try:
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
    except (StoreError, ConfigError) as exc:
        print(f"{prefix}: {exc}", file=err)
        return 2


def _dispatch(args: argparse.Namespace, store: Any, keyring: Any, out: TextIO, err: TextIO) -> int:
    from consent_ivr.evidence import StoreError

    command = args.evidence_command
    if command == "show":
        entry = store.entry(args.id)
        if entry is None:
            raise StoreError(f"no entry with record id or seq {args.id!r}")
        _dump(entry.as_json(), out)
        return 0
    if command in ("find", "export", "withdraw"):
        pseudonyms = keyring.pseudonyms(args.caller)
        if not pseudonyms:
            raise StoreError("--caller: not a phone number (no digits)")
        if command == "withdraw":
            recorded = store.withdraw(pseudonyms, args.purpose)
            for item in recorded:
                print(
                    f"recorded withdrawal seq {item['seq']}: purpose {item['purpose']}, "
                    f"key {item['caller_key_id']}, at {item['created_at']}, hash {item['hash']}",
                    file=out,
                )
            return 0
        entries = store.entries_for(pseudonyms.values())
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
                "entries": [e.as_json() for e in entries],
                "flows": flows,
            },
            out,
        )
        return 0
    if command == "purge":
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
