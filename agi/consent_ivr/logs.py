"""Structured logging: one structlog event per step, keyed by the call's unique id; no numbers.

JSON lines when the output is not a terminal, a readable console format when it is. Process AGI must
keep Asterisk's console (its stderr) clean, so there the log goes to ``CONSENT_IVR_LOG`` (a file)
and only errors reach stderr. A last-line-of-defence processor removes any field whose name says it
holds a caller number or name; the code itself logs only pseudonyms.

structlog is imported on the first event that passes the level filter, so a process-AGI call
that logs nothing (the usual case without a log file) does not pay for the import before its
first prompt.

Writing a line never blocks for long, whoever reads the stream (or does not):

* the FastAGI server (``configure(..., queue_size=N)``): the event loop only renders the event
  and puts the line into a bounded queue (`QueuedLines`); a writer thread drains it to the
  stream. A full queue (a stream nobody reads, a stalled journal) drops the event and counts it
  (`dropped_total`, the metric ``consent_ivr_log_events_dropped_total``); once the queue has
  drained, one ``logs.dropped`` event says how many were lost;
* everything else (process AGI: one call per process, a few lines, mostly to a file;
  command-line tools): written in the caller's thread, in order (`DirectLines`), but each piece
  waits at most `WRITE_TIMEOUT` s for the stream to take it, then the line is dropped and
  counted. A thread and a queue would buy nothing there but start-up time, and lines still
  queued when the process exits would be lost.
"""

from __future__ import annotations

import os
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
_pending: tuple[TextIO | None, bool | None, str, int | None] | None = None

#: Lines the server's log queue holds before it drops (a line is ~300 bytes: ~3 MB at most).
QUEUE_SIZE = 10_000
#: How long one write may wait for the stream (a pipe nobody reads) before its line is dropped.
WRITE_TIMEOUT = 1.0
#: How long the server's log writer lets lines gather before it writes them.
GATHER_SECONDS = 0.01
#: Pieces of at most this size: a pipe that select() reports writable takes them without waiting.
_CHUNK = 4096

_dropped = 0  # events dropped in this process (never reset: a Prometheus counter)
_sink: QueuedLines | DirectLines | None = None
#: Bumped whenever structlog is (re)configured from here: the structlog logger kept for
#: `Logger` (`_structlog_logger`) is made again on the next event.
_generation = 0


def dropped_total() -> int:
    """Log events dropped in this process because the stream did not take them in time."""
    return _dropped


def _count_dropped(n: int) -> None:
    global _dropped
    _dropped += n  # callers hold their sink's lock; sinks do not overlap in time


def _descriptor(stream: Any) -> int | None:
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return None
    return fd if isinstance(fd, int) else None


def _write_fd(fd: int, data: bytes, timeout: float | None) -> bool:
    """Write all of `data` to `fd`; False if the descriptor refused it or, with a `timeout`,
    did not become writable in time (what was written stays written)."""
    import select
    import time

    deadline = None if timeout is None else time.monotonic() + timeout
    view = memoryview(data)
    while view:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([], [fd], [], remaining)[1]:
                return False
        try:
            n = os.write(fd, view[:_CHUNK])
        except BlockingIOError:  # a non-blocking descriptor that is full: wait (above)
            if deadline is None:
                select.select([], [fd], [], WRITE_TIMEOUT)
            continue
        except OSError:  # closed, EPIPE, EIO: the lines are lost, the caller goes on
            return False
        view = view[n:]
    return True


def console(line: str) -> None:
    """One line for Asterisk's console (process AGI's stderr), waiting at most `WRITE_TIMEOUT`
    for it: an Asterisk whose stderr nobody reads must not hold the call (the line is dropped)."""
    DirectLines(sys.stderr).msg(line)


