"""The call-tracking step: a fixed field list on legitimate interest, GA4 only behind the gate.

Run after the call from a hangup handler (``AGI(consent-ivr.agi,track)`` or
``AGI(agi://host:4573/track)``), in dead mode: it only reads channel variables (GET VARIABLE /
GET FULL VARIABLE) and sets two result variables (SET VARIABLE). docs/tracking.md is the reference.

1. Always (BayLDA's list, no consent needed, R10/R15): one append-only chain entry
   ``kind="tracking"`` with call start (UTC), duration, tracking/called/forwarding number,
   answered/missed, the caller only as the keyed pseudonym (+ key id), and for an existing business
   customer the contact person and legal form from the operator's customer directory (CSV). No
   other field, no lookup elsewhere, nothing that links calls beyond the pseudonym.
2. Only when the gate for ``ga_linkage`` is open (`gate.check_gate`): a GA4 Measurement Protocol
   event with the allow-listed parameters `GA4_PARAMS`, queued in the store's outbox in the same
   transaction as the tracking entry, then delivered by `Ga4Sender` (one immediate attempt, then
   ``consent-ivr track --flush`` with exponential backoff). The sender checks the gate again before
   every attempt; a withdrawal cancels the item and the cancellation is a chain entry.

This module reads the channel and sets the result variables, for both transports (`track_sync`,
`track_async`). The parts live next to it: `config` (the settings), `directory` (the customer
CSV), `entry` (the tracking entry: `run_tracking`), `ga4` (the event, its request and
`Ga4Sender`), `workers` (a server's tracking threads). It is also the tracking API that
docs/tracking.md shows: `__all__` re-exports the names its callers use.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence

from consent_ivr.evidence.pseudonym import PseudonymKey
from consent_ivr.logs import Logger
from consent_ivr.protocol.codec import Response
from consent_ivr.protocol.session import Command
from consent_ivr.tracking.config import Ga4Config, TrackingConfig
from consent_ivr.tracking.directory import DirectoryError, load_directory
from consent_ivr.tracking.entry import TrackingResult, run_tracking
from consent_ivr.tracking.ga4 import FlushReport, Ga4Sender, build_ga4_request
from consent_ivr.tracking.workers import TrackWorkers

__all__ = [
    "ARG_FIELDS",
    "READS",
    "RESULT_VARIABLES",
    "DirectoryError",
    "FlushReport",
    "Ga4Config",
    "Ga4Sender",
    "TrackWorkers",
    "TrackingConfig",
    "TrackingResult",
    "apply_args",
    "build_ga4_request",
    "load_directory",
    "read_commands",
    "response_value",
    "run_tracking",
    "track_async",
    "track_sync",
]


# ---------------------------------------------------------------------------- channel reads
#: (field, command words, variable or expression). Dead mode allows these (and SET VARIABLE).
READS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("dial_status", ("GET", "VARIABLE"), "DIALSTATUS"),
    ("cdr_start", ("GET", "FULL", "VARIABLE"), "${CDR(start,u)}"),
    ("cdr_duration", ("GET", "FULL", "VARIABLE"), "${CDR(duration)}"),
    ("tracking_number", ("GET", "VARIABLE"), "TRACKING_NUMBER"),
    ("tracking_number_id", ("GET", "VARIABLE"), "TRACKING_NUMBER_ID"),
    ("called_number", ("GET", "VARIABLE"), "CALLED_NUMBER"),
    ("forward_number", ("GET", "VARIABLE"), "FORWARD_NUMBER"),
    ("ga_client_id", ("GET", "VARIABLE"), "GA_CLIENT_ID"),
    ("record_id", ("GET", "VARIABLE"), "CONSENT_RECORD_ID"),
    ("ga_linkage", ("GET", "VARIABLE"), "CONSENT_GA_LINKAGE"),
    ("ads_user_data", ("GET", "VARIABLE"), "CONSENT_ADS_USER_DATA"),
    ("ads_personalization", ("GET", "VARIABLE"), "CONSENT_ADS_PERSONALIZATION"),
)
#: AGI arguments after `track` may set these fields as name=value (they win over variables).
ARG_FIELDS = frozenset(
    {"tracking_number", "tracking_number_id", "called_number", "forward_number", "ga_client_id"}
)
RESULT_VARIABLES = ("TRACKING_STATUS", "TRACKING_GA4")


def read_commands() -> list[tuple[str, Command]]:
    return [(name, Command(words, (expr,))) for name, words, expr in READS]


def response_value(resp: Response | None) -> str | None:
    """The value of a GET (FULL) VARIABLE answer; None when unset, dead or failed."""
    if resp is None or not resp.ok or resp.result != "1" or resp.data is None:
        return None
    return resp.data


def apply_args(values: dict[str, str | None], args: Sequence[str]) -> list[str]:
    """Apply ``name=value`` AGI arguments; returns the ones that were ignored."""
    ignored = []
    for arg in args:
        name, sep, value = arg.partition("=")
        if sep and name.strip() in ARG_FIELDS:
            values[name.strip()] = value.strip() or None
        elif arg.strip():
            ignored.append(arg)
    return ignored


# ----------------------------------------------------------------------------- entry points
def track_sync(
    exchange: Callable[[Command], Response | None],
    env: Mapping[str, str],
    args: Sequence[str],
    key: PseudonymKey,
    config: TrackingConfig,
    log: Logger | None = None,
) -> TrackingResult:
    """Process AGI: read the variables, run the step, set TRACKING_STATUS / TRACKING_GA4."""
    values: dict[str, str | None] = {}
    for name, command in read_commands():
        values[name] = response_value(exchange(command))
    apply_args(values, args)
    result = run_tracking(env, values, key, config, log=log)
    for command in result.commands():
        if exchange(command) is None:
            break
    return result


async def track_async(
    exchange: Callable[[Command], Awaitable[Response | None]],
    env: Mapping[str, str],
    args: Sequence[str],
    key: PseudonymKey,
    config: TrackingConfig,
    log: Logger | None = None,
    *,
    workers: TrackWorkers | None = None,
) -> TrackingResult:
    """FastAGI: the same, with the store and HTTP work in a worker thread (`workers`' threads,
    which keep their connections, or a fresh thread and connection per step)."""
    values: dict[str, str | None] = {}
    for name, command in read_commands():
        values[name] = response_value(await exchange(command))
    apply_args(values, args)
    if workers is not None:
        result = await workers.run(env, values, key, config, log)
    else:
        result = await asyncio.to_thread(run_tracking, env, values, key, config, log=log)
    for command in result.commands():
        if await exchange(command) is None:
            break
    return result
