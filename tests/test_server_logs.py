"""A log stream nobody reads never stops the FastAGI server: events go through a bounded queue
that a writer thread drains; on overflow they are dropped and counted (metric, then one
`logs.dropped` event once the queue drains)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

from consent_ivr import logs
from consent_ivr.harness.aclient import place_calls
from consent_ivr.harness.asterisk import WavSoundCatalog
from consent_ivr.paths import PROJECT_ROOT
from consent_ivr.transports.metrics import Metrics
from fastagi_kit import KEY
from test_serve_start import SERVE, free_port

CALLS = 2000


def scrape_dropped(port: int) -> float:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    for line in body.splitlines():
        if line.startswith("consent_ivr_log_events_dropped_total "):
            return float(line.split()[1])
    raise AssertionError("no consent_ivr_log_events_dropped_total in /metrics")


class PipeReader:
    """Reads the server's stderr (once the test starts it) into JSON events."""

    def __init__(self, pipe: object) -> None:
        self.pipe = pipe
        self.events: list[dict[str, object]] = []
        self.bad: list[str] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        for line in self.pipe:  # type: ignore[attr-defined]
            try:
                self.events.append(json.loads(line))
            except ValueError:
                self.bad.append(line)

    def wait_for(self, event: str, timeout: float) -> dict[str, object]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for e in list(self.events):
                if e.get("event") == event:
                    return e
            time.sleep(0.05)
        raise AssertionError(f"no {event} event within {timeout} s: {self.events[-5:]}")


def test_a_server_whose_log_pipe_nobody_reads_still_finishes_2000_calls(tmp_path: Path) -> None:
    metrics_port = free_port()
    env = {
        **os.environ,
        "CONSENT_IVR_HMAC_KEY": KEY.secret.decode(),
        "CONSENT_IVR_LOG_LEVEL": "info",  # one call.finish event per call
        "CONSENT_IVR_LOG_QUEUE": "300",  # so that 2,000 calls overflow it
    }
    store = str(tmp_path / "evidence.sqlite3")
    argv = [*SERVE, "--listen", "127.0.0.1:0", "--store", store, "--head-log", "0"]
    proc = subprocess.Popen(
        [*argv, "--metrics", f"127.0.0.1:{metrics_port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,  # a pipe nobody reads until the calls are done
        text=True,
        env=env,
        cwd=PROJECT_ROOT,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        line = proc.stdout.readline()
        assert line.startswith("listening on "), line
        host, port = line.split()[-1].rsplit(":", 1)
        sounds = WavSoundCatalog()
        calls = [("call-tracking", {"dtmf": "1", "sounds": sounds}) for _ in range(CALLS)]

        async def place() -> list[object]:
            async with asyncio.timeout(180):  # a blocked server would hold every call
                return list(await place_calls(host, int(port), calls, 100, timeout=20.0))

        results = asyncio.run(place())
        failed = [r for r in results if isinstance(r, BaseException)]
        assert not failed, f"{len(failed)} calls failed, e.g. {failed[0]!r}"
        statuses = {r.variables["CONSENT_STATUS"] for r in results}  # type: ignore[attr-defined]
        assert statuses == {"granted"}
        dropped = scrape_dropped(metrics_port)
        assert dropped > 0, "the pipe never filled: the test proves nothing"

        reader = PipeReader(proc.stderr)  # now the pipe drains, and the writer reports
        report = reader.wait_for("logs.dropped", timeout=30)
        assert report["count"] == dropped == scrape_dropped(metrics_port)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        reader.thread.join(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert reader.bad == [], reader.bad[:3]  # every line written whole: no torn JSON
    finished = [e for e in reader.events if e.get("event") == "call.finish"]
    assert 0 < len(finished) < CALLS
    assert len(finished) + dropped >= CALLS
    assert any(e.get("event") == "server.stopped" for e in reader.events)


def test_events_beyond_the_queue_are_dropped_counted_and_reported_once_it_drains() -> None:
    rfd, wfd = os.pipe()
    out = os.fdopen(wfd, "w")
    try:
        logs.configure(out, json=True, level="info", queue_size=20)
        log = logs.get_logger(component="test")
        before = logs.dropped_total()
        blob = "x" * 4000  # ~16 events fill the pipe; the writer then blocks in its write
        t0 = time.monotonic()
        for n in range(500):
            log.info("test.event", n=n, blob=blob)
        assert time.monotonic() - t0 < 5, "emitting waited for the blocked stream"
        dropped = logs.dropped_total() - before
        assert dropped >= 500 - 3 * 20  # the queue, and one batch in the writer's hands
        reader = os.fdopen(rfd, "r")
        events = []
        for line in reader:
            events.append(json.loads(line))
            if events[-1]["event"] == "logs.dropped":
                break
        assert events[-1]["count"] == dropped
        assert [e["n"] for e in events[:-1]] == sorted(e["n"] for e in events[:-1])
        assert len(events) - 1 + dropped == 500
        metrics = Metrics()
        assert metrics.value("consent_ivr_log_events_dropped_total") == before + dropped
    finally:
        logs.shutdown(timeout=1.0)
        out.close()