class DirectLines:
    """A structlog logger that writes each line in the caller's thread, waiting at most
    `WRITE_TIMEOUT` for the stream (see the module docstring)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream  # kept: the descriptor is its
        self._fd = _descriptor(stream)

    def msg(self, message: str) -> None:
        if self._fd is None:  # an in-memory stream: it cannot block
            self._stream.write(message + "\n")
            self._stream.flush()
        elif not _write_fd(self._fd, (message + "\n").encode("utf-8", "replace"), WRITE_TIMEOUT):
            _count_dropped(1)  # one thread per process writes here (process AGI, a tool)

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


class QueuedLines:
    """A structlog logger for the event loop: `msg` puts the line into a bounded queue and
    returns; a daemon thread writes the queue to the stream. A full queue drops the line."""

    def __init__(self, stream: TextIO, size: int) -> None:
        import queue
        import threading

        self._stream = stream
        self._fd = _descriptor(stream)
        self._size = size
        self._queue: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._lock = threading.Lock()  # for the drop counts only: never taken by a write
        self._unreported = 0  # dropped since the last logs.dropped event
        self._broken = False  # the stream refused a write: no report could reach it either
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
        self._thread.start()

    def msg(self, message: str) -> None:
        if self._stopping or self._queue.qsize() >= self._size:
            self._dropped(1)
            return
        self._queue.put(message)

    def _dropped(self, n: int) -> None:
        with self._lock:
            self._unreported += n
            _count_dropped(n)

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg

    def close(self, timeout: float) -> bool:
        """Write what is queued, then stop; False if the stream did not take it in `timeout`."""
        self._stopping = True
        self._queue.put(None)
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        import queue
        import time

        from consent_ivr.osthreads import name_this_thread

        name_this_thread("log-writer")

        get, get_nowait = self._queue.get, self._queue.get_nowait
        while True:
            first = get()
            if first is None:
                return
            # Let a few lines gather: a put wakes this thread only while it waits in get(), so
            # at most 1/GATHER_SECONDS wake-ups a second take the GIL from the event loop,
            # instead of one per line.
            time.sleep(GATHER_SECONDS)
            lines, stop = [first], False
            while len(lines) < 1000:
                try:
                    line = get_nowait()
                except queue.Empty:
                    break
                if line is None:
                    stop = True
                    break
                lines.append(line)
            lines.append("")
            self._write("\n".join(lines))
            if stop:
                return
            if self._unreported and not self._broken and self._queue.empty():
                self._report()

    def _write(self, text: str) -> None:
        if self._fd is None:
            self._stream.write(text)
            self._stream.flush()
        elif not _write_fd(self._fd, text.encode("utf-8", "replace"), None):
            self._broken = True
            self._dropped(text.count("\n"))
        else:
            self._broken = False

    def _report(self) -> None:
        """One event for the drops since the last report; it goes through the queue too."""
        with self._lock:
            count, self._unreported = self._unreported, 0
        import structlog

        structlog.get_logger("consent_ivr").error("logs.dropped", count=count)


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
    stream: TextIO | None = None,
    *,
    json: bool | None = None,
    level: str = "info",
    queue_size: int | None = None,
) -> None:
    """Configure logging for this process; structlog itself is set up on the first event.
    With `queue_size`, lines go through a queue of that many lines and a writer thread
    (`QueuedLines`, for an event loop); without, they are written at once (`DirectLines`)."""
    global _min_level, _pending, _generation
    _min_level = _LEVELS[level.lower()]
    _pending = (stream, json, level, queue_size)
    _generation += 1


def shutdown(timeout: float = WRITE_TIMEOUT) -> None:
    """Write out the queued lines (waiting at most `timeout` s) and stop the writer thread."""
    global _sink
    sink, _sink = _sink, None
    if isinstance(sink, QueuedLines):
        sink.close(timeout)


def unconfigure() -> None:
    """Back to the state before `configure`: every event passes, nothing is written (what a test
    harness wants between tests: a `serve` in one test must not filter the next one's events)."""
    global _min_level, _pending, _generation
    shutdown()
    _min_level = 0
    _pending = None
    _generation += 1
    import structlog  # only here: a process that never logged never imported it

    structlog.reset_defaults()


def _apply() -> None:
    global _pending, _sink, _generation
    if _pending is None:
        return
    import structlog

    stream, json, level, queue_size = _pending
    _pending = None
    out = stream if stream is not None else sys.stderr
    shutdown()  # a sink of an earlier configuration
    sink = DirectLines(out) if queue_size is None else QueuedLines(out, queue_size)
    _sink = sink
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
        logger_factory=lambda *_args: sink,
        cache_logger_on_first_use=False,
    )
    _generation += 1


def _structlog_logger() -> Any:
    """The structlog logger every `Logger` emits through: made once per configuration (see
    `_generation`). It shares structlog's processor list, which
    `structlog.testing.capture_logs` changes in place, so capturing tests see every event."""
    global _logger, _logger_generation
    if _logger_generation != _generation:
        import structlog

        _logger = structlog.get_logger("consent_ivr").bind()
        _logger_generation = _generation
    return _logger


_logger: Any = None
_logger_generation = -1


class Logger:
    """A logger with a context (the call's id, flow, language); `bind` returns a new one with
    more. Events go through one structlog logger made on first use (`_structlog_logger`)."""

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
        if _pending is not None:
            _apply()
        getattr(_structlog_logger(), level)(event, **self._context, **fields)

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
