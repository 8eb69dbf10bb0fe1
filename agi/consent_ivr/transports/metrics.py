"""Prometheus metrics of the FastAGI server, in a registry of its own (one per server)."""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from consent_ivr import logs


class FastHistogram(Collector):
    """A histogram for the event loop's hot path: a bisect and two additions, no lock.

    Only the event-loop thread observes, so plain integers suffice; the scrape (another thread)
    reads a consistent-enough snapshot, as Prometheus expects of counters.
    """

    def __init__(self, name: str, doc: str, buckets: Sequence[float], registry: Any) -> None:
        self.name = name
        self.doc = doc
        self.bounds = tuple(buckets)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0
        registry.register(self)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def collect(self) -> Iterator[HistogramMetricFamily]:
        cumulative, acc = [], 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            acc += n
            cumulative.append((str(bound) if bound != float("inf") else "+Inf", acc))
        family = HistogramMetricFamily(self.name, self.doc)
        family.add_metric([], cumulative, self.sum)
        yield family


class LogDrops(Collector):
    """Log events dropped because the log stream did not take them (see `logs.QueuedLines`)."""

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(
            "consent_ivr_log_events_dropped",
            "Log events dropped because the log stream did not keep up (nobody reading it)",
            value=logs.dropped_total(),
        )


class Metrics:
    """Calls in flight, decisions by outcome and reason, turnaround, refusals, evidence latency,
    dropped log events."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.in_flight = Gauge(
            "consent_ivr_calls_in_flight", "Calls being handled now", registry=self.registry
        )
        self.decisions = Counter(
            "consent_ivr_decisions",
            "Finished calls by CONSENT_STATUS and CONSENT_REASON",
            ["status", "reason"],
            registry=self.registry,
        )
        self.refusals = Counter(
            "consent_ivr_refusals",
            "Connections refused (not_allowed, capacity, draining, silent, unknown_flow, ...)",
            ["reason"],
            registry=self.registry,
        )
        self.gate_checks = Counter(
            "consent_ivr_gate_checks",
            "Gate checks (agi://…/gate) by purpose and result (open / closed)",
            ["purpose", "gate"],
            registry=self.registry,
        )
        self.turnaround = FastHistogram(
            "consent_ivr_turnaround_seconds",
            "From Asterisk's response to our next command",
            (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 1.0),
            self.registry,
        )
        self.evidence_latency = FastHistogram(
            "consent_ivr_evidence_write_seconds",
            "From handing a record to the writer to its durable commit",
            (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            self.registry,
        )
        self.registry.register(LogDrops())
        self._http: Any = None

    def refused(self, reason: str) -> None:
        self.refusals.labels(reason=reason).inc()

    def decided(self, status: str, reason: str) -> None:
        self.decisions.labels(status=status, reason=reason).inc()

    def serve(self, host: str, port: int) -> None:
        self._http = start_http_server(port, addr=host, registry=self.registry)

    @property
    def port(self) -> int | None:
        """The port the endpoint listens on (port 0 lets the kernel choose), None if off."""
        if isinstance(self._http, tuple):
            return int(self._http[0].server_port)
        return None

    def stop(self) -> None:
        if isinstance(self._http, tuple):
            server, thread = self._http
            server.shutdown()
            thread.join(timeout=2)
        self._http = None

    def value(self, name: str, **labels: str) -> float:
        """A sample's current value (for tests and logs); 0 if it was never set."""
        v = self.registry.get_sample_value(name, labels or None)
        return float(v) if v is not None else 0.0
