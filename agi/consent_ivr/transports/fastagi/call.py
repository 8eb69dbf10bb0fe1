"""The FastAGI server's consent call: a `CallRunner` over its stream, evidence via the writer.

`CallPump.run` starts the call on the flow the script named (``?lang=`` or the first ``agi_arg_N``
naming a served language overrides the channel language) and pumps its operations: each command
over the stream within its answer deadline (`Command.answer_within`, watched by the server), each
evidence record through the `GroupCommitWriter` (durable before ``granted``). A call past
``call_timeout``, with a late answer, or stopped by the server ends as ``error`` with its record:
finishing up gets `FINISH_GRACE_S`, and an evidence write is never abandoned half-way
(`CallPump.committed`). A bug sets the engine-less error outcome (`set_error`) instead.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from consent_ivr.engine import EarlierDecision, NoEarlierDecision
from consent_ivr.evidence.errors import EvidenceWriteError
from consent_ivr.evidence.groupcommit import GroupCommitWriter
from consent_ivr.evidence.pseudonym import PseudonymKey
from consent_ivr.flow.audiowatch import FlowWatch
from consent_ivr.flow.model import Flow
from consent_ivr.protocol.codec import AgiEnvironment
from consent_ivr.protocol.session import (
    FINISH_GRACE_S,
    INHERIT_PREFIX,
    Command,
    Finished,
    Op,
    RecallEarlier,
    WriteEvidence,
    error_variables,
)
from consent_ivr.transports.fastagi.stream import AgiStream
from consent_ivr.transports.metrics import Metrics
from consent_ivr.transports.runner import EXCHANGE_ERRORS, CallResult, CallRunner, choose_language

#: A returning caller's look-up (R18): (flow, AGI environment) -> the earlier decision to
#: honour, or why there is none. It never raises (`evidence.returning.look_up`).
Recaller = Callable[[Flow, dict[str, str]], Awaitable[EarlierDecision | NoEarlierDecision]]

#: After a stop, how long a call waits for its pending evidence write before giving up on it
#: (reported as an error on the channel, never as written; the record stays queued and the
#: writer commits it before the server exits, so the decision is not lost).
STOP_WRITE_WAIT = 30.0


@dataclass
class Progress:
    """The operation a call is performing, for when a deadline or a stop interrupts it."""

    op: Op
    #: The call's deadline (loop time): --call-timeout, or the grace to finish after a stop.
    deadline: float
    #: While an answer is awaited: its deadline (loop time), for the server's answer watch.
    answer_due: float | None = None
    #: Set by the answer watch when it cancels the call for a late answer.
    late: bool = False
    #: Finishing up after an interruption: bounded by `deadline` alone.
    finishing: bool = False
    #: A returning caller's look-up, started with the call (None: the flow has no `returning`).
    recall: asyncio.Future[EarlierDecision | NoEarlierDecision] | None = None


@dataclass
class CallSlot:
    """A connection in flight, as the server's admission, drain and answer watch see it."""

    task: asyncio.Task[None]
    flow: str = ""  # the flow's label, once a consent call started (empty for a route)
    started: float = field(default_factory=time.monotonic)
    progress: Progress | None = None


