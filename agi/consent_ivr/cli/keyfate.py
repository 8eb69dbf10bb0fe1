"""What a key the engine received meant, in words: the one home of that wording.

The engine gives every key it receives a meaning (`engine.events.KeyLog`: ``accept``,
``decline``, ``early_accept``, ``repeat``, ``full_notice``, ``invalid``; on a returning caller's
reminder ``keep``, ``withdraw``, ``change``) and the evidence record keeps it. The scripted
transcript (`cli/transcript.py`, from the record) and the live one (`cli/interactive.py`, from the
AGI script's ``call.key`` log lines: `EngineKeys`) show it with `key_fate`, so both say the same
of the same key. A key the simulated Asterisk ignored or dropped never reached the engine and has
no meaning here.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

#: meaning -> what it did to the call
_WORDS = {
    "accept": "accept — consent given",
    "decline": "decline — consent refused",
    "repeat": "repeat — the notice again, then the question",
    "full_notice": "full information — the full notice, then the question",
    "invalid": "not a choice here — counts as a wrong key",
    "keep": "keep — the earlier decision stands",
    "withdraw": "withdraw — the earlier consent is withdrawn, recorded as declined",
    "change": "change — the earlier refusal is reconsidered: the notice goes on, then the question",
}

#: The same meanings in a withdrawal flow (`kind: withdrawal`), whose accept key confirms the
#: withdrawal and whose decline key cancels it.
_WITHDRAWAL_WORDS = {
    **_WORDS,
    "accept": "withdraw — the withdrawal is recorded",
    "decline": "cancel — nothing is withdrawn",
}


def key_fate(key: Mapping[str, Any], *, withdrawal: bool = False) -> str:
    """The fate of one key as the engine recorded it (a record's `keys` item or the ``call.key``
    log line: ``meaning``, ``prompt_id``), e.g. ``early accept — does not count (the notice not
    yet heard); the segment resumes``; in a `withdrawal` flow's words when it is one."""
    meaning = str(key.get("meaning"))
    if meaning == "early_accept":
        then = "the segment resumes" if key.get("prompt_id") else "the rest of the notice follows"
        early = "an early 1" if withdrawal else "early accept"
        return f"{early} — does not count (the notice not yet heard); {then}"
    return (_WITHDRAWAL_WORDS if withdrawal else _WORDS).get(meaning, meaning)


def pair_taken_keys(
    taken: Sequence[str], recorded: Sequence[Mapping[str, Any]], *, withdrawal: bool = False
) -> list[str | None]:
    """Each key the engine took (its digits, in call order) with its fate from the engine's keys
    (`recorded`, in the same order: every key an AGI command returned reaches the engine, which
    logs each one). None from the first key whose digit does not match on (never a guess)."""
    fates: list[str | None] = []
    for n, digit in enumerate(taken):
        if n >= len(recorded) or str(recorded[n].get("key")) != digit:
            break
        fates.append(key_fate(recorded[n], withdrawal=withdrawal))
    return fates + [None] * (len(taken) - len(fates))


class EngineKeys:
    """The ``call.key`` events of an AGI script's log (JSON lines, ``CONSENT_IVR_LOG`` at level
    ``debug``), read as the script writes them: what the engine made of each key, in order."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self._read = 0  # bytes read so far (whole lines only)
        self._events: deque[dict[str, Any]] = deque()

    def next(self) -> dict[str, Any] | None:
        """The next key's event, or None while the script has not logged it (yet)."""
        if not self._events:
            self._poll()
        return self._events.popleft() if self._events else None

    def _poll(self) -> None:
        try:
            with self.log.open("rb") as f:
                f.seek(self._read)
                data = f.read()
        except OSError:  # not written yet
            return
        complete = data[: data.rfind(b"\n") + 1]
        self._read += len(complete)
        for line in complete.splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and event.get("event") == "call.key":
                self._events.append(event)
