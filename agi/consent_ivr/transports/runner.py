"""Run one consent call over an AGI transport: set-up from the AGI environment, the pump, evidence.

Transport-neutral: the caller supplies `exchange(command) -> Response | None` (None = EOF) and a
`hangup_seen()` probe. Process AGI plugs in pyst2 (`transports/process_agi.py`), the FastAGI
server drives `CallRunner` from its stream (`transports/fastagi/call.py`), tests plug in their
own. Every failure on the way — no key, a flow that does not load, a store
that cannot write — ends in ``CONSENT_STATUS=error`` and never in ``granted``.
"""

from __future__ import annotations

import os
import time

from consent_ivr.engine import Call, NoEarlierDecision
from consent_ivr.evidence.facts import CallFacts, call_facts
from consent_ivr.evidence.pseudonym import utc_now
from consent_ivr.flow.audiofiles import play_problem
from consent_ivr.logs import get_logger
from consent_ivr.protocol.codec import AgiProtocolError, CommandEncodingError
from consent_ivr.protocol.session import CallSession, Finished, RecallEarlier, WriteEvidence
from consent_ivr.records import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, Protocol

    from consent_ivr.engine import EarlierDecision, Play
    from consent_ivr.evidence.pseudonym import PseudonymKey
    from consent_ivr.flow.audiowatch import FlowWatch
    from consent_ivr.flow.model import Flow
    from consent_ivr.protocol.codec import Response
    from consent_ivr.protocol.session import Command, Op

    class EvidenceStore(Protocol):
        def new_record_id(self) -> str: ...

        def write(self, record: dict[str, Any]) -> str: ...

    #: The look-up of a returning caller's earlier decision, started with the call: given how
    #: long it may still take (ms), its answer (`transports.recall`).
    Recall = Callable[[int], EarlierDecision | NoEarlierDecision]


class CallResult(Record):
    status: str
    record_id: str
    record: dict[str, Any] | None
    hung_up: bool


def choose_language(flow: Flow, env: dict[str, str], override: str | None) -> str:
    """An explicit override (AGI argument, ?lang=) wins, then the channel language, else default."""
    return (
        flow.match_language(override)
        or flow.match_language(env.get("agi_language"))
        or flow.default_language
    )


class CallRunner:
    """The transport-neutral part of running a call: session, clock, evidence, logging.

    A driver loop asks `start()` for the first operation and, for each `Command`, reports the
    response with `answered(...)` (or the exception with `failed(...)`); for each `WriteEvidence`
    it calls `record(...)`, writes the record its own way, then reports with `written(...)`;
    for each `RecallEarlier` it reports the look-up's answer with `recalled(...)`. `audio` (the
    FastAGI server's watch on this flow version) spares the `stat`s after a play in a folder
    it proves unchanged (`audio_changed`).
    """

    def __init__(
        self,
        flow: Flow,
        language: str,
        env: dict[str, str],
        key: PseudonymKey,
        transport: str,
        audio: FlowWatch | None = None,
    ) -> None:
        self.flow = flow
        self._audio = audio
        # only what the facts need (the number is hashed when the record is written)
        needed = ("agi_uniqueid", "agi_type", "agi_callerid")
        self._env: dict[str, str] = {k: env[k] for k in needed if k in env}
        self._key, self._transport = key, transport
        self._started_at = utc_now()
        self._facts: CallFacts | None = None
        self.log = get_logger(
            call=env.get("agi_uniqueid", ""), flow=flow.label, lang=language, transport=transport
        )
        self.session = CallSession(Call(flow, language))
        self.record_data: dict[str, Any] | None = None
        self._t0 = time.monotonic()
        self._write_started = 0.0
        self.evidence_ms: float | None = None

    @property
    def facts(self) -> CallFacts:
        """The call's facts; the caller's pseudonym is computed (HMAC) on first use."""
        if self._facts is None:
            self._facts = call_facts(self._env, self._key, self._transport, self._started_at)
        return self._facts

    def now_ms(self) -> int:
        return int((time.monotonic() - self._t0) * 1000)

    def start(self) -> Op:
        if self.log.enabled("debug"):
            self.log.debug("call.start", pseudonym=(self.facts.caller_pseudonym or "")[:12] or None)
        return self.session.start()

    def answered(
        self, op: Command, resp: Response | None, hangup_seen: bool, arrived: float | None = None
    ) -> Op:
        try:
            # until the decision is recorded (the closing prompt is not in the record)
            recorded = bool(self.session.call.record_id)
            if op.words[0] == "STREAM" and resp is not None and resp.ok and not recorded:
                changed = audio_changed(self.session.current_play(), self._audio, arrived)
                if changed is not None:  # the evidence could not say what was heard (R13)
                    self.log.error("call.audio_changed", error=changed)
                    return self.session.on_error(changed, at_ms=self.now_ms())
            key_before = self.session.call.last_key
            step = self.session.on_response(resp, hangup_seen=hangup_seen, at_ms=self.now_ms())
            key = self.session.call.last_key
            if key is not key_before and key is not None and self.log.enabled("debug"):
                # what the engine made of the key, as the record will say (simulate's live view)
                self.log.debug(
                    "call.key",
                    key=key.key,
                    meaning=key.meaning,
                    prompt_id=key.prompt_id,
                    pos_samples=key.pos_samples,
                )
            return step
        except Exception as exc:  # a bug: end as error *with* a record; if the session itself
            # is broken, this raises again and the transport sets the error outcome without one
            detail = f"internal error: {type(exc).__name__}: {exc}"
            self.log.error("call.internal_error", error=detail)
            return self.session.on_error(detail, at_ms=self.now_ms())

    def failed(self, op: Command, exc: BaseException) -> Op:
        self.log.error("agi.error", command=op.name, error=f"{type(exc).__name__}: {exc}")
        return self.session.on_error(f"{op.name}: {exc}", at_ms=self.now_ms())

    def record(self, op: WriteEvidence, record_id: str) -> dict[str, Any]:
        from consent_ivr.evidence.record import build_record  # not needed before the first prompt

        self._write_started = time.perf_counter()
        self.record_data = build_record(op.decision, self.flow, self.facts, record_id)
        return self.record_data

    def recalled(self, found: EarlierDecision | NoEarlierDecision) -> Op:
        """The look-up's answer to `RecallEarlier` (R18), logged without the caller (a store
        that failed was logged where it failed). What the engine made of it goes on the call's
        ``call.finish`` line (`_returning`)."""
        if isinstance(found, NoEarlierDecision):
            self.log.debug("returning.recalled", found=None, why=found.why)
        else:
            self.log.debug("returning.recalled", found=found.outcome, record_id=found.record_id)
        return self.session.on_recall(found._replace(at_ms=self.now_ms()))

    def written(self, record_id: str | None, error: str | None) -> Op:
        if error is not None or not record_id:
            self.log.error("evidence.write_failed", error=error or "no record id")
            return self.session.on_evidence(
                None, error=error or "no record id", at_ms=self.now_ms()
            )
        self.evidence_ms = round((time.perf_counter() - self._write_started) * 1000, 3)
        self.log.debug(
            "evidence.written",
            record_id=record_id,
            status=self.record_data["status"] if self.record_data else None,
            ms=self.evidence_ms,
        )
        return self.session.on_evidence(record_id, error=None, at_ms=self.now_ms())

    def _returning(self) -> dict[str, str]:
        """For `call.finish`: what the engine made of the look-up — ``honoured <outcome>
        <record id>``, or why nothing was honoured (its own judgement, not only the store's
        answer: another notice, say) — or nothing where no look-up was asked."""
        call = self.session.call
        looked_up, earlier = call.looked_up, call.honoured
        if looked_up == "honoured" and earlier is not None:
            return {"returning": f"honoured {earlier.outcome} {earlier.record_id}"}
        return {"returning": looked_up} if looked_up else {}

    def finish(self, op: Finished) -> CallResult:
        self.log.info(
            "call.finish",
            status=op.status,
            record_id=self.session.call.record_id,
            hung_up=self.session.hung_up,
            evidence_ms=self.evidence_ms,
            ms=self.now_ms(),
            **self._returning(),
        )
        return CallResult(
            op.status, self.session.call.record_id, self.record_data, self.session.hung_up
        )


