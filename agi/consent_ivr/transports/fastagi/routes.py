"""The FastAGI server's routes: the gate, the tracking step, and a script that names no flow.

``agi://host:4573/gate?purpose=<p>`` checks the channel's consent against the evidence store and
sets ``CONSENT_GATE_<P>``; ``agi://host:4573/track`` is a hangup handler's tracking step; a path
that names neither a route (`transports.routes`) nor a served flow sets ``CONSENT_STATUS=error``
and answers ``failure``. The store's blocking work runs in threads: the gate's checks on one read
connection (`reader.ReadConnection`, which the server's head log shares), the tracking steps on
`TrackWorkers`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

from consent_ivr.evidence.pseudonym import PseudonymKey
from consent_ivr.logs import get_logger, masked
from consent_ivr.protocol.codec import AgiEnvironment
from consent_ivr.tracking.gate import CheckGate, GateChecked, GateDecision, GateStep, valid_purpose
from consent_ivr.tracking.step import TrackingConfig, TrackWorkers, track_async
from consent_ivr.transports.fastagi.call import set_error
from consent_ivr.transports.fastagi.flows import FlowRegistry
from consent_ivr.transports.fastagi.reader import ReadConnection
from consent_ivr.transports.fastagi.stream import AgiStream
from consent_ivr.transports.metrics import Metrics
from consent_ivr.transports.routes import GATE, TRACK
from consent_ivr.transports.runner import EXCHANGE_ERRORS

#: A route's handler: (the connection, its environment, the script path's query string).
Handler = Callable[[AgiStream, dict[str, str], str], Awaitable[None]]


class FastAgiRoutes:
    """The route handlers of one server, with what they need of it."""

    def __init__(
        self,
        *,
        flows: FlowRegistry,
        key: PseudonymKey,
        metrics: Metrics,
        log: Any,
        call_timeout: float,
        store_path: str | os.PathLike[str],
        tracking_config: Callable[[], TrackingConfig],
    ) -> None:
        self.flows = flows
        self.key = key
        self.metrics = metrics
        self.log = log
        self.call_timeout = call_timeout
        self.reader = ReadConnection(store_path)
        self.track_workers = TrackWorkers()
        #: The tracking step's settings (the server's, which its GA4 flush shares).
        self.tracking_config = tracking_config
        #: The handler of each route (`transports.routes.ROUTES`), by name.
        self.handlers: dict[str, Handler] = {GATE: self.gate, TRACK: self.track}

    async def close(self) -> None:
        """After the last call: close the gate's connection and the tracking workers'."""
        await self.reader.close()
        await asyncio.to_thread(self.track_workers.close)

    async def gate(self, stream: AgiStream, env: dict[str, str], query: str) -> None:
        """`agi://…/gate?purpose=ga_linkage`: check channel and store, set CONSENT_GATE_<P>."""
        args = AgiEnvironment(env).args
        purpose = (parse_qs(query).get("purpose") or args[:1] or [""])[0]
        log = self.log.bind(call=env.get("agi_uniqueid", ""), route=GATE)
        if not valid_purpose(purpose):
            log.warning("gate.bad_request", purpose=masked(purpose))
            stream.writer.write(b"failure\n")
            return
        log = log.bind(purpose=purpose)
        step = GateStep(purpose)
        try:
            async with asyncio.timeout(self.call_timeout):
                op = step.start()
                while not isinstance(op, GateChecked):
                    if isinstance(op, CheckGate):
                        op = step.on_decision(await self._gate_decision(op))
                    else:
                        op = step.on_response(await stream.exchange_within(op))
        except (*EXCHANGE_ERRORS, TimeoutError) as exc:
            log.warning("gate.failed", error=f"{type(exc).__name__}: {exc}")
            return
        decision = op.decision
        self.metrics.gate_checks.labels(purpose=purpose, gate=decision.value).inc()
        log.info("gate.checked", gate=decision.value, reason=decision.reason)

    async def _gate_decision(self, check: CheckGate) -> GateDecision:
        """The gate step's check, here: the notices of the served flow the channel names (none
        if it is not served), and the store on the gate's read connection."""
        flow = self.flows.get(check.flow_id)
        current = set(flow.notice_sha256.values()) if flow else set()
        return await self.reader.run(lambda store: check.decide(store, current))

    async def track(self, stream: AgiStream, env: dict[str, str], query: str = "") -> None:
        """AGI(agi://host:4573/track[,name=value...]) from a hangup handler (dead mode)."""
        log = get_logger(call=env.get("agi_uniqueid", ""), transport="fastagi", step="track")
        try:
            config = self.tracking_config()
            async with asyncio.timeout(self.call_timeout):
                await track_async(
                    stream.exchange_within,
                    env,
                    AgiEnvironment(env).args,
                    self.key,
                    config,
                    log,
                    workers=self.track_workers,
                )
        except (*EXCHANGE_ERRORS, TimeoutError, ValueError) as exc:
            log.error("tracking.error", error=f"{type(exc).__name__}: {exc}")

    async def unknown_flow(self, stream: AgiStream, env: dict[str, str], path: str) -> None:
        self.metrics.refused("unknown_flow")
        self.log.warning("call.unknown_flow", call=env.get("agi_uniqueid", ""), script=masked(path))
        if not await set_error(stream, None):
            return
        stream.writer.write(b"failure\n")
        with contextlib.suppress(OSError):
            await stream.writer.drain()
