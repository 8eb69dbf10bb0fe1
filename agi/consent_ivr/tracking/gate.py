"""The tracking gate: may a consent-based step (the Google linkage) run for this call? (R15)

Only `granted` opens it, and only if the evidence agrees: the channel variable says `granted`, the
record it names exists and is durable, it grants this very purpose, the caller has not withdrawn
since (for a returning caller's reused grant: the earlier grant it honours still exists and was
not withdrawn since *it* was given, R18), and (when the caller of the gate knows it) the notice
the caller heard is still the current one. Everything else — declined, none, error, missing,
unknown, a store that cannot answer — keeps it shut, with a reason a log line or an auditor can
read. `check_gate` never raises.

For tracking code: ``require_open(check_gate(...))`` raises `GateClosed`, and `guarded` wraps a
step so that it refuses to run when the gate is closed.

For the dialplan: `GateStep` is the AGI gate (``AGI(consent-ivr.agi,gate,<purpose>)`` and
``AGI(agi://host:4573/gate?purpose=<purpose>)``), sans I/O: both transports drive the same step,
each with its own I/O (the commands over its channel, `check_gate` on its store).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, ParamSpec, Protocol, TypeVar

from consent_ivr.protocol.codec import Response
from consent_ivr.protocol.session import INHERIT_PREFIX, Command

P = ParamSpec("P")
R = TypeVar("R")

#: The values a flow sets on a purpose variable (`engine.Outcome`). A reason names only these:
#: any other value came from somewhere else, and is not repeated (it may be anything, even a
#: phone number, and the reason is logged and set on the channel).
CHANNEL_WORDS = frozenset({"granted", "declined", "none", "error"})


class GateStore(Protocol):
    """What the gate needs of an evidence store (`store.ChainStore` has it)."""

    def get(self, record_id: str) -> dict[str, Any] | None: ...

    def is_withdrawn(self, pseudonym: str, purpose: str, *, after: str = "") -> bool: ...


@dataclass(frozen=True)
class GateDecision:
    open: bool
    reason: str  # "granted" when open; otherwise why it is closed
    record_id: str | None

    @property
    def value(self) -> str:
        """The channel-variable value: `open` or `closed`."""
        return "open" if self.open else "closed"


class GateClosed(Exception):
    """A consent-based step was asked to run while its gate is closed."""

    def __init__(self, purpose: str, decision: GateDecision) -> None:
        super().__init__(f"gate for {purpose} is closed: {decision.reason}")
        self.purpose = purpose
        self.decision = decision


def gate_variable(purpose: str) -> str:
    """`CONSENT_GATE_<PURPOSE>`: where the AGI gate puts `open` / `closed`."""
    return "CONSENT_GATE_" + purpose.upper()


def check_gate(
    store: GateStore,
    *,
    purpose: str,
    channel_value: str | None,
    record_id: str | None,
    current_notice_sha256: str | Collection[str] | None = None,
) -> GateDecision:
    """Open only for a durable, current, unwithdrawn grant of `purpose`; never raises.

    `current_notice_sha256`: the notice hash(es) of the flow version now in force (one per
    language); a record made under another notice closes the gate (R18). None skips the check.
    """
    rid = record_id or None
    current = (
        {current_notice_sha256}
        if isinstance(current_notice_sha256, str)
        else None
        if current_notice_sha256 is None
        else set(current_notice_sha256)
    )

    def closed(reason: str) -> GateDecision:
        return GateDecision(False, reason, rid)

    if channel_value != "granted":
        word = channel_value if channel_value in CHANNEL_WORDS else "unexpected"
        return closed(f"variable={word if channel_value else 'unset'}")
    if not rid:
        return closed("no_record")
    try:
        record = store.get(rid)
        if record is None:
            return closed("no_record")
        outcome = next((o for o in record.get("outcomes", []) if o.get("purpose") == purpose), None)
        if outcome is None or outcome.get("outcome") != "granted":
            got = outcome.get("outcome") if outcome else "missing"
            return closed(f"record={got}")
        if current is not None and record.get("flow", {}).get("notice_sha256") not in current:
            return closed("notice_outdated")
        since = str(record.get("created_at", ""))
        if outcome.get("reason") == "reused":  # R18: the grant it honours must still stand
            earlier = (record.get("returning") or {}).get("earlier") or {}
            original = store.get(str(earlier.get("record_id", ""))) if earlier else None
            granted = next(
                (
                    o
                    for o in (original or {}).get("outcomes", [])
                    if o.get("purpose") == purpose and o.get("outcome") == "granted"
                ),
                None,
            )
            if original is None or granted is None:
                return closed("reused_grant_missing")
            since = str(original.get("created_at", ""))
        pseudonym = record.get("call", {}).get("caller_pseudonym")
        if pseudonym and store.is_withdrawn(pseudonym, purpose, after=since):
            return closed("withdrawn")
    except Exception as exc:  # any doubt keeps the gate shut (R15)
        return closed(f"store_error: {type(exc).__name__}: {exc}")
    return GateDecision(True, "granted", rid)


def require_open(decision: GateDecision, purpose: str = "") -> None:
    """Raise `GateClosed` unless the gate is open."""
    if not decision.open:
        raise GateClosed(purpose, decision)


def guarded(
    decide: Callable[[], GateDecision], purpose: str
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a consent-based step: it runs only if `decide()` opens the gate at call time,
    e.g. ``@guarded(lambda: check_gate(store, purpose="ga_linkage", ...), "ga_linkage")``."""

    def wrap(step: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(step)
        def run(*args: P.args, **kwargs: P.kwargs) -> R:
            require_open(decide(), purpose)
            return step(*args, **kwargs)

        return run

    return wrap


def read_commands(purpose: str) -> list[tuple[str, str]]:
    """What the AGI gate reads from the channel: (key, variable) pairs, for GET VARIABLE."""
    return [
        ("value", "CONSENT_" + purpose.upper()),
        ("record_id", "CONSENT_RECORD_ID"),
        ("flow", "CONSENT_FLOW"),
    ]


def result_variables(purpose: str, decision: GateDecision) -> list[tuple[str, str]]:
    """What the AGI gate sets: `CONSENT_GATE_<P>=open|closed` and `..._REASON`."""
    name = gate_variable(purpose)
    return [(name + "_REASON", decision.reason), (name, decision.value)]


def valid_purpose(purpose: str | None) -> bool:
    return bool(purpose) and all(c.isalnum() or c == "_" for c in purpose or "")


@dataclass(frozen=True)
class CheckGate:
    """The gate step's question to its transport: check these channel values against the store.

    The transport answers with ``decide(store, <notice hashes of flow_id's version in force>)``
    (in whatever thread its store wants) and feeds the decision to `GateStep.on_decision`.
    """

    purpose: str
    channel_value: str | None
    record_id: str | None
    #: The flow the channel names (``CONSENT_FLOW`` without its ``@version``; "" when unset). A
    #: flow the transport does not serve has no current notice: a grant is then outdated.
    flow_id: str

    def decide(self, store: GateStore, current_notice_sha256: Collection[str]) -> GateDecision:
        return check_gate(
            store,
            purpose=self.purpose,
            channel_value=self.channel_value,
            record_id=self.record_id,
            current_notice_sha256=current_notice_sha256,
        )


@dataclass(frozen=True)
class GateChecked:
    """The gate step is over: `decision` is set on the channel, as far as the channel answered."""

    decision: GateDecision


GateOp = Command | CheckGate | GateChecked


class GateStep:
    """One AGI gate check, sans I/O (like `protocol.session.CallSession`), for both transports.

    It reads the channel's variables (`read_commands`: ``GET VARIABLE``), asks its transport to
    check them against the store (`CheckGate`), sets the result (`result_variables`: ``SET
    VARIABLE``, inherited like the consent call's) and ends with `GateChecked`. A read the
    channel does not answer with a value counts as unset; once the channel is gone (a response
    of None) no further variable is set. Drive it::

        op = step.start()
        while not isinstance(op, GateChecked):
            if isinstance(op, CheckGate):
                op = step.on_decision(op.decide(store, notices_of(op.flow_id)))
            else:
                op = step.on_response(exchange(op))
    """

    def __init__(self, purpose: str) -> None:
        if not valid_purpose(purpose):
            raise ValueError("a purpose is letters, digits and '_'")
        self.purpose = purpose
        self._reads = read_commands(purpose)
        self._values: dict[str, str | None] = {}
        self._sets: list[tuple[str, str]] = []
        self.decision: GateDecision | None = None

    def start(self) -> GateOp:
        """The first operation: read the purpose's variable."""
        return self._read_next()

    def on_response(self, resp: Response | None) -> GateOp:
        """The response to the last `Command` (None: the channel is gone)."""
        if self.decision is None:
            if len(self._values) == len(self._reads):
                raise RuntimeError("the gate step waits for its decision (on_decision)")
            key = self._reads[len(self._values)][0]
            ok = resp is not None and resp.ok and resp.result == "1"
            self._values[key] = resp.data if ok and resp is not None else None
            if len(self._values) < len(self._reads):
                return self._read_next()
            return CheckGate(
                self.purpose,
                self._values["value"],
                self._values["record_id"],
                (self._values["flow"] or "").split("@", 1)[0],
            )
        if resp is None:  # the channel is gone: nothing more to set
            self._sets = []
        return self._set_next()

    def on_decision(self, decision: GateDecision) -> GateOp:
        """The transport's answer to `CheckGate`."""
        if self.decision is not None or len(self._values) < len(self._reads):
            raise RuntimeError("the gate step did not ask for a decision")
        self.decision = decision
        self._sets = result_variables(self.purpose, decision)
        return self._set_next()

    def _read_next(self) -> Command:
        return Command(("GET", "VARIABLE"), (self._reads[len(self._values)][1],))

    def _set_next(self) -> GateOp:
        assert self.decision is not None
        if not self._sets:
            return GateChecked(self.decision)
        name, value = self._sets.pop(0)
        return Command(("SET", "VARIABLE"), (INHERIT_PREFIX + name, value))
