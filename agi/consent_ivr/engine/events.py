"""The engine's vocabulary, as data: what a driver reports, what the engine asks, what it decides.

Events (driver -> engine) each carry `at_ms`, the driver's call time when it happened; actions
(engine -> driver) are what the driver performs next; `Decision` and its parts (`PlayLog`,
`KeyLog`, `PurposeOutcome`) are what the evidence store records. Beside the records: the enums
`Outcome`, `Reason` and `Role`, and two pure functions over outcomes (`aggregate_status`,
`withdrawal_word`). No behaviour of a call lives here: that is `consent_ivr.engine.call`.

On the process-AGI start path (`tests/test_agi_start.py`): records, not dataclasses, and no
``typing`` at run time.
"""

from __future__ import annotations

from enum import StrEnum

from consent_ivr.records import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping


class Outcome(StrEnum):
    GRANTED = "granted"
    DECLINED = "declined"
    NONE = "none"
    ERROR = "error"


class Reason(StrEnum):
    KEY = "key"
    TIMEOUT = "timeout"
    INVALID = "invalid"
    HANGUP = "hangup"
    ERROR = "error"
    REUSED = "reused"  # a returning caller's earlier decision, honoured (R18)


class Role(StrEnum):
    """Why a prompt is played; decides its escape digits."""

    NOTICE = "notice"  # mandatory first layer
    FULL = "full_notice"  # layer 2 on request
    QUESTION = "question"  # the consent question: an input prompt
    NOINPUT = "noinput"  # re-prompt after silence: an input prompt
    NOMATCH = "nomatch"  # re-prompt after a wrong key: an input prompt
    CLOSE = "close"  # closing message: no keys
    REMINDER = "reminder"  # a returning caller's reminder, instead of the first layer (R18)


INPUT_ROLES = frozenset({Role.QUESTION, Role.NOINPUT, Role.NOMATCH})


# ---------------------------------------------------------------- events (driver -> engine)
# Every event carries `at_ms`, the driver's call time when it happened.
class Done(Record):
    """A non-audio action (set variables, answer) succeeded."""

    at_ms: int = 0


class PlayEnded(Record):
    """The prompt stopped at `endpos` samples; `digit` is the escape key that stopped it, if any."""

    at_ms: int = 0
    endpos: int = 0
    digit: str | None = None


class PlayFailed(Record):
    """The prompt could not be played (missing file, AGI error) while the channel is up."""

    at_ms: int = 0
    detail: str = ""


class DigitPressed(Record):
    at_ms: int = 0
    digit: str = ""


class WaitTimedOut(Record):
    at_ms: int = 0


class HungUp(Record):
    """The caller hung up; `endpos` is the position of an interrupted prompt, if any."""

    at_ms: int = 0
    endpos: int | None = None


class Failed(Record):
    """An AGI or driver error outside playback (protocol error, I/O error)."""

    at_ms: int = 0
    detail: str = ""


class Recorded(Record):
    at_ms: int = 0
    record_id: str = ""


class RecordFailed(Record):
    at_ms: int = 0
    detail: str = ""


class EarlierDecision(Record):
    """The answer to `Recall`: the caller's latest decision on this flow, found in the store under
    their pseudonym, no older than the flow's ``max_age`` and not withdrawn since. `outcome` is
    the same for every consent purpose of the flow (granted or declined); `record_id` is the
    record whose key decided it, `notice_sha256` the notice that record names and `decided_at`
    its UTC time. Whether it is honoured (the same notice, an outcome the flow remembers) is the
    engine's to judge."""

    at_ms: int = 0
    outcome: str = ""
    record_id: str = ""
    notice_sha256: str = ""
    decided_at: str = ""


class NoEarlierDecision(Record):
    """The answer to `Recall` when there is nothing to honour; `why` says why in one word:
    anonymous, none, expired, withdrawn, mixed, store_error, timeout."""

    at_ms: int = 0
    why: str = ""


Event = (
    Done
    | PlayEnded
    | PlayFailed
    | DigitPressed
    | WaitTimedOut
    | HungUp
    | Failed
    | Recorded
    | RecordFailed
    | EarlierDecision
    | NoEarlierDecision
)


# --------------------------------------------------------------- actions (engine -> driver)
class SetVariables(Record):
    """Set these channel variables (names without the inheritance prefix)."""

    values: tuple[tuple[str, str], ...]


class Answer(Record):
    pass


class Play(Record):
    prompt_id: str
    role: Role
    audio: str
    escape: str
    offset: int
    samples: int
    #: (inode, size, mtime ns) of the audio file the flow hashed, (inode, mtime ns) of its
    #: folder; None: not checked
    audio_file: tuple[int, int, int] | None = None
    audio_dir: tuple[int, int] | None = None
    #: (path, identity) of the prompt's file in each other format of the flow (Asterisk may
    #: play any of them)
    format_files: tuple[tuple[str, tuple[int, int, int]], ...] = ()


