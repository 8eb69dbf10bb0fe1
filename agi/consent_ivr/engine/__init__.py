"""The consent engine: a pure state machine that decides a call's consent, sans I/O.

Two modules: `events` is the data the engine speaks (events in, actions out, the evidence parts of
a `Decision`, `Outcome`/`Reason`/`Role`); `call` is the machine (`Call`, its `Phase`s and the
`TRANSITIONS` table, with the theory of operation and every rule that decides an outcome).
This package re-exports both, so ``from consent_ivr.engine import X`` is the import to use.
"""

from __future__ import annotations

from consent_ivr.engine.call import TRANSITIONS, Call, Phase
from consent_ivr.engine.call import _Item as _Item  # the proof's tests build queue items
from consent_ivr.engine.events import (
    INPUT_ROLES,
    RECALL_WAIT_MS,
    WITHDRAWAL_WORDS,
    Action,
    Answer,
    Decision,
    DigitPressed,
    Done,
    EarlierDecision,
    Event,
    Failed,
    Finish,
    HungUp,
    KeyLog,
    NoEarlierDecision,
    Outcome,
    Persist,
    Play,
    PlayEnded,
    PlayFailed,
    PlayLog,
    PurposeOutcome,
    Reason,
    Recall,
    Recorded,
    RecordFailed,
    Role,
    SetVariables,
    WaitForDigit,
    WaitTimedOut,
    aggregate_status,
    withdrawal_word,
)

__all__ = [
    "INPUT_ROLES",
    "RECALL_WAIT_MS",
    "TRANSITIONS",
    "WITHDRAWAL_WORDS",
    "Action",
    "Answer",
    "Call",
    "Decision",
    "DigitPressed",
    "Done",
    "EarlierDecision",
    "Event",
    "Failed",
    "Finish",
    "HungUp",
    "KeyLog",
    "NoEarlierDecision",
    "Outcome",
    "Persist",
    "Phase",
    "Play",
    "PlayEnded",
    "PlayFailed",
    "PlayLog",
    "PurposeOutcome",
    "Reason",
    "Recall",
    "RecordFailed",
    "Recorded",
    "Role",
    "SetVariables",
    "WaitForDigit",
    "WaitTimedOut",
    "aggregate_status",
    "withdrawal_word",
]
