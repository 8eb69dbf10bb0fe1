"""Structured logging: one structlog event per step, keyed by the call's unique id; no numbers.

JSON lines when the output is not a terminal, a readable console format when it is. Process AGI must
keep Asterisk's console (its stderr) clean, so there the log goes to ``CONSENT_IVR_LOG`` (a file)
and only errors reach stderr. A last-line-of-defence processor removes any field whose name says it
holds a caller number or name; the code itself logs only pseudonyms.

structlog is imported on the first event that passes the level filter, so a process-AGI call
that logs nothing (the usual case without a log file) does not pay for the import before its
first prompt.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import MutableMapping
    from typing import Any, TextIO

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

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}
_min_level = 0  # until configured, everything passes (tests capture with structlog.testing)
_pending: tuple[TextIO | None, bool | None, str] | None = None


def masked(text: str, limit: int = 32) -> str:
    """Text a peer chose (a script path, a purpose) for a log line: at most `limit` characters,
    every digit as ``#`` and anything unprintable as ``?``, with the length when cut. Enough to
    spot a typo in the dialplan, never a phone number.

    >>> masked("call-trackng+4989123")
    'call-trackng+#######'
    """
    head = "".join("#" if c.isdigit() else c if c.isprintable() else "?" for c in text[:limit])
    return head if len(text) <= limit else f"{head}... ({len(text)} characters)"


def drop_personal_fields(
    _logger: Any, _name: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key in FORBIDDEN_FIELDS & event.keys():
        event[key] = "[redacted]"
    return event


def configure(
    stream: TextIO | None = None, *, json: bool | None = None, level: str = "info"
) -> None:
    """Configure logging for this process; structlog itself is set up on the first event."""
    global _min_level, _pending
    _min_level = _LEVELS[level.lower()]
    _pending = (stream, json, level)


def _apply() -> None:
    global _pending
    if _pending is None:
        return
    import structlog

    stream, json, level = _pending
    _pending = None
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
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level.lower()]),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )


class Logger:
    """A structlog logger made on first use; `bind` returns a new one with more context."""

    __slots__ = ("_context",)

    def __init__(self, context: dict[str, Any]) -> None:
        self._context = context

    @staticmethod
    def enabled(level: str) -> bool:
        """Whether an event of this level would be logged (to skip computing costly fields)."""
        return _LEVELS[level] >= _min_level

    def bind(self, **more: Any) -> Logger:
        return Logger({**self._context, **more})

    def _emit(self, level: str, event: str, fields: dict[str, Any]) -> None:
        if _LEVELS[level] < _min_level:
            return
        _apply()
        import structlog

        getattr(structlog.get_logger("consent_ivr"), level)(event, **self._context, **fields)

    def debug(self, event: str, **fields: Any) -> None:
        self._emit("debug", event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._emit("info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._emit("warning", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._emit("error", event, fields)


def get_logger(**bound: Any) -> Logger:
    return Logger(bound)