class CallPump:
    """Runs the server's consent calls: each over its stream, its evidence through `evidence`."""

    def __init__(
        self,
        evidence: GroupCommitWriter,
        key: PseudonymKey,
        metrics: Metrics,
        log: Any,
        call_timeout: float,
        recaller: Recaller | None = None,
        recall_wait_ms: int | None = None,
    ) -> None:
        self.evidence = evidence
        self.key = key
        self.metrics = metrics
        self.log = log
        self.call_timeout = call_timeout
        self.recaller = recaller
        #: overrides the engine's bound on the look-up's wait (`evidence.returning.WAIT_VARIABLE`)
        self.recall_wait_ms = recall_wait_ms

    async def run(
        self,
        stream: AgiStream,
        env: dict[str, str],
        flow: Flow,
        query: str,
        slot: CallSlot | None,
        audio: FlowWatch | None = None,
    ) -> None:
        """One consent call on `flow`, from the environment to its decision; `audio` is the
        server's watch on this version's prompt folders (None: each play is stat'ed)."""
        langs = parse_qs(query).get("lang", [])
        override = next(
            (a for a in [*langs, *AgiEnvironment(env).args] if flow.match_language(a)), None
        )
        language = choose_language(flow, env, override)
        runner = CallRunner(flow, language, env, self.key, "fastagi", audio)
        if slot is not None:
            slot.flow = flow.label
        stream.last_response = time.perf_counter()  # turnaround counts from the environment
        recall = None
        if flow.returning is not None and self.recaller is not None:
            # the look-up runs (in the store's read thread) while the first prompt plays
            recall = asyncio.ensure_future(self.recaller(flow, env))
        try:
            result = await self.pump(runner, stream, runner.start(), slot, recall)
        except Exception as exc:  # a bug: the dialplan must continue, and never with consent
            self.log.error("call.internal_error", error=f"{type(exc).__name__}: {exc}")
            self.metrics.decided("error", "error")
            await set_error(stream, flow)
            return
        finally:
            if recall is not None and not recall.done():  # never asked: a key came first
                recall.cancel()
        self.metrics.decided(result.status, (result.record or {}).get("reason", "error"))

    async def pump(
        self,
        runner: CallRunner,
        stream: AgiStream,
        op: Op,
        slot: CallSlot | None,
        recall: asyncio.Future[EarlierDecision | NoEarlierDecision] | None = None,
    ) -> CallResult:
        """Perform `op` and every operation after it until the call is finished; `slot`'s
        progress shows the server's answer watch the answer awaited; `recall` is the returning
        caller's look-up started with the call."""
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        progress = Progress(op, loop.time() + self.call_timeout, recall=recall)
        if slot is not None:  # the answer watch sees this call's awaited answer
            slot.progress = progress
        while not isinstance(op, Finished):
            try:
                async with asyncio.timeout_at(progress.deadline):  # one scope for many commands
                    op = await self._steps(runner, stream, progress)
            except (TimeoutError, asyncio.CancelledError) as exc:  # before OSError: a subclass
                op = progress.op
                if isinstance(op, RecallEarlier):  # interrupted while waiting for the look-up
                    op = progress.op = runner.recalled(NoEarlierDecision(why="timeout"))
                assert isinstance(op, Command)  # evidence writes are shielded and never time out
                late, progress.late, progress.answer_due = progress.late, False, None
                if progress.finishing:  # already finishing up: give up on the channel
                    op = progress.op = runner.failed(op, exc)
                    continue
                progress.finishing = True
                if isinstance(exc, asyncio.CancelledError) and task is not None:
                    task.uncancel()
                if late and isinstance(exc, asyncio.CancelledError):
                    why: Exception = op.late()  # the peer loses the call, not just a command
                elif isinstance(exc, TimeoutError):
                    why = RuntimeError("call deadline exceeded")
                else:
                    why = RuntimeError("server stop")
                # A command may be in flight: Asterisk answers the next command (not this one)
                # when interrupted, so finishing up is best effort on the channel — the evidence
                # is written either way.
                op = runner.failed(op, why)
                progress.op = op
                progress.deadline = loop.time() + FINISH_GRACE_S
        return runner.finish(op)

    async def _steps(self, runner: CallRunner, stream: AgiStream, progress: Progress) -> Finished:
        """Run operations until the call is finished; `progress.op` is the one in progress,
        `progress.answer_due` the deadline of the answer awaited (`Command.answer_within`)."""
        observe = self.metrics.turnaround.observe
        time_now = asyncio.get_running_loop().time
        op = progress.op
        while not isinstance(op, Finished):
            progress.op = op
            if isinstance(op, WriteEvidence):
                op = await self._write(runner, op)
                continue
            if isinstance(op, RecallEarlier):
                op = runner.recalled(await self._recalled(progress.recall, op.wait_ms))
                continue
            observe(time.perf_counter() - stream.last_response)
            if not progress.finishing:
                progress.answer_due = time_now() + op.answer_within
            try:
                resp = await stream.exchange(op)
            except EXCHANGE_ERRORS as exc:
                progress.answer_due = None
                if isinstance(exc, TimeoutError):
                    raise
                op = runner.failed(op, exc)
                continue
            progress.answer_due = None
            op = runner.answered(op, resp, stream.hangup_seen, stream.arrived)
        return op

    async def _recalled(
        self,
        recall: asyncio.Future[EarlierDecision | NoEarlierDecision] | None,
        wait_ms: int,
    ) -> EarlierDecision | NoEarlierDecision:
        """The look-up's answer, waiting at most `wait_ms` more for it (then the full flow)."""
        if recall is None:
            return NoEarlierDecision(why="not_looked_up")
        if self.recall_wait_ms is not None:
            wait_ms = self.recall_wait_ms
        try:
            async with asyncio.timeout(wait_ms / 1000):
                return await asyncio.shield(recall)
        except TimeoutError:
            self.log.error("returning.lookup_timeout", wait_ms=wait_ms)
            return NoEarlierDecision(why="timeout")

    async def _write(self, runner: CallRunner, op: WriteEvidence) -> Op:
        record_id = self.evidence.new_record_id()
        record = runner.record(op, record_id)
        return runner.written(*await self.committed(self.evidence.submit(record), record_id))

    async def committed(
        self, write: asyncio.Future[None], record_id: str
    ) -> tuple[str | None, str | None]:
        """Wait for the write's outcome: (record_id, None) once committed, else (None, error).

        The wait is shielded: a server stop (task cancellation) must not abandon a record
        half-way, so it is held back until the write has settled and then delivered again, to
        the call's next step. Only a write that settled *successfully* counts as written: a
        cancellation that arrives in the same loop turn as a failure must not hide the failure.
        """
        t0 = time.perf_counter()
        loop = asyncio.get_running_loop()
        stop_requested = False
        give_up_at: float | None = None  # once a stop is held back, wait this long at most
        task = asyncio.current_task()
        while not write.done():
            try:
                if give_up_at is None:
                    await asyncio.shield(write)
                elif give_up_at <= loop.time():
                    break
                else:
                    await asyncio.wait({write}, timeout=give_up_at - loop.time())
            except asyncio.CancelledError:
                if write.cancelled():
                    break
                if task is not None:  # hold the stop back until the write has settled
                    task.uncancel()
                    stop_requested = True
                    if give_up_at is None:
                        give_up_at = loop.time() + STOP_WRITE_WAIT
            except EvidenceWriteError:
                break
        if stop_requested and task is not None:
            task.cancel()  # the stop, delivered at the call's next await
        if not write.done():
            return None, "the evidence write did not finish before the call was stopped"
        if write.cancelled():
            return None, "evidence write cancelled"
        error = write.exception()
        if error is not None:
            return None, str(error) or type(error).__name__
        self.metrics.evidence_latency.observe(time.perf_counter() - t0)
        return record_id, None


async def set_error(stream: AgiStream, flow: Flow | None) -> bool:
    """Best effort, without an engine: set the error outcome (every purpose variable too,
    when the flow is known). False if the channel is gone or does not answer in time."""
    for name, value in error_variables(flow):
        command = Command(("SET", "VARIABLE"), (INHERIT_PREFIX + name, value))
        try:
            if await stream.exchange_within(command) is None:
                return False
        except EXCHANGE_ERRORS:
            return False
    return True
