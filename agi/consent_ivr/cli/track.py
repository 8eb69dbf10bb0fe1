"""`consent-ivr track`: upkeep of the tracking step — deliver the GA4 outbox, purge old events."""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import time
from typing import Any, TextIO

from consent_ivr import logs
from consent_ivr.evidence.errors import StoreError
from consent_ivr.evidence.store import open_store
from consent_ivr.tracking.step import Ga4Sender, TrackingConfig


def add_parsers(sub: Any) -> None:
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

    t.set_defaults(run=run)


def run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:

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