class WaitForDigit(Record):
    timeout_ms: int


class Persist(Record):
    decision: Decision


#: How long the engine lets its driver finish the look-up of a returning caller's earlier
#: decision once the first prompt has ended (`Recall.wait_ms`). The look-up starts with the call
#: and has the whole first prompt to run (an index probe: about a millisecond); this bound only
#: meets a slow or stuck store. A quarter second is shorter than the pause between two sentences
#: of a notice, so the caller hears at most that pause; past it the full flow plays (toward
#: asking, never toward granting).
RECALL_WAIT_MS = 250

#: The environment variable that overrides that bound (milliseconds), and its largest value: a
#: bound, not a way to make callers wait (the simulator sets it high: its prompts take no real
#: time). Read by the transports (`recall_wait_ms`), here so that process AGI needs no import.
WAIT_VARIABLE = "CONSENT_IVR_RECALL_WAIT_MS"
MAX_WAIT_MS = 5_000


def recall_wait_ms(environ: Mapping[str, str], default: int = RECALL_WAIT_MS) -> int:
    """The bound on the wait for the look-up: `WAIT_VARIABLE` if it is a whole number of
    milliseconds (capped at `MAX_WAIT_MS`), else `default` (the engine's)."""
    text = (environ.get(WAIT_VARIABLE) or "").strip()
    if not text.isdigit():
        return default
    return min(int(text), MAX_WAIT_MS)


class Recall(Record):
    """Answer with the caller's earlier decision (`EarlierDecision`) or `NoEarlierDecision`,
    waiting at most `wait_ms` for a look-up still running. Asked once, when the first notice
    segment has played out, in a flow with a `returning` block."""

    wait_ms: int = RECALL_WAIT_MS


class Finish(Record):
    status: str


Action = SetVariables | Answer | Play | WaitForDigit | Persist | Recall | Finish


# ------------------------------------------------------------------------- evidence parts
class PlayLog(Record):
    prompt_id: str
    role: str
    audio_sha256: str
    offset: int
    endpos: int
    samples: int
    completed: bool
    stopped_by: str | None
    started_ms: int
    ended_ms: int
    #: format -> SHA-256 of the prompt's file in each format, the WAV's included, when the flow
    #: has more than the WAV (``sounds: formats:``): Asterisk played one of them. None otherwise
    audio_formats: dict[str, str] | None = None


#: What the evidence says a key meant (`KeyLog.meaning`): accept and decline decide; an accept
#: before the notice was heard is an early_accept and does not count; repeat and full_notice
#: replay; any other key is invalid.
#: On a reminder to a returning caller: keep (the earlier decision), withdraw (a grant), change
#: (a decline: on to the full flow).
KEY_MEANINGS = (
    "accept",
    "decline",
    "early_accept",
    "repeat",
    "full_notice",
    "invalid",
    "keep",
    "withdraw",
    "change",
)


class KeyLog(Record):
    key: str
    at_ms: int
    prompt_id: str | None  # the prompt playing when pressed, None while waiting after a prompt
    pos_samples: int | None
    question: str | None  # purpose id of the question in force
    meaning: str  # one of KEY_MEANINGS


class PurposeOutcome(Record):
    purpose: str
    outcome: Outcome
    reason: Reason
    decided_ms: int | None


class Decision(Record):
    """What the engine hands to the evidence store before any variable says `granted`.

    In a withdrawal flow (`kind` "withdrawal") a `granted` outcome means: the caller confirmed
    the withdrawal of that purpose, which the store records as a withdrawal entry.
    """

    kind: str
    flow: str
    version: int
    language: str
    status: str
    reason: str
    outcomes: tuple[PurposeOutcome, ...]
    plays: tuple[PlayLog, ...]
    keys: tuple[KeyLog, ...]
    informed: bool
    hung_up: bool
    errors: tuple[str, ...]
    #: A flow with `returning`: the earlier decision the reminder honoured (None: the full flow)
    #: and what the look-up said ("honoured", or why not: `NoEarlierDecision.why`, or the
    #: engine's reason; "" when it was never asked, e.g. a key during the first prompt).
    earlier: EarlierDecision | None = None
    recall: str = ""


#: In a withdrawal flow the same choice means: accept = withdrawal recorded, decline = cancelled.
WITHDRAWAL_WORDS = {"granted": "recorded", "declined": "cancelled"}


def withdrawal_word(status: str) -> str:
    """A consent-flow status word as a withdrawal flow reports it (none/error/partial unchanged)."""
    return WITHDRAWAL_WORDS.get(status, status)


def aggregate_status(outcomes: Iterable[Outcome]) -> str:
    """CONSENT_STATUS from the per-purpose outcomes: error wins; equal outcomes; else partial."""
    seen = list(outcomes)
    if not seen or Outcome.ERROR in seen:
        return "error" if seen else "none"
    first = seen[0]
    if all(o is first for o in seen):
        return first.value
    return "partial"