def audio_changed(
    play: Play | None, watch: FlowWatch | None = None, arrived: float | None = None
) -> str | None:
    """Why the file just played may not be the one the flow hashed at load time, or None.

    A sound rebuild (or a copy) while a call is in flight would otherwise put a hash in the
    evidence that names other audio than Asterisk played. Compared once the play has ended: the
    same inode, size and mtime then means it was this file throughout (replacing it gives a new
    inode, rewriting it a new mtime), and an unchanged folder means no other file of the
    prompt's name was there to be picked (`flow.audiofiles`). The same holds for the prompt's
    file in each other format of the flow, any of which Asterisk may have picked. Two `stat`s
    per prompt, and one per other format — or, when `watch` (the FastAGI server's, see
    `flow.audiowatch`) proves that nothing in the play's folder or on its path changed since
    the flow version was verified, one `epoll_wait` and none. Process AGI passes no watch (one
    short call per process: setting up inotify would cost more than the stats it saves).
    `arrived` (when the response was read off the socket) lets one poll serve every response
    read before it began (`AudioWatch.unchanged`).
    """
    if play is None:
        return None
    if watch is not None and watch.clean(os.path.dirname(play.audio), arrived):
        return None
    return play_problem(play.audio, play.audio_file, play.audio_dir, play.format_files)


#: What a failed exchange may raise; anything else is a bug and propagates.
EXCHANGE_ERRORS = (AgiProtocolError, CommandEncodingError, OSError)


def run_call(
    *,
    flow: Flow,
    language: str,
    env: dict[str, str],
    key: PseudonymKey,
    store: EvidenceStore,
    exchange: Callable[[Command], Response | None],
    hangup_seen: Callable[[], bool],
    transport: str = "agi",
    recall: Recall | None = None,
) -> CallResult:
    """Pump one call to its end; `exchange` sends a command, returns its response (None = EOF);
    `recall` answers a returning caller's look-up (none: nothing is honoured)."""
    runner = CallRunner(flow, language, env, key, transport)
    op = runner.start()
    while not isinstance(op, Finished):
        if isinstance(op, RecallEarlier):
            op = runner.recalled(
                recall(op.wait_ms) if recall else NoEarlierDecision(why="not_looked_up")
            )
            continue
        if isinstance(op, WriteEvidence):
            try:  # opening a lazy store happens here too: its failure is a failed write
                record_id = store.new_record_id()
                store.write(runner.record(op, record_id))
            except Exception as exc:  # a store must never turn a failure into consent
                op = runner.written(None, f"{type(exc).__name__}: {exc}")
            else:
                op = runner.written(record_id, None)
            continue
        try:
            resp = exchange(op)
        except EXCHANGE_ERRORS as exc:
            op = runner.failed(op, exc)
            continue
        op = runner.answered(op, resp, hangup_seen())
    return runner.finish(op)
