"""The transcript of a simulated call: what happened on the channel, entry by entry.

Each entry carries its virtual time and describes itself in one line (the CLI prints them); the
core appends them in time order as commands run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

from consent_ivr.harness.wire import Output


@dataclass(frozen=True)
class TranscriptEntry:
    """Base of the transcript entries; ``at`` is the virtual time in seconds."""

    kind: ClassVar[str] = "entry"
    at: float

    def describe(self) -> str:
        """One human-readable line (used by the CLI)."""
        return f"{self.at:9.3f}  {self.kind}"


@dataclass(frozen=True)
class AnswerEntry(TranscriptEntry):
    """The channel was answered."""

    kind: ClassVar[str] = "answer"


@dataclass(frozen=True)
class PlayEntry(TranscriptEntry):
    """A playback (STREAM FILE, a prompt of GET DATA / GET OPTION, SAY, EXEC Playback...)."""

    kind: ClassVar[str] = "play"
    file: str = ""
    from_sample: int = 0
    endpos: int = 0
    total_samples: int | None = None
    completed: bool = False
    interrupted_by: str | None = None
    hung_up: bool = False
    command: str = ""

    def describe(self) -> str:
        if self.total_samples is None:
            state = "MISSING FILE"
        elif self.completed:
            state = "played to the end"
        elif self.interrupted_by is not None:
            state = f"interrupted by {self.interrupted_by!r}"
        elif self.hung_up:
            state = "cut by hang-up"
        else:
            state = "stopped"
        return (
            f"{self.at:9.3f}  play     {self.file} [{self.command}] samples "
            f"{self.from_sample}->{self.endpos}/{self.total_samples}: {state}"
        )


@dataclass(frozen=True)
class KeyEntry(TranscriptEntry):
    """A caller key press and what became of it."""

    kind: ClassVar[str] = "key"
    digit: str = ""
    fate: Literal["taken", "ignored", "dropped"] = "dropped"
    by: str | None = None

    def describe(self) -> str:
        by = f" by {self.by}" if self.by else ""
        return f"{self.at:9.3f}  key      {self.digit!r} {self.fate}{by}"


@dataclass(frozen=True)
class WaitEntry(TranscriptEntry):
    """A digit wait (WAIT FOR DIGIT, or the waits of GET DATA / GET OPTION)."""

    kind: ClassVar[str] = "wait"
    timeout_ms: int = 0
    outcome: Literal["key", "timeout", "hangup"] = "timeout"
    key: str | None = None
    command: str = ""

    def describe(self) -> str:
        result = f"key {self.key!r}" if self.outcome == "key" else self.outcome
        return f"{self.at:9.3f}  wait     {self.timeout_ms} ms [{self.command}]: {result}"


@dataclass(frozen=True)
class SetEntry(TranscriptEntry):
    """A channel variable was set (SET VARIABLE or EXEC Set)."""

    kind: ClassVar[str] = "set"
    variable: str = ""
    value: str = ""
    inheritance: int = 0

    def describe(self) -> str:
        prefix = "_" * self.inheritance
        return f"{self.at:9.3f}  set      {prefix}{self.variable}={self.value!r}"


@dataclass(frozen=True)
class HangupEntry(TranscriptEntry):
    """The channel hung up; ``who`` is caller / agi / autohangup."""

    kind: ClassVar[str] = "hangup"
    who: str = "caller"

    def describe(self) -> str:
        return f"{self.at:9.3f}  hangup   by {self.who}"


@dataclass(frozen=True)
class CommandEntry(TranscriptEntry):
    """One raw command line and everything written back for it."""

    kind: ClassVar[str] = "command"
    line: bytes = b""
    outputs: tuple[Output, ...] = ()
    done_at: float = 0.0

    def describe(self) -> str:
        outs = " | ".join(
            o.decode("utf-8", "replace").rstrip("\n") if isinstance(o, bytes) else f"<{o.value}>"
            for o in self.outputs
        )
        return f"{self.at:9.3f}  command  {self.line!r} -> {outs}"


def format_transcript(entries: Sequence[TranscriptEntry]) -> str:
    """The transcript as text, one entry a line."""
    return "\n".join(entry.describe() for entry in entries)
