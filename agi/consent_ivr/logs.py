"""Structured logging: one structlog event per step, keyed by the call's unique id; no numbers.

JSON lines when the output is not a terminal, a readable console format when it is. Process AGI must
keep Asterisk's console (its stderr) clean, so there the log goes to ``CONSENT_IVR_LOG`` (a file)
and only errors reach stderr. A last-line-of-defence processor removes any field whose name says it
holds a caller number or name; the code itself logs only pseudonyms.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

#: Field names that may hold personal data in clear; they never reach a log line.
FORBIDDEN_FIELDS = frozenset(
    {
        "agi_callerid",
        "agi_calleridname",
        "callerid",
        "caller",
        "caller_number",
        "calleridname",
        "env",
    }
)


def drop_personal_fields(
    _logger: Any, _name: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key in FORBIDDEN_FIELDS & event.keys():
        event[key] = "[redacted]"
    return event


def configure(
    stream: TextIO | None = None, *, json: bool | None = None, level: str = "info"
) -> None:
    """Configure structlog once for this process."""
    out = stream if stream is not None else sys.stderr
    use_json = not out.isatty() if json is None else json
    renderer: Any = (
        structlog.processors.JSONRenderer(sort_keys=True)
        if use_json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            drop_personal_fields,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )


def get_logger(**bound: Any) -> Any:
    return structlog.get_logger("consent_ivr").bind(**bound)
